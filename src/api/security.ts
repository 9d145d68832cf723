// The HTTP perimeter, applied to every route before it runs: CORS, cross-site writes, the Host
// check, API keys, failed-authentication and request rate limits. Keys come from KELPIE_API_KEYS
// and from `kelpie keys create` (stored as SHA-256 hashes); a presented key is compared against
// every known hash in constant time. The rate limit is a token bucket per key.
import { hash, timingSafeEqual } from "node:crypto";
import { isIP } from "node:net";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { CLUSTER_ROUTES_PREFIX } from "../cluster/node-auth.ts";
import type { Clock } from "../core/clock.ts";
import type { Storage } from "../storage/types.ts";

export const API_KEYS_REFRESH_INTERVAL_MS = 5_000;
/**
 * How fresh the stored keys must be before a key not known here is refused: a key made with
 * `kelpie keys create` works within this long, and bad keys cost at most one read per interval.
 */
export const API_KEYS_UNKNOWN_REFRESH_INTERVAL_MS = 250;
export const RATE_LIMIT_BUCKETS_MAX = 100_000;
/** Wrong keys one client address may present per minute; then 429 until the budget refills. */
export const AUTH_FAILURES_PER_MINUTE_MAX = 20;
/** Client addresses whose failed authentications are counted; the least recently seen go first. */
export const AUTH_FAILURE_BUCKETS_MAX = 10_000;
/** Routes that never need a key. */
export const AUTH_ALLOWLIST = ["/health", "/v1/health"];
/** Methods a browser may send cross-site without the server's consent; they must not change state. */
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);
/** Sec-Fetch-Site values that a page of another origin cannot produce. */
const SAME_ORIGIN_SITES = new Set(["same-origin", "none"]);

export interface SecurityConfig {
  apiKeys: string[];
  rateLimit?: { rps: number; burst: number } | undefined;
  corsOrigins: string[];
  metricsPublic: boolean;
  /**
   * Host names (optionally with :port) a server without keys answers, besides loopback names and IP
   * addresses: the listen host, the cluster advertise host, KELPIE_ALLOWED_HOSTS. `*`: any.
   */
  allowedHosts?: string[];
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

/** Token buckets by name, at most `bucketsMax` of them: the least recently used makes room. */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; atMs: number }>();

  constructor(
    private readonly rps: number,
    private readonly burst: number,
    private readonly clock: Clock,
    private readonly bucketsMax = RATE_LIMIT_BUCKETS_MAX,
  ) {}

  get size(): number {
    return this.buckets.size;
  }

  /** The bucket for `key`, refilled to now and moved to the most recently used end. */
  private bucket(key: string): { tokens: number; atMs: number } {
    const nowMs = this.clock.monotonicMs();
    let bucket = this.buckets.get(key);
    if (bucket === undefined) {
      if (this.buckets.size >= this.bucketsMax) {
        const oldest = this.buckets.keys().next();
        if (!oldest.done) this.buckets.delete(oldest.value);
      }
      bucket = { tokens: this.burst, atMs: nowMs };
    } else this.buckets.delete(key);
    this.buckets.set(key, bucket);
    bucket.tokens = Math.min(this.burst, bucket.tokens + ((nowMs - bucket.atMs) / 1_000) * this.rps);
    bucket.atMs = nowMs;
    return bucket;
  }

  /** Seconds until `key` has a token again, or 0 if it has one now (none is taken; no bucket is made). */
  waitS(key: string): number {
    if (!this.buckets.has(key)) return 0;
    const bucket = this.bucket(key);
    return bucket.tokens >= 1 ? 0 : this.secondsToToken(bucket.tokens);
  }

  private secondsToToken(tokens: number): number {
    return Math.max(1, Math.ceil((1 - tokens) / this.rps));
  }

  /** Takes one token for `key`; when none is left, says how many seconds until one is. */
  take(key: string): { ok: true } | { ok: false; retryAfterS: number } {
    const bucket = this.bucket(key);
    if (bucket.tokens < 1) return { ok: false, retryAfterS: this.secondsToToken(bucket.tokens) };
    bucket.tokens -= 1;
    return { ok: true };
  }
}

/**
 * Whom failed authentications are counted against: the client address, or for IPv6 its /64,
 * which one machine usually owns whole (counting single addresses would let it rotate).
 */
