// API keys, rate limiting and CORS, applied to every route before it runs. Keys come from
// KELPIE_API_KEYS and from `kelpie keys create` (stored as SHA-256 hashes); a presented key is
// compared against every known hash in constant time. The rate limit is a token bucket per key.
import { hash, timingSafeEqual } from "node:crypto";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Clock } from "../core/clock.ts";
import type { Storage } from "../storage/types.ts";

export const API_KEYS_REFRESH_INTERVAL_MS = 5_000;
/**
 * How fresh the stored keys must be before a key not known here is refused: a key made with
 * `kelpie keys create` works within this long, and bad keys cost at most one read per interval.
 */
export const API_KEYS_UNKNOWN_REFRESH_INTERVAL_MS = 250;
export const RATE_LIMIT_BUCKETS_MAX = 100_000;
/** Routes that never need a key. */
export const AUTH_ALLOWLIST = ["/health", "/v1/health"];

export interface SecurityConfig {
  apiKeys: string[];
  rateLimit?: { rps: number; burst: number } | undefined;
  corsOrigins: string[];
  metricsPublic: boolean;
}

export function sha256Hex(text: string): string {
  return hash("sha256", text, "hex");
}

export class ApiKeys {
  private stored: { id: string; hash: Buffer }[] = [];
  private readonly configured: { id: string; hash: Buffer }[];
  private refreshedAtMs = Number.NEGATIVE_INFINITY;

  constructor(
    plainKeys: string[],
    private readonly storage: Storage,
    private readonly clock: Clock,
  ) {
    this.configured = plainKeys.map((k, i) => ({
      id: `env-key-${i + 1}`,
      hash: Buffer.from(sha256Hex(k), "hex"),
    }));
  }

  private refreshing: Promise<void> | null = null;

  stale(maxAgeMs = API_KEYS_REFRESH_INTERVAL_MS): boolean {
    return this.clock.monotonicMs() - this.refreshedAtMs >= maxAgeMs;
  }

