// API keys on every route, rate limits with Retry-After, metrics that move, and the audit log.
import { spawn } from "node:child_process";
import { connect } from "node:net";
import { networkInterfaces } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  API_KEYS_UNKNOWN_REFRESH_INTERVAL_MS,
  AUTH_FAILURES_PER_MINUTE_MAX,
  clientKey,
  RateLimiter,
} from "../../src/api/security.ts";
import { ConfigError, configFromEnv, exposureWarning, isLoopbackHost } from "../../src/config.ts";
import { ManualClock } from "../../src/core/clock.ts";
import { llmConfigFromEnv } from "../../src/llm/registry.ts";
import type { KelpieOptions } from "../../src/server.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { type TestApp, testApp } from "../support/app.ts";
import { type FakeLlm, startFakeLlm } from "../support/fake-llm/server.ts";
import { type ServerProcess, startServer, tempDataDir } from "../support/server-process.ts";

let fake: FakeLlm;
let t: TestApp | undefined;
beforeAll(async () => {
  fake = await startFakeLlm();
});
afterAll(async () => {
  await fake.close();
});
afterEach(async () => {
  await t?.kelpie.close();
  t = undefined;
});

const KEY = "key-one";
const ID = "00000000-0000-4000-8000-000000000000";

async function app(security: KelpieOptions["security"], storage = new MemoryStorage()) {
  t = await testApp(storage, {
    llm: llmConfigFromEnv({ OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` }),
    observability: { tracing: null },
    ...(security ? { security } : {}),
  });
  await t.kelpie.app.ready();
  return t;
}

/** One request through the app; `from` is the client address (inject's default is 127.0.0.1). */
async function call(
  method: string,
  url: string,
  headers: Record<string, string> = {},
  body?: unknown,
  from?: string,
) {
  const res = await t!.kelpie.app.inject({
    method: method as "GET",
    url,
    headers: { ...headers, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    ...(body === undefined ? {} : { payload: JSON.stringify(body) }),
    ...(from === undefined ? {} : { remoteAddress: from }),
  });
  return res;
}

describe("API keys", () => {
  it("every registered route but the allowlist answers 401 without a key and works with one", async () => {
    await app({ apiKeys: [KEY], corsOrigins: [], metricsPublic: false });
    const routes = t!.kelpie.app.kelpieRoutes.filter((r) => r.method !== "HEAD" && r.method !== "OPTIONS");
    expect(routes.length).toBeGreaterThan(40);
    const open = ["/health", "/v1/health"];
    const url = (pattern: string) =>
      pattern.replace(/:([a-z_]+)/g, (_m, name: string) =>
        name.endsWith("_id") ? `${name.replace(/_id$/, "").replace("mcp_server", "mcp_server")}-${ID}` : "x",
      );
    let checked = 0;
    for (const route of routes) {
      const path = url(route.url);
      // Each route from its own address: wrong keys from one address are limited (tested below).
      const from = `10.1.${checked >> 8}.${checked & 255}`;
      const bare = await call(
        route.method,
        path,
        {},
        route.method === "GET" || route.method === "DELETE" ? undefined : {},
        from,
      );
      if (open.includes(route.url.replace(/\/$/, ""))) {
        expect(bare.statusCode, `${route.method} ${route.url}`).not.toBe(401);
        continue;
      }
      expect(bare.statusCode, `${route.method} ${route.url} without a key`).toBe(401);
      expect(JSON.parse(bare.body).detail).toContain("API key");
      const wrong = await call(route.method, path, { authorization: "Bearer nope" }, undefined, from);
      expect(wrong.statusCode).toBe(401);
      const keyed = await call(
        route.method,
        path,
        { authorization: `Bearer ${KEY}` },
        route.method === "GET" || route.method === "DELETE" ? undefined : {},
      );
      expect(keyed.statusCode, `${route.method} ${route.url} with a key`).not.toBe(401);
      checked++;
    }
    expect(checked).toBeGreaterThan(40);
    expect((await call("GET", "/v1/agents/", { "x-api-key": KEY })).statusCode).toBe(200);
  });

  it("keys created with `kelpie keys create` are stored hashed and accepted", async () => {
    const { sha256Hex } = await import("../../src/api/security.ts");
    const storage = new MemoryStorage();
    await storage.migrate();
    await storage.commit([
      {
        op: "put_api_key",
        key: { id: "key-1", name: "ci", key_sha256: sha256Hex("stored-secret"), created_at_ms: 0 },
      },
    ]);
    expect(JSON.stringify(await storage.listApiKeys())).not.toContain("stored-secret");
    // No key in the environment: the stored one alone closes the server.
    await app({ apiKeys: [], corsOrigins: [], metricsPublic: false }, storage);
    expect((await call("GET", "/v1/agents/")).statusCode).toBe(401);
    expect((await call("GET", "/v1/agents/", { authorization: "Bearer wrong-secret" })).statusCode).toBe(401);
    expect((await call("GET", "/v1/agents/", { authorization: "Bearer stored-secret" })).statusCode).toBe(
      200,
    );
    expect((await call("GET", "/v1/agents/", { "x-api-key": "stored-secret" })).statusCode).toBe(200);

    // A key made while the server runs works within moments, not after the periodic re-read.
    await storage.commit([
      {
        op: "put_api_key",
        key: { id: "key-2", name: "new", key_sha256: sha256Hex("fresh-secret"), created_at_ms: 0 },
      },
    ]);
    await new Promise((r) => setTimeout(r, API_KEYS_UNKNOWN_REFRESH_INTERVAL_MS + 50));
    expect((await call("GET", "/v1/agents/", { authorization: "Bearer fresh-secret" })).statusCode).toBe(200);
  });
});

describe("CORS", () => {
  it("is off by default, and answers only the configured origins", async () => {
    const preflight = (origin: string) =>
      call("OPTIONS", "/v1/agents/", { origin, "access-control-request-method": "POST" });
    await app({ apiKeys: [KEY], corsOrigins: [], metricsPublic: false });
    const closed = await call("GET", "/v1/agents/", {
      origin: "https://app.example",
      authorization: `Bearer ${KEY}`,
    });
    expect(closed.statusCode).toBe(200);
    expect(closed.headers["access-control-allow-origin"]).toBeUndefined();
    await t!.kelpie.close();

    await app({ apiKeys: [KEY], corsOrigins: ["https://app.example"], metricsPublic: false });
    const allowed = await preflight("https://app.example");
    expect(allowed.statusCode).toBe(204); // a preflight carries no key, and needs none
    expect(allowed.headers["access-control-allow-origin"]).toBe("https://app.example");
    expect(String(allowed.headers["access-control-allow-headers"])).toContain("authorization");
    const other = await preflight("https://evil.example");
    expect(other.headers["access-control-allow-origin"]).toBeUndefined();
    expect(other.statusCode).toBe(401);
    const get = await call("GET", "/v1/agents/", {
      origin: "https://app.example",
      authorization: `Bearer ${KEY}`,
    });
    expect(get.headers["access-control-allow-origin"]).toBe("https://app.example");
    expect(get.headers.vary).toContain("Origin");
  });
});

describe("rate limits", () => {
  it("answers 429 with Retry-After over the burst, and recovers", async () => {
    await app({ apiKeys: [KEY], corsOrigins: [], metricsPublic: false, rateLimit: { rps: 10, burst: 3 } });
    const headers = { authorization: `Bearer ${KEY}` };
    const codes = [];
    for (let i = 0; i < 6; i++) codes.push((await call("GET", "/v1/agents/", headers)).statusCode);
    expect(codes.slice(0, 3)).toEqual([200, 200, 200]);
    const limited = await call("GET", "/v1/agents/", headers);
    expect(limited.statusCode).toBe(429);
    expect(Number(limited.headers["retry-after"])).toBeGreaterThanOrEqual(1);
    expect((await call("GET", "/health")).statusCode).toBe(200);
    await new Promise((r) => setTimeout(r, 400));
    expect((await call("GET", "/v1/agents/", headers)).statusCode).toBe(200);
  });
});

describe("metrics and audit", () => {
  it("counters and histograms move with the right labels after a message exchange, and tools are audited", async () => {
    await app({ apiKeys: [KEY], corsOrigins: [], metricsPublic: false });
    const headers = { authorization: `Bearer ${KEY}` };
    const scrape = async () => (await call("GET", "/metrics", headers)).body;
    const value = (text: string, prefix: string) =>
      text
        .split("\n")
        .filter((l) => l.startsWith(prefix))
        .reduce((sum, l) => sum + Number(l.split(" ").at(-1)), 0);
    const before = await scrape();
    const agent = JSON.parse(
      (
        await call("POST", "/v1/agents/", headers, {
          model: "openai/gpt-4o-mini",
          memory_blocks: [{ label: "human", value: "Ada" }],
        })
      ).body,
    );
    fake.script(() => ({ toolCalls: [{ name: "send_message", args: { message: "hi" } }] }));
    expect(
      (await call("POST", `/v1/agents/${agent.id}/messages`, headers, { input: "hello" })).statusCode,
    ).toBe(200);
    const after = await scrape();
    expect(value(after, 'kelpie_invocations_total{operation="send_message",status="ok"}')).toBe(
      value(before, 'kelpie_invocations_total{operation="send_message",status="ok"}') + 1,
    );
    expect(
      value(after, 'kelpie_invocation_duration_seconds_count{operation="send_message"}'),
    ).toBeGreaterThan(0);
    expect(value(after, 'kelpie_llm_calls_total{provider="openai",model="gpt-4o-mini",status="ok"}')).toBe(1);
    expect(
      value(after, 'kelpie_llm_tokens_total{provider="openai",model="gpt-4o-mini",kind="input"}'),
    ).toBeGreaterThan(0);
    expect(
      value(after, 'kelpie_tool_executions_total{tool_type="letta_core",sandbox="builtin",outcome="ok"}'),
    ).toBe(1);
    expect(
      value(
        after,
        'kelpie_http_request_duration_seconds_count{method="POST",route="/v1/agents/:agent_id/messages",status_code="200"}',
      ),
    ).toBe(1);
    expect(value(after, 'kelpie_storage_commit_duration_seconds_count{engine="memory"}')).toBeGreaterThan(
      value(before, 'kelpie_storage_commit_duration_seconds_count{engine="memory"}'),
    );
    expect(value(after, "kelpie_agents_active_count")).toBe(1);
    expect(value(after, 'kelpie_memory_usage_bytes{tier="core"}')).toBe(3);
    expect(after).toContain('kelpie_memory_usage_bytes{tier="working"}');
    expect(after).toContain("kelpie_process_");
    const audit = JSON.parse((await call("GET", "/v1/audit", headers)).body);
    expect(audit[0]).toMatchObject({ actor: "env-key-1", action: "tool.execute", target: "send_message" });
    expect(audit[0].detail.agent_id).toBe(agent.id);
  });
});

const OPEN = { apiKeys: [], corsOrigins: [], metricsPublic: false };
const AGENT = { model: "openai/gpt-4o-mini" };

/** A multipart .af upload, as a browser form would send it. */
async function importForm(headers: Record<string, string>) {
  const form = new FormData();
  form.append("file", new Blob([JSON.stringify({ agents: [] })]), "x.af");
  const encoded = new Response(form);
  return t!.kelpie.app.inject({
    method: "POST",
    url: "/v1/agents/import",
    payload: Buffer.from(await encoded.arrayBuffer()),
    headers: { ...headers, "content-type": encoded.headers.get("content-type")! },
  });
}

describe("cross-site writes", () => {
  it("a multipart POST from another site's page to /v1/agents/import is refused before it is read", async () => {
    await app(OPEN);
    const attack = await importForm({ origin: "http://evil.example", "sec-fetch-site": "cross-site" });
    expect(attack.statusCode).toBe(403);
    expect(JSON.parse(attack.body)).toMatchObject({ code: "CROSS_SITE_REFUSED" });
    expect(JSON.parse(attack.body).detail).toContain("http://evil.example");
    // The same form without the browser's marks reaches the route (which judges the file).
    expect((await importForm({})).statusCode).not.toBe(403);
  });

  it("a foreign Origin, or a Sec-Fetch-Site other than same-origin or none, is refused on every write", async () => {
    await app(OPEN);
    const attacks: Record<string, string>[] = [
      { origin: "http://evil.example" },
      { origin: "null" }, // sandboxed frames and file:// pages
      { origin: "http://localhost:3000", host: "localhost:8283" }, // another port is another origin
      { "sec-fetch-site": "cross-site" },
      { "sec-fetch-site": "same-site" }, // e.g. another port on localhost
    ];
    for (const headers of attacks) {
      for (const method of ["POST", "PATCH", "DELETE"]) {
        const res = await call(method, "/v1/agents/", headers, method === "DELETE" ? undefined : AGENT);
        expect(res.statusCode, `${method} ${JSON.stringify(headers)}`).toBe(403);
        expect(JSON.parse(res.body).code).toBe("CROSS_SITE_REFUSED");
      }
    }
    expect(JSON.parse((await call("GET", "/v1/agents/")).body)).toEqual([]);
    // Reads stay open: without CORS the page cannot see the answer.
    expect((await call("GET", "/v1/agents/", { origin: "http://evil.example" })).statusCode).toBe(200);
  });

  it("same-origin pages, clients without browser headers and KELPIE_CORS_ORIGINS may write", async () => {
    await app({ ...OPEN, corsOrigins: ["https://app.example"] });
    const ok: Record<string, string>[] = [
      {},
      { "sec-fetch-site": "none" },
      { origin: "http://localhost:8283", host: "localhost:8283", "sec-fetch-site": "same-origin" },
      { origin: "https://app.example", "sec-fetch-site": "cross-site" },
    ];
    for (const headers of ok)
      expect((await call("POST", "/v1/agents/", headers, AGENT)).statusCode, JSON.stringify(headers)).toBe(
        200,
      );
    expect(JSON.parse((await call("GET", "/v1/agents/")).body)).toHaveLength(ok.length);
  });

  it("applies with API keys too: a key does not make a foreign page's write acceptable", async () => {
    await app({ ...OPEN, apiKeys: [KEY] });
    const auth = { authorization: `Bearer ${KEY}` };
    expect(
      (await call("POST", "/v1/agents/", { ...auth, origin: "http://evil.example" }, AGENT)).statusCode,
    ).toBe(403);
    expect((await call("POST", "/v1/agents/", auth, AGENT)).statusCode).toBe(200);
  });
});

describe("Host check (DNS rebinding)", () => {
  it("without keys, a name that is not this server's is refused; loopback names and IPs pass", async () => {
    await app(OPEN);
    for (const host of [
      "evil.example:8283",
      "evil.example",
      "localhost.evil.example:8283",
      "127.0.0.1.nip.io",
    ]) {
      const res = await call("GET", "/v1/agents/", { host });
      expect(res.statusCode, host).toBe(403);
      expect(JSON.parse(res.body)).toMatchObject({ code: "HOST_NOT_ALLOWED" });
      expect(JSON.parse(res.body).detail).toContain("KELPIE_ALLOWED_HOSTS");
      expect((await call("POST", "/v1/agents/", { host }, AGENT)).statusCode).toBe(403);
    }
    for (const host of [
      "localhost:8283",
      "LOCALHOST",
      "127.0.0.1:1",
      "[::1]:8283",
      "192.0.2.7:8283",
      "[2001:db8::1]",
    ])
      expect((await call("GET", "/v1/agents/", { host })).statusCode, host).toBe(200);
    expect(JSON.parse((await call("GET", "/v1/agents/")).body)).toEqual([]);
  });

  it("KELPIE_ALLOWED_HOSTS adds names (any port, or the one given); '*' allows every name", async () => {
    await app({ ...OPEN, allowedHosts: ["kelpie.lan", "box.example:9000"] });
    expect((await call("GET", "/v1/agents/", { host: "kelpie.lan:8283" })).statusCode).toBe(200);
    expect((await call("GET", "/v1/agents/", { host: "Kelpie.LAN." })).statusCode).toBe(200);
    expect((await call("GET", "/v1/agents/", { host: "box.example:9000" })).statusCode).toBe(200);
    expect((await call("GET", "/v1/agents/", { host: "box.example:9001" })).statusCode).toBe(403);
    expect((await call("GET", "/v1/agents/", { host: "evil.example" })).statusCode).toBe(403);
    await t!.kelpie.close();
    await app({ ...OPEN, allowedHosts: ["*"] });
    expect((await call("GET", "/v1/agents/", { host: "evil.example" })).statusCode).toBe(200);
  });

  it("with a key, any name is answered: a rebinding page has no key to send", async () => {
    await app({ ...OPEN, apiKeys: [KEY] });
    expect((await call("GET", "/v1/agents/", { host: "evil.example" })).statusCode).toBe(401);
    expect(
      (await call("GET", "/v1/agents/", { host: "evil.example", authorization: `Bearer ${KEY}` })).statusCode,
    ).toBe(200);
  });
});

describe("failed authentication", () => {
  it("wrong keys from one address are limited to a budget per minute, then every key gets 429", async () => {
    await app({ ...OPEN, apiKeys: [KEY] });
    const attacker = "203.0.113.7";
    for (let i = 0; i < AUTH_FAILURES_PER_MINUTE_MAX; i++) {
      const res = await call(
        "GET",
        "/v1/agents/",
        { authorization: `Bearer guess-${i}` },
        undefined,
        attacker,
      );
      expect(res.statusCode, `guess ${i}`).toBe(401);
    }
    const limited = await call(
      "GET",
      "/v1/agents/",
      { authorization: "Bearer guess-x" },
      undefined,
      attacker,
    );
    expect(limited.statusCode).toBe(429);
    expect(JSON.parse(limited.body)).toMatchObject({ code: "AUTH_RATE_LIMITED", retryable: true });
    expect(Number(limited.headers["retry-after"])).toBeGreaterThanOrEqual(1);
    // Even the right key waits: otherwise guessing would go on, told apart by 429 and 200.
    const right = { authorization: `Bearer ${KEY}` };
    expect((await call("GET", "/v1/agents/", right, undefined, attacker)).statusCode).toBe(429);
    // Other addresses, open routes and requests that present no key are unaffected.
    expect((await call("GET", "/v1/agents/", right, undefined, "203.0.113.8")).statusCode).toBe(200);
    expect((await call("GET", "/health", {}, undefined, attacker)).statusCode).toBe(200);
    for (let i = 0; i < AUTH_FAILURES_PER_MINUTE_MAX + 5; i++)
      expect((await call("GET", "/v1/agents/", {}, undefined, "203.0.113.9")).statusCode).toBe(401);
  });

  it("counts an IPv6 client by its /64, so rotating addresses within it does not help", async () => {
    expect(clientKey("2001:db8:1:2:aaaa::1")).toBe(clientKey("2001:0db8:0001:0002:ffff:1:2:3"));
    expect(clientKey("2001:db8:1:2::1")).not.toBe(clientKey("2001:db8:1:3::1"));
    expect(clientKey("::ffff:198.51.100.1")).toBe("198.51.100.1");
    expect(clientKey("fe80::1%eth0")).toBe(clientKey("fe80::2"));
    await app({ ...OPEN, apiKeys: [KEY] });
    for (let i = 0; i < AUTH_FAILURES_PER_MINUTE_MAX; i++)
      await call("GET", "/v1/agents/", { authorization: "Bearer nope" }, undefined, `2001:db8:5:6::${i + 1}`);
    expect(
      (await call("GET", "/v1/agents/", { authorization: "Bearer nope" }, undefined, "2001:db8:5:6::ff"))
        .statusCode,
    ).toBe(429);
  });

  it("the budget refills with time, and memory is bounded by dropping the least recently seen address", () => {
    const clock = new ManualClock();
    const limiter = new RateLimiter(
      AUTH_FAILURES_PER_MINUTE_MAX / 60,
      AUTH_FAILURES_PER_MINUTE_MAX,
      clock,
      3,
    );
    for (let i = 0; i < AUTH_FAILURES_PER_MINUTE_MAX; i++) expect(limiter.take("a").ok).toBe(true);
    expect(limiter.waitS("a")).toBe(60 / AUTH_FAILURES_PER_MINUTE_MAX);
    limiter.take("b");
    limiter.take("c");
    expect(limiter.waitS("a")).toBeGreaterThan(0); // a is now the most recently seen
    limiter.take("d"); // evicts b, the least recently seen, and nothing else
    expect(limiter.size).toBe(3);
    expect(limiter.waitS("a")).toBeGreaterThan(0);
    clock.advanceMs(60_000);
    expect(limiter.waitS("a")).toBe(0);
  });
});

describe("listen address", () => {
  it("config: loopback without keys, every interface with one, KELPIE_HOST wins; exposure needs the opt-in", () => {
    expect(configFromEnv({}).host).toBe("127.0.0.1");
    expect(configFromEnv({ KELPIE_API_KEYS: "k" }).host).toBe("0.0.0.0");
    expect(configFromEnv({}, { storedApiKeys: true }).host).toBe("0.0.0.0");
    expect(configFromEnv({ KELPIE_HOST: "::1", KELPIE_API_KEYS: "k" }).host).toBe("::1");
    expect(exposureWarning(configFromEnv({ KELPIE_HOST: "localhost" }))).toBeUndefined();
    expect(exposureWarning(configFromEnv({ KELPIE_HOST: "0.0.0.0", KELPIE_API_KEYS: "k" }))).toBeUndefined();
    expect(() => exposureWarning(configFromEnv({ KELPIE_HOST: "0.0.0.0" }))).toThrow(ConfigError);
    expect(() => exposureWarning(configFromEnv({ KELPIE_HOST: "192.0.2.2" }))).toThrow(
      /KELPIE_ALLOW_REMOTE_WITHOUT_KEY=1/,
    );
    expect(
      exposureWarning(configFromEnv({ KELPIE_HOST: "::", KELPIE_ALLOW_REMOTE_WITHOUT_KEY: "1" })),
    ).toContain("WITHOUT an API key");
    for (const host of [
      "127.0.0.1",
      "127.8.9.10",
      "localhost",
      "::1",
      "[::1]",
      "0:0:0:0:0:0:0:1",
      "::ffff:127.0.0.1",
    ])
      expect(isLoopbackHost(host), host).toBe(true);
    for (const host of [
      "0.0.0.0",
      "::",
      "192.0.2.2",
      "::ffff:10.0.0.1",
      "example.com",
      "localhost.example.com",
    ])
      expect(isLoopbackHost(host), host).toBe(false);
  });

  /** This machine's first non-loopback IPv4 address, if it has one. */
  const outside = Object.values(networkInterfaces())
    .flat()
    .find((a) => a !== undefined && a.family === "IPv4" && !a.internal)?.address;
  const reachable = (host: string, port: number) =>
    new Promise<boolean>((done) => {
      const socket = connect({ host, port }, () => {
        socket.destroy();
        done(true);
      });
      socket.on("error", () => done(false));
    });
  const portOf = (s: ServerProcess) => Number(new URL(s.url).port);
  /** The server's output once it contains `text` (it may arrive after /health first answers). */
  const outputWith = async (s: ServerProcess, text: string) => {
    for (let i = 0; i < 100 && !s.output().includes(text); i++) await new Promise((r) => setTimeout(r, 50));
    return s.output();
  };
  const servers: ServerProcess[] = [];
  const dirs: { remove(): void }[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.kill();
    for (const d of dirs.splice(0)) d.remove();
  });
  const serve = async (env: Record<string, string>) => {
    const data = tempDataDir();
    dirs.push(data);
    const s = await startServer({
      dataDir: data.dir,
      env: {
        KELPIE_HOST: "",
        KELPIE_API_KEYS: "",
        KELPIE_LOG_LEVEL: "info",
        KELPIE_LOG_FORMAT: "json",
        ...env,
      },
    });
    servers.push(s);
    return s;
  };

  it.skipIf(outside === undefined)(
    "`kelpie serve` without keys listens on loopback only and says so; with a stored key on every interface",
    async () => {
      const s = await serve({});
      expect(await reachable("127.0.0.1", portOf(s))).toBe(true);
      expect(await reachable(outside!, portOf(s))).toBe(false);
      const line = `kelpie listening on http://127.0.0.1:${portOf(s)} (this machine only`;
      expect(await outputWith(s, line)).toContain(line);
      expect(s.output()).toContain("kelpie keys create");
      await s.kill();

      // A key made with `kelpie keys create` opens the default to every interface.
      const created = spawn(
        process.execPath,
        [join(import.meta.dirname, "../../bin/kelpie.mjs"), "keys", "create"],
        {
          env: { ...process.env, KELPIE_DATA_DIR: s.dataDir },
          stdio: "ignore",
        },
      );
      expect(await new Promise((done) => created.on("exit", done))).toBe(0);
      const keyed = await startServer({
        dataDir: s.dataDir,
        env: { KELPIE_HOST: "", KELPIE_API_KEYS: "", KELPIE_LOG_LEVEL: "info", KELPIE_LOG_FORMAT: "json" },
      });
      servers.push(keyed);
      expect(await reachable(outside!, portOf(keyed))).toBe(true);
      const everywhere = `kelpie listening on http://0.0.0.0:${portOf(keyed)}"`;
      expect(await outputWith(keyed, everywhere)).toContain(everywhere);
    },
    180_000, // three process starts, each slow on a loaded machine
  );

  it("a non-loopback KELPIE_HOST without a key exits 2 with one line, unless the operator opts in", async () => {
    const data = tempDataDir();
    dirs.push(data);
    const child = spawn(process.execPath, [join(import.meta.dirname, "../../bin/kelpie.mjs"), "serve"], {
      env: {
        ...process.env,
        KELPIE_HOST: "0.0.0.0",
        KELPIE_API_KEYS: "",
        KELPIE_PORT: "0",
        KELPIE_DATA_DIR: data.dir,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    child.stdout.resume();
    expect(await new Promise((done) => child.on("exit", done))).toBe(2);
    expect(stderr.trim().split("\n")).toEqual([
      expect.stringMatching(
        /^kelpie: KELPIE_HOST=0\.0\.0\.0 without an API key .*KELPIE_ALLOW_REMOTE_WITHOUT_KEY=1/,
      ),
    ]);

    const opened = await serve({ KELPIE_HOST: "0.0.0.0", KELPIE_ALLOW_REMOTE_WITHOUT_KEY: "1" });
    const warning = "WITHOUT an API key (KELPIE_ALLOW_REMOTE_WITHOUT_KEY=1)";
    expect(await outputWith(opened, warning)).toContain(warning);
    if (outside !== undefined) expect(await reachable(outside, portOf(opened))).toBe(true);
  }, 120_000);
});