export function clientKey(ip: string): string {
  const address = ip.split("%")[0] ?? ip;
  if (isIP(address) !== 6) return address;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped?.[1] !== undefined) return mapped[1];
  const [head = "", tail] = address.toLowerCase().split("::");
  const front = head === "" ? [] : head.split(":");
  const back = tail === undefined || tail === "" ? [] : tail.split(":");
  const groups = [...front, ...Array<string>(Math.max(0, 8 - front.length - back.length)).fill("0"), ...back];
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ""))
    .join(":")}::/64`;
}

/** The name in a Host header, without port or brackets, lowercase and without a final dot. */
function hostName(host: string): string {
  const bracketed = /^\[([^\]]*)\]/.exec(host);
  const name = bracketed?.[1] ?? (host.split(":")[0] as string);
  return name.toLowerCase().replace(/\.$/, "");
}

/**
 * Whether a server without keys answers this Host. A DNS-rebinding page reaches the server under
 * the attacker's own name, so only names the operator listed pass; loopback names and IP
 * addresses cannot be the attacker's (a page at an IP address is served from that address).
 */
export function hostAllowed(host: string | undefined, allowed: readonly string[]): boolean {
  if (host === undefined) return true; // not from a browser: every browser sends Host
  const name = hostName(host);
  if (name === "localhost" || isIP(name) !== 0) return true;
  const lower = host.toLowerCase();
  return allowed.some((entry) => {
    const e = entry.toLowerCase();
    return e === "*" || e === lower || (!/:\d+$/.test(e) && hostName(e) === name);
  });
}

/**
 * Why a request is a write from another site, or null. Browsers mark what they send: `Origin`
 * on every cross-origin write, `Sec-Fetch-Site` on every request. A write passes from this
 * server's own origin or one in KELPIE_CORS_ORIGINS; requests carrying neither header (curl,
 * SDKs) are not from a browser page and pass.
 */
export function crossSiteWrite(
  method: string,
  headers: { origin?: string | undefined; host?: string | undefined; "sec-fetch-site"?: string | string[] },
  corsOrigins: readonly string[],
): string | null {
  if (SAFE_METHODS.has(method)) return null;
  const origin = headers.origin;
  if (origin !== undefined) {
    if (corsOrigins.includes("*") || corsOrigins.includes(origin)) return null;
    let own = false;
    try {
      own = headers.host !== undefined && new URL(origin).host === new URL(`http://${headers.host}`).host;
    } catch {}
    return own ? null : `Origin '${origin}' is neither this server's nor in KELPIE_CORS_ORIGINS`;
  }
  const site = headers["sec-fetch-site"];
  if (site !== undefined && !SAME_ORIGIN_SITES.has(String(site)))
    return `Sec-Fetch-Site '${String(site)}' marks it as sent by another site's page`;
  return null;
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
  const authFailures = new RateLimiter(
    AUTH_FAILURES_PER_MINUTE_MAX / 60,
    AUTH_FAILURES_PER_MINUTE_MAX,
    deps.clock,
    AUTH_FAILURE_BUCKETS_MAX,
  );
  const allowedHosts = config.allowedHosts ?? [];
  const allowAll = config.corsOrigins.includes("*");

  const forbid = (reply: FastifyReply, code: string, detail: string): void => {
    reply.status(403).send({ detail, code, retryable: false });
  };
  const tooMany = (reply: FastifyReply, retryAfterS: number, code: string, detail: string): void => {
    deps.onRateLimited?.();
    reply
      .status(429)
      .header("retry-after", String(retryAfterS))
      .send({ detail: `${detail}; retry after ${retryAfterS} s`, code, retryable: true });
  };
  /** A 401; a wrong key (not a missing one) counts against the client's address. */
  const refuse = (req: FastifyRequest, reply: FastifyReply, wrongKey: boolean): void => {
    if (wrongKey) authFailures.take(clientKey(req.ip));
    reply.status(401).send({
      detail: "Missing or invalid API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.",
      code: "UNAUTHORIZED",
    });
  };
  /** After the key check: the rate limit, then the route (or a 429). */
  const admit = (req: FastifyRequest, reply: FastifyReply, open: boolean, done: () => void) => {
    if (limiter !== null && !open) {
      const taken = limiter.take(req.apiKeyId ?? req.ip);
      if (!taken.ok) return tooMany(reply, taken.retryAfterS, "RATE_LIMITED", "Rate limit exceeded");
    }
    done();
  };
  /** A key not known here: re-read the stored keys (unless just read), then decide. */
  const verifySlowly = (
    req: FastifyRequest,
    reply: FastifyReply,
    key: string,
    done: (err?: Error) => void,
  ): void => {
    keys.verify(key).then(
      (id) => {
        if (id === null) return refuse(req, reply, true);
        req.apiKeyId = id;
        admit(req, reply, false, done);
      },
      (err: Error) => done(err),
    );
  };
  /** Host, failed-authentication budget and key, once the stored keys were read. */
  const check = (req: FastifyRequest, reply: FastifyReply, done: (err?: Error) => void) => {
    // Without keys a DNS-rebinding page could drive the API, so the name it was reached by must
    // be one of ours. With keys the page cannot: browsers attach no key of their own accord.
    if (!keys.enabled && !hostAllowed(req.headers.host, allowedHosts))
      return forbid(
        reply,
        "HOST_NOT_ALLOWED",
        `Host '${req.headers.host}' is not one of this server's names (a server without API keys answers loopback names, IP addresses and KELPIE_ALLOWED_HOSTS)`,
      );
    const path = pathOf(req.url);
    // Routes only nodes call take a node credential instead of a key (cluster-outbox.ts).
    const open =
      AUTH_ALLOWLIST.includes(path) ||
      (config.metricsPublic && path === "/metrics") ||
      path.startsWith(CLUSTER_ROUTES_PREFIX);
    if (open || !keys.enabled) return admit(req, reply, open, done);
    // Checked before the key, even a right one: else guessing would go on, only answered by 429s.
    const waitS = authFailures.waitS(clientKey(req.ip));
    if (waitS > 0)
      return tooMany(reply, waitS, "AUTH_RATE_LIMITED", "Too many failed authentications from this address");
    const key = presentedKey(req);
    if (key === undefined || key === "") return refuse(req, reply, false);
    const id = keys.knownId(key);
    if (id === null) return verifySlowly(req, reply, key, done);
    req.apiKeyId = id;
    admit(req, reply, false, done);
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
    // Before any key: a form or fetch from another site's page changes nothing, keys or not.
    const crossSite = crossSiteWrite(req.method, req.headers, config.corsOrigins);
    if (crossSite !== null)
      return forbid(reply, "CROSS_SITE_REFUSED", `Cross-site request refused: ${crossSite}`);
    // Until the stored keys were read once, every request waits for that read.
    if (!keys.loaded) {
      keys.refreshIfStale().then(
        () => check(req, reply, done),
        (err: Error) => done(err),
      );
      return;
    }
    // The keys known here answer at once; stored keys are re-read in the background when stale,
    // and a key not known yet waits for that re-read before it is refused.
    if (keys.stale()) void keys.refreshIfStale().catch(() => {});
    check(req, reply, done);
  });
}
