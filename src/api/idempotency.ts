// The Idempotency-Key request header (as Stripe and the IETF draft use it): a client that retries
// a POST with the same key gets the first attempt's effect once, not twice.
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Clock } from "../core/clock.ts";
import { invalidField, KelpieError } from "../core/errors.ts";
import type { Storage } from "../storage/types.ts";

export const IDEMPOTENCY_KEY_CHARS_MAX = 255;

/** The request's Idempotency-Key, or undefined; a malformed one is a 422 naming the header. */
export function idempotencyKeyOf(req: FastifyRequest): string | undefined {
  const raw = req.headers["idempotency-key"];
  if (raw === undefined) return undefined;
  if (
    typeof raw !== "string" ||
    raw.length === 0 ||
    raw.length > IDEMPOTENCY_KEY_CHARS_MAX ||
    !/^[\x20-\x7e]+$/.test(raw)
  ) {
    throw invalidField(
      ["header", "Idempotency-Key"],
      `must be 1 to ${IDEMPOTENCY_KEY_CHARS_MAX} printable ASCII characters`,
    );
  }
  return raw;
}

/**
 * Message sends key their runs themselves (a retry resumes the turn); every other POST carrying
 * an Idempotency-Key gets the first successful answer back, stored durably once it is sent.
 */
function keysItsOwnRun(route: string): boolean {
  return /\/messages(\/stream|\/async)?$/.test(route);
}

declare module "fastify" {
  interface FastifyRequest {
    /** The scoped Idempotency-Key whose answer this request should store. */
    idempotencyScope?: string;
  }
}

export function installIdempotency(app: FastifyInstance, storage: Storage, clock: Clock): void {
  // One attempt at a time per key on this node: a concurrent duplicate is told to retry.
  const inFlight = new Set<string>();
  /** Replays a stored answer (true), or marks the request to store its own (false). */
  const lookUp = async (req: FastifyRequest, reply: FastifyReply, key: string): Promise<boolean> => {
    const scope = `${req.method} ${req.url} ${key}`;
    const stored = await storage.getIdempotent(scope);
    if (stored !== null) {
      reply
        .code(stored.status_code)
        .header("content-type", "application/json; charset=utf-8")
        .header("idempotent-replayed", "true")
        .send(stored.body);
      return true;
    }
    if (inFlight.has(scope)) {
      throw new KelpieError(
        "CONFLICT",
        `a request with Idempotency-Key '${key}' is in progress; retry shortly`,
      );
    }
    inFlight.add(scope);
    // Closed however it ends: answered, failed, or abandoned by the client.
    reply.raw.once("close", () => inFlight.delete(scope));
    req.idempotencyScope = scope;
    return false;
  };
  // Callback-style hooks: a request without a key (nearly all) passes without a promise.
  app.addHook("preHandler", (req, reply, done) => {
    if (req.method !== "POST" || req.headers["idempotency-key"] === undefined) return done();
    if (keysItsOwnRun(req.routeOptions.url ?? "")) return done();
    let key: string | undefined;
    try {
      key = idempotencyKeyOf(req);
    } catch (err) {
      return done(err as Error);
    }
    lookUp(req, reply, key!).then((replied) => {
      if (!replied) done();
    }, done);
  });
  app.addHook("onSend", (req, reply, payload, done) => {
    const scope = req.idempotencyScope;
    const ok = reply.statusCode >= 200 && reply.statusCode < 300;
    if (scope === undefined || !ok || typeof payload !== "string") return done(null, payload);
    const response = {
      key: scope,
      status_code: reply.statusCode,
      body: payload,
      created_at_ms: clock.nowMs(),
    };
    storage.commit([{ op: "put_idempotent", response }]).then(
      () => done(null, payload),
      (err: unknown) => {
        req.log.warn({ err }, "could not store the response of an Idempotency-Key request");
        done(null, payload);
      },
    );
  });
}
