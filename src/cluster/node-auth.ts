// The credential a node puts on a request it forwards to an agent's owner, and its check there.
// The forwarding node signs the request with HMAC-SHA256 under the cluster's shared secret, over
// the method, the path and query, its wall-clock time, its own and the owner's node id, and the
// body's SHA-256. The owner honours the cluster headers (serve here, do not route again) only when
// the signature matches and the time is within CLUSTER_AUTH_SKEW_MS of its own clock: a client
// cannot make one, so it cannot make a node serve an agent it does not hold.
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import type { Clock } from "../core/clock.ts";
import type { ClusterStore } from "../storage/types.ts";

/** How far a forwarded request's time may be from the receiver's clock (either way). */
export const CLUSTER_AUTH_SKEW_MS = 60_000;
/** Length of the secret a cluster makes for itself when the operator sets none. */
export const CLUSTER_SECRET_BYTES = 32;
/** Shortest KELPIE_CLUSTER_SECRET accepted (`openssl rand -hex 32` gives 64). */
export const CLUSTER_SECRET_CHARS_MIN = 32;

/** Every cluster header starts so; a request without a valid credential has them removed. */
export const CLUSTER_HEADER_PREFIX = "x-kelpie-";
/** Routes only nodes call (an outbox delivery): they take a node credential instead of an API key. */
export const CLUSTER_ROUTES_PREFIX = "/v1/_cluster/";
/** The node that forwarded the request: the receiver serves it itself and never forwards again. */
export const FORWARDED_BY_HEADER = "x-kelpie-forwarded-by";
/** The forwarding node's wall-clock time when it signed, in ms since the epoch. */
export const CLUSTER_TIME_HEADER = "x-kelpie-cluster-time";
/** The HMAC, base64url. */
export const CLUSTER_SIGNATURE_HEADER = "x-kelpie-cluster-signature";

const SIGNATURE_VERSION = "kelpie-forward-v1";
const TIME_PATTERN = /^[0-9]{1,15}$/;
const SIGNATURE_BYTES = 32;

/** The SHA-256 of a request body (hex); no body hashes as an empty one. */
export function bodyDigest(body: Uint8Array | undefined): string {
  return createHash("sha256")
    .update(body ?? new Uint8Array())
    .digest("hex");
}

/** What a forwarded request is signed over. `target` is the path and query, as on the request line. */
export interface SignedParts {
  method: string;
  target: string;
  bodySha256: string;
}

export type Verdict =
  /** No credential: any cluster header on it came from a client and means nothing. */
  { kind: "none" } | { kind: "valid"; from: string } | { kind: "invalid"; reason: string };

export class NodeAuth {
  constructor(
    private readonly key: Uint8Array,
    /** This node's id: the sender on what it signs, the receiver on what it checks. */
    private readonly nodeId: string,
    private readonly clock: Clock,
    private readonly skewMs = CLUSTER_AUTH_SKEW_MS,
  ) {}

  /** The headers that make node `to` accept `parts` as forwarded by this node. */
  sign(to: string, parts: SignedParts): Record<string, string> {
    const timeMs = String(Math.floor(this.clock.nowMs()));
    return {
      [FORWARDED_BY_HEADER]: this.nodeId,
      [CLUSTER_TIME_HEADER]: timeMs,
      [CLUSTER_SIGNATURE_HEADER]: this.mac(this.nodeId, to, timeMs, parts).toString("base64url"),
    };
  }

  /** Whether `headers` carry a credential for `parts`, signed by another node for this one. */
  verify(headers: IncomingHttpHeaders, parts: SignedParts): Verdict {
    const signature = headers[CLUSTER_SIGNATURE_HEADER];
    if (signature === undefined) return { kind: "none" };
    const from = headers[FORWARDED_BY_HEADER];
    const timeMs = headers[CLUSTER_TIME_HEADER];
    if (typeof signature !== "string" || typeof from !== "string" || typeof timeMs !== "string")
      return {
        kind: "invalid",
        reason: `${CLUSTER_SIGNATURE_HEADER}, ${FORWARDED_BY_HEADER} and ${CLUSTER_TIME_HEADER} must each be sent once`,
      };
    if (!TIME_PATTERN.test(timeMs))
      return { kind: "invalid", reason: `${CLUSTER_TIME_HEADER} must be milliseconds since the epoch` };
    const offMs = this.clock.nowMs() - Number(timeMs);
    if (Math.abs(offMs) > this.skewMs)
      return {
        kind: "invalid",
        reason: `signed ${Math.round(offMs)} ms from this node's time, beyond the ${this.skewMs} ms allowed (expired, or the nodes' clocks disagree)`,
      };
    const given = Buffer.from(signature, "base64url");
    const expected = this.mac(from, this.nodeId, timeMs, parts);
    if (given.length !== SIGNATURE_BYTES || !timingSafeEqual(given, expected))
      return {
        kind: "invalid",
        reason: "signature does not match (do all nodes share KELPIE_CLUSTER_SECRET, or none set it?)",
      };
    return { kind: "valid", from };
  }

  private mac(from: string, to: string, timeMs: string, parts: SignedParts): Buffer {
    // JSON keeps the fields apart whatever they contain.
    const message = JSON.stringify([
      SIGNATURE_VERSION,
      parts.method.toUpperCase(),
      parts.target,
      timeMs,
      from,
      to,
      parts.bodySha256,
    ]);
    return createHmac("sha256", this.key).update(message).digest();
  }
}

/**
 * The key nodes sign with: KELPIE_CLUSTER_SECRET when the operator sets it (every node must set
 * the same), else the secret kept in the shared database, made by whichever node starts first.
 * Anyone who can read that database can act as a node, but could as well rewrite any agent in
 * it: database access is trusted anyway. A store only one process uses keeps none: a key of this
 * process's own then serves, since no other node exists to agree with.
 */
export async function clusterKey(configured: string | undefined, store: ClusterStore): Promise<Uint8Array> {
  if (configured !== undefined) return Buffer.from(configured, "utf8");
  const candidate = randomBytes(CLUSTER_SECRET_BYTES);
  return (await store.clusterSecret?.(candidate)) ?? candidate;
}
