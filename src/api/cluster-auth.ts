// Which requests another node forwarded: those whose cluster credential checks out
// (src/cluster/node-auth.ts). A request without one is a client's, whatever headers it sends: its
// cluster headers are removed before anything reads them. A request with a credential that does
// not check out (forged, expired, signed with another secret) is refused, so that a misconfigured
// cluster shows up as errors rather than as requests routed around in circles.
import { createHash, type Hash } from "node:crypto";
import { pipeline, Transform } from "node:stream";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import {
  bodyDigest,
  CLUSTER_HEADER_PREFIX,
  CLUSTER_SIGNATURE_HEADER,
  type NodeAuth,
} from "../cluster/node-auth.ts";
import { requestTarget } from "./forward.ts";

const EMPTY_BODY_SHA256 = bodyDigest(undefined);

/** A stream that passes bytes through unchanged, hashing them; `done` gets the digest at the end. */
function hashing(done: (sha256: string) => void): Transform {
  const hash: Hash = createHash("sha256");
  return new Transform({
    transform(chunk: Buffer, _encoding, next) {
      hash.update(chunk);
      next(null, chunk);
    },
    flush(next) {
      done(hash.digest("hex"));
      next();
    },
  });
}

/**
 * Installs the body hashing a credential's check needs (the SHA-256 of the bytes as they arrived,
 * not of the parsed body) and returns the check, for a preHandler: the id of the node that
 * forwarded the request, or null for a client's request, or a 401 sent (then `reply.sent`).
 */
export function installClusterAuth(
  app: FastifyInstance,
  auth: () => NodeAuth,
): (req: FastifyRequest, reply: FastifyReply) => string | null {
  const digests = new WeakMap<FastifyRequest, string>();
  app.addHook("preParsing", async (req, _reply, payload) => {
    if (req.headers[CLUSTER_SIGNATURE_HEADER] === undefined) return payload;
    const tee = hashing((sha256) => digests.set(req, sha256));
    // A failure of the client's stream reaches the parser through the tee.
    pipeline(payload, tee, () => {});
    return tee;
  });

  return (req, reply) => {
    const verdict =
      req.headers[CLUSTER_SIGNATURE_HEADER] === undefined
        ? ({ kind: "none" } as const)
        : auth().verify(req.headers, {
            method: req.method,
            target: requestTarget(req.raw.url ?? "/"),
            // A body never read (none sent, or none parsed for this method) is an empty one.
            bodySha256: digests.get(req) ?? EMPTY_BODY_SHA256,
          });
    if (verdict.kind === "valid") return verdict.from;
    for (const name of Object.keys(req.headers)) {
      if (name.startsWith(CLUSTER_HEADER_PREFIX)) delete req.headers[name];
    }
    if (verdict.kind === "invalid") {
      req.log.warn({ reason: verdict.reason }, "refused a request with an invalid cluster credential");
      reply.code(401).send({ detail: `Invalid cluster credential: ${verdict.reason}`, code: "UNAUTHORIZED" });
    }
    return null;
  };
}
