// Forwards one HTTP request to the node that owns its agent and streams the answer back (JSON or
// SSE alike), carrying the trace context. The outcome says whether the owner could not be reached
// at all (nothing happened there: safe to serve elsewhere) or failed after taking the request.
import http from "node:http";
import { context, propagation } from "@opentelemetry/api";
import type { FastifyReply, FastifyRequest } from "fastify";
import { FORWARD_CONNECT_TIMEOUT_MS } from "../core/constants.ts";

/** Set on forwarded requests: the receiving node serves them itself and never forwards again. */
export const FORWARDED_BY_HEADER = "x-kelpie-forwarded-by";
/** Set on a node's refusal to serve a write because it is not serving (cut off, superseded). */
export const NOT_SERVING_HEADER = "x-kelpie-not-serving";

export type ForwardOutcome =
  | { kind: "answered" }
  | { kind: "unreachable"; reason: string }
  | { kind: "failed"; reason: string };

// Connection-level headers are the hop's own, not the request's.
const HOP_HEADERS = new Set([
  "connection",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
  "proxy-connection",
  "te",
  "trailer",
  "host",
  "content-length",
  "expect",
]);

const FORWARD_SOCKETS_MAX = 256;
const agent = new http.Agent({ keepAlive: true, maxSockets: FORWARD_SOCKETS_MAX });

/** Whether a request's body can be forwarded (JSON, or none): others are served where they land. */
export function forwardableBody(req: FastifyRequest): boolean {
  const type = req.headers["content-type"];
  return req.body === undefined || type === undefined || type.startsWith("application/json");
}

/**
 * `giveUp` aborting before the owner answers ends the wait: the outcome is then "failed" (the
 * owner had the request and may have acted on it), or "unreachable" if it never connected.
 */
export function forward(
  req: FastifyRequest,
  reply: FastifyReply,
  targetBaseUrl: string,
  fromNodeId: string,
  giveUp?: AbortSignal,
): Promise<ForwardOutcome> {
  const target = new URL(req.raw.url ?? "/", targetBaseUrl);
  const headers: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value !== undefined && !HOP_HEADERS.has(name)) headers[name] = value;
  }
  headers[FORWARDED_BY_HEADER] = fromNodeId;
  propagation.inject(context.active(), headers);
  const body = req.body === undefined ? undefined : Buffer.from(JSON.stringify(req.body));
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    headers["content-length"] = String(body.length);
  }
  return new Promise<ForwardOutcome>((resolve) => {
    let connected = false;
    let settled = false;
    const settle = (outcome: ForwardOutcome) => {
      if (!settled) {
        settled = true;
        resolve(outcome);
      }
    };
    const upstream = http.request(
      {
        agent,
        protocol: target.protocol,
        hostname: target.hostname,
        port: target.port,
        method: req.method,
        path: `${target.pathname}${target.search}`,
        headers,
      },
      (res) => {
        // The owner refused before doing anything: as good as unreachable.
        if (res.headers[NOT_SERVING_HEADER] !== undefined) {
          res.resume();
          settle({ kind: "unreachable", reason: `${target.host}: ${res.headers[NOT_SERVING_HEADER]}` });
          return;
        }
        const out: Record<string, string | string[]> = {};
        for (const [name, value] of Object.entries(res.headers)) {
          if (value !== undefined && !HOP_HEADERS.has(name)) out[name] = value;
        }
        reply.code(res.statusCode ?? 502).headers(out);
        // An answer cut short by the owner's death ends our response too; the client sees it.
        res.on("error", () => reply.raw.destroy());
        req.raw.once("close", () => {
          if (!res.complete) upstream.destroy();
        });
        reply.send(res);
        settle({ kind: "answered" });
      },
    );
    const connectTimer = setTimeout(() => {
      if (!connected) upstream.destroy(new Error(`no connection within ${FORWARD_CONNECT_TIMEOUT_MS} ms`));
    }, FORWARD_CONNECT_TIMEOUT_MS);
    upstream.once("socket", (socket) => {
      if (!socket.connecting) {
        connected = true;
        clearTimeout(connectTimer);
        return;
      }
      socket.once("connect", () => {
        connected = true;
        clearTimeout(connectTimer);
      });
    });
    const onGiveUp = () => {
      if (settled) return;
      const reason = `${target.host}: ${String(giveUp?.reason)}`;
      settle(connected ? { kind: "failed", reason } : { kind: "unreachable", reason });
      upstream.destroy();
    };
    giveUp?.addEventListener("abort", onGiveUp, { once: true });
    upstream.once("close", () => giveUp?.removeEventListener("abort", onGiveUp));
    upstream.on("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(connectTimer);
      const reason = `${target.host}: ${err.code ?? err.message}`;
      // A pooled socket the owner had already closed (it died, or timed the socket out) carried
      // nothing the owner acted on; a fresh socket that never connected, likewise.
      if (!connected || (upstream.reusedSocket && err.code === "ECONNRESET"))
        settle({ kind: "unreachable", reason });
      else settle({ kind: "failed", reason });
    });
    upstream.end(body);
  });
}
