// Forwards one HTTP request to the node that owns its agent and streams the answer back (JSON or
// SSE alike), carrying the trace context. Only the request's path and query go, to the owner's
// advertised address, signed with this node's credential (src/cluster/node-auth.ts). The outcome
// says whether the owner could not be reached at all (nothing happened there: safe to serve
// elsewhere) or failed after taking the request.
import http from "node:http";
import { context, propagation } from "@opentelemetry/api";
import type { FastifyReply, FastifyRequest } from "fastify";
import { bodyDigest, CLUSTER_HEADER_PREFIX, type NodeAuth } from "../cluster/node-auth.ts";
import type { ForwardOutcome as RoutedOutcome } from "../cluster/routing.ts";
import { FORWARD_CONNECT_TIMEOUT_MS } from "../core/constants.ts";
import { KelpieError } from "../core/errors.ts";
import type { LeaseOwner } from "../storage/types.ts";

export { FORWARDED_BY_HEADER } from "../cluster/node-auth.ts";
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
  "proxy-authorization",
  "proxy-authenticate",
]);

/** One request from this node to another, signed and ready to go. */
export interface NodeRequest {
  method: string;
  /** Path and query. */
  path: string;
  headers: Record<string, string | string[]>;
  body: Buffer | undefined;
}

/** The other node's whole answer. */
export interface NodeResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/**
 * How a node reaches another. Production uses HTTP (the owner's advertised address, this module's
 * socket pool); the simulator passes its simulated network between nodes. `giveUp` ends the wait
 * as `forward` documents: "failed" once connected, else "unreachable".
 */
export type NodeTransport = (
  owner: LeaseOwner,
  request: NodeRequest,
  giveUp?: AbortSignal,
) => Promise<RoutedOutcome<NodeResponse>>;

/**
 * The path and query of a request line: an absolute-form target (`GET http://host/v1/... HTTP/1.1`)
 * loses its scheme and authority as the router strips them (find-my-way's `^https?://.*?/`), so
 * the owner gets the request this node routed, and the host a client named is never contacted.
 */
export function requestTarget(rawUrl: string): string {
  const target = rawUrl.startsWith("/") ? rawUrl : rawUrl.replace(/^https?:\/\/.*?\//, "/");
  if (!target.startsWith("/"))
    throw new KelpieError("BAD_REQUEST", "the request target must be a path (origin-form, '/...')");
  return target;
}

/**
 * Headers a browser sets about the page a request came from. This node checked them (the
 * cross-site and Host checks run before routing); the owner would judge them against its own
 * address, and refuse a same-origin write made through this node.
 */
const BROWSER_CONTEXT_HEADERS = new Set([
  "origin",
  "sec-fetch-site",
  "sec-fetch-mode",
  "sec-fetch-dest",
  "sec-fetch-user",
]);

/** The client's headers minus the hop's own, the browser's context and any cluster header (a client
 * may not send those). */
function forwardedHeaders(req: FastifyRequest): Record<string, string | string[]> {
  // A Connection header names more headers that are the hop's own.
  const connection = req.headers.connection;
  const named = new Set(
    (typeof connection === "string" ? connection : "")
      .toLowerCase()
      .split(",")
      .map((s) => s.trim()),
  );
  const headers: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined || HOP_HEADERS.has(name) || named.has(name)) continue;
    if (BROWSER_CONTEXT_HEADERS.has(name)) continue;
    if (name.startsWith(CLUSTER_HEADER_PREFIX)) continue;
    headers[name] = value;
  }
  return headers;
}

const FORWARD_SOCKETS_MAX = 256;
const agent = new http.Agent({ keepAlive: true, maxSockets: FORWARD_SOCKETS_MAX });

/** Whether a request's body can be forwarded (JSON, or none): others are served where they land. */
export function forwardableBody(req: FastifyRequest): boolean {
  const type = req.headers["content-type"];
  return req.body === undefined || type === undefined || type.startsWith("application/json");
}

/**
 * The client's own credentials (Authorization, X-API-Key) go along: the owner checks them as it
 * checks every request, so a node's credential vouches for the routing, never for the client.
 * `giveUp` aborting before the owner answers ends the wait: the outcome is then "failed" (the
 * owner had the request and may have acted on it), or "unreachable" if it never connected.
 */
export function forward(
  req: FastifyRequest,
  reply: FastifyReply,
  owner: LeaseOwner,
  auth: NodeAuth,
  giveUp?: AbortSignal,
  transport?: NodeTransport,
): Promise<ForwardOutcome> {
  // Where the owner is comes from its membership row, never from the request.
  const base = new URL(owner.advertise_url);
  const target = { host: base.host, path: requestTarget(req.raw.url ?? "/") };
  const headers = forwardedHeaders(req);
  propagation.inject(context.active(), headers);
  const body = req.body === undefined ? undefined : Buffer.from(JSON.stringify(req.body));
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    headers["content-length"] = String(body.length);
  }
  const method = req.method;
  Object.assign(
    headers,
    auth.sign(owner.node_id, { method, target: target.path, bodySha256: bodyDigest(body) }),
  );
  if (transport !== undefined)
    return forwardThrough(transport, owner, { method, path: target.path, headers, body }, reply, giveUp);
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
        protocol: base.protocol,
        hostname: base.hostname,
        port: base.port,
        method,
        path: target.path,
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

/** `forward` over a transport that hands back the owner's whole answer. */
async function forwardThrough(
  transport: NodeTransport,
  owner: LeaseOwner,
  request: NodeRequest,
  reply: FastifyReply,
  giveUp: AbortSignal | undefined,
): Promise<ForwardOutcome> {
  const outcome = await transport(owner, request, giveUp);
  if (outcome.kind !== "answered") return outcome;
  const { status, headers, body } = outcome.answer;
  const notServing = headers[NOT_SERVING_HEADER];
  if (notServing !== undefined)
    return { kind: "unreachable", reason: `${owner.node_id}: ${String(notServing)}` };
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && !HOP_HEADERS.has(name)) out[name] = value;
  }
  reply.code(status).headers(out).send(body);
  return { kind: "answered" };
}
