// One place renders every error in Letta's shape: `{"detail": ...}`. Field-level problems use
// FastAPI's 422 shape (`detail: [{loc, msg, type}]`), which Letta clients already understand.
import type { FastifyError, FastifyInstance } from "fastify";
import { AssertionError } from "../core/assert.ts";
import { type FieldIssue, isKelpieError } from "../core/errors.ts";

const CONTEXT_LOC: Record<string, string> = {
  body: "body",
  querystring: "query",
  params: "path",
  headers: "header",
};

interface AjvError {
  instancePath: string;
  keyword: string;
  message?: string;
  params: Record<string, unknown>;
}

function issuesFromValidation(errors: AjvError[], context: string): FieldIssue[] {
  return errors.map((e) => {
    const loc: (string | number)[] = [CONTEXT_LOC[context] ?? context];
    for (const part of e.instancePath.split("/").slice(1)) loc.push(/^\d+$/.test(part) ? Number(part) : part);
    if (e.keyword === "required" && typeof e.params.missingProperty === "string") {
      loc.push(e.params.missingProperty);
      return { loc, msg: "Field required", type: "missing" };
    }
    return { loc, msg: e.message ?? "invalid value", type: e.keyword };
  });
}

export function installErrorHandler(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError, request, reply) => {
    if (isKelpieError(err)) {
      if (err.status >= 500) request.log.error({ err }, "request failed");
      if (err.retryAfterS !== undefined) reply.header("retry-after", String(err.retryAfterS));
      return reply
        .status(err.status)
        .send({ detail: err.issues ?? err.message, code: err.code, retryable: err.retryable });
    }
    if (err.validation) {
      const issues = issuesFromValidation(err.validation as AjvError[], err.validationContext ?? "body");
      return reply.status(422).send({ detail: issues, code: "VALIDATION", retryable: false });
    }
    if (err.code === "FST_ERR_CTP_INVALID_JSON" || err instanceof SyntaxError) {
      return reply.status(422).send({
        detail: [{ loc: ["body"], msg: `JSON decode error: ${err.message}`, type: "json_invalid" }],
        code: "VALIDATION",
        retryable: false,
      });
    }
    if (typeof err.statusCode === "number" && err.statusCode >= 400 && err.statusCode < 500) {
      return reply
        .status(err.statusCode)
        .send({ detail: err.message, code: err.code ?? "BAD_REQUEST", retryable: false });
    }
    request.log.error({ err, assertion: err instanceof AssertionError }, "unexpected error");
    return reply.status(500).send({ detail: "Internal server error", code: "INTERNAL", retryable: false });
  });

  app.setNotFoundHandler((request, reply) => {
    reply.status(404).send({ detail: `Not Found: ${request.method} ${request.url}`, code: "NOT_FOUND" });
  });
}