  /** Re-reads stored keys when the copy here is older than `maxAgeMs`. */
  refreshIfStale(maxAgeMs = API_KEYS_REFRESH_INTERVAL_MS): Promise<void> {
    if (!this.stale(maxAgeMs)) return Promise.resolve();
    this.refreshing ??= (async () => {
      try {
        const rows = await this.storage.listApiKeys();
        this.stored = rows.map((k) => ({ id: k.id, hash: Buffer.from(k.key_sha256, "hex") }));
        this.refreshedAtMs = this.clock.monotonicMs();
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  /** Whether the stored keys were read at least once (until then, requests wait for them). */
  get loaded(): boolean {
    return this.refreshedAtMs !== Number.NEGATIVE_INFINITY;
  }

  /** Whether any key is known: with none, the server is open. */
  get enabled(): boolean {
    return this.configured.length + this.stored.length > 0;
  }

  /** The id of the key among those known here, or null. Every hash is compared, each in constant time. */
  knownId(presented: string): string | null {
    const digest = hash("sha256", presented, "buffer");
    let found: string | null = null;
    for (const list of [this.configured, this.stored]) {
      for (const key of list) if (timingSafeEqual(digest, key.hash) && found === null) found = key.id;
    }
    return found;
  }

  /** The id of the key, or null; an unknown key first re-reads the stored ones (unless just read). */
  async verify(presented: string): Promise<string | null> {
    await this.refreshIfStale(API_KEYS_UNKNOWN_REFRESH_INTERVAL_MS);
    return this.knownId(presented);
  }
}

export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; atMs: number }>();

  constructor(
    private readonly rps: number,
    private readonly burst: number,
    private readonly clock: Clock,
  ) {}

  /** Takes one token for `key`; when none is left, says how many seconds until one is. */
  take(key: string): { ok: true } | { ok: false; retryAfterS: number } {
    const nowMs = this.clock.monotonicMs();
    let bucket = this.buckets.get(key);
    if (bucket === undefined) {
      if (this.buckets.size >= RATE_LIMIT_BUCKETS_MAX) this.buckets.clear();
      bucket = { tokens: this.burst, atMs: nowMs };
      this.buckets.set(key, bucket);
    }
    bucket.tokens = Math.min(this.burst, bucket.tokens + ((nowMs - bucket.atMs) / 1_000) * this.rps);
    bucket.atMs = nowMs;
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return { ok: true };
    }
    return { ok: false, retryAfterS: Math.max(1, Math.ceil((1 - bucket.tokens) / this.rps)) };
  }
}

declare module "fastify" {
  interface FastifyRequest {
    apiKeyId?: string;
  }
}

function presentedKey(req: FastifyRequest): string | undefined {
  const auth = req.headers.authorization;
  if (typeof auth === "string" && /^bearer /i.test(auth)) return auth.slice(7).trim();
  const header = req.headers["x-api-key"];
  return typeof header === "string" ? header.trim() : undefined;
}

function pathOf(url: string): string {
  const path = url.split("?")[0] ?? "/";
  return path.length > 1 ? path.replace(/\/+$/, "") : path;
}

export function installSecurity(
  app: FastifyInstance,
  config: SecurityConfig,
  deps: { storage: Storage; clock: Clock; onRateLimited?: () => void },
): void {
  const keys = new ApiKeys(config.apiKeys, deps.storage, deps.clock);
  const limiter = config.rateLimit
    ? new RateLimiter(config.rateLimit.rps, config.rateLimit.burst, deps.clock)
    : null;
  const allowAll = config.corsOrigins.includes("*");

  const refuse = (reply: FastifyReply): void => {
    reply.status(401).send({
      detail: "Missing or invalid API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.",
      code: "UNAUTHORIZED",
    });
  };
  /** After the key check: the rate limit, then the route (or a 429). */
  const admit = (req: FastifyRequest, reply: FastifyReply, open: boolean, done: () => void): void => {
    if (limiter !== null && !open) {
      const taken = limiter.take(req.apiKeyId ?? req.ip);
      if (!taken.ok) {
        deps.onRateLimited?.();
        reply
          .status(429)
          .header("retry-after", String(taken.retryAfterS))
          .send({
            detail: `Rate limit exceeded; retry after ${taken.retryAfterS} s`,
            code: "RATE_LIMITED",
            retryable: true,
          });
        return;
      }
    }
    done();
  };
  /** The key check for a key not known here: re-read the stored keys (if stale), then decide. */
  const verifySlowly = (
    req: FastifyRequest,
    reply: FastifyReply,
    key: string | undefined,
    open: boolean,
    done: (err?: Error) => void,
  ): void => {
    (async () => {
      await keys.refreshIfStale();
      if (open || !keys.enabled) return true;
      const id = key === undefined || key === "" ? null : await keys.verify(key);
      if (id === null) return false;
      req.apiKeyId = id;
      return true;
    })().then(
      (admitted) => (admitted ? admit(req, reply, open, done) : refuse(reply)),
      (err: Error) => done(err),
    );
  };

  // Callback style, so a request with a known key costs no promise: this runs on every request.
  app.addHook("onRequest", (req: FastifyRequest, reply: FastifyReply, done: (err?: Error) => void) => {
    const origin = req.headers.origin;
    if (origin !== undefined && (allowAll || config.corsOrigins.includes(origin))) {
      reply.header("access-control-allow-origin", allowAll ? "*" : origin);
      reply.header("vary", "Origin");
      if (req.method === "OPTIONS") {
        reply.header("access-control-allow-methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS");
        reply.header("access-control-allow-headers", "authorization, content-type, x-api-key");
        reply.status(204).send();
        return;
      }
    }
    const path = pathOf(req.url);
    const open = AUTH_ALLOWLIST.includes(path) || (config.metricsPublic && path === "/metrics");
    const key = open ? undefined : presentedKey(req);
    // Until the stored keys were read once, every request waits for that read.
    if (!keys.loaded) return verifySlowly(req, reply, key, open, done);
    // The keys known here answer at once; stored keys are re-read in the background when stale,
    // and a key not known yet waits for that re-read before it is refused.
    if (keys.stale()) void keys.refreshIfStale().catch(() => {});
    if (!open && keys.enabled) {
      const id = key === undefined || key === "" ? null : keys.knownId(key);
      if (id === null) return verifySlowly(req, reply, key, open, done);
      req.apiKeyId = id;
    }
    admit(req, reply, open, done);
  });
}
