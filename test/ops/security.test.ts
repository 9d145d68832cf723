// API keys on every route, rate limits with Retry-After, metrics that move, and the audit log.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { API_KEYS_UNKNOWN_REFRESH_INTERVAL_MS } from "../../src/api/security.ts";
import { llmConfigFromEnv } from "../../src/llm/registry.ts";
import type { KelpieOptions } from "../../src/server.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { type TestApp, testApp } from "../support/app.ts";
import { type FakeLlm, startFakeLlm } from "../support/fake-llm/server.ts";

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

async function call(method: string, url: string, headers: Record<string, string> = {}, body?: unknown) {
  const res = await t!.kelpie.app.inject({
    method: method as "GET",
    url,
    headers: { ...headers, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    ...(body === undefined ? {} : { payload: JSON.stringify(body) }),
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
      const bare = await call(
        route.method,
        path,
        {},
        route.method === "GET" || route.method === "DELETE" ? undefined : {},
      );
      if (open.includes(route.url.replace(/\/$/, ""))) {
        expect(bare.statusCode, `${route.method} ${route.url}`).not.toBe(401);
        continue;
      }
      expect(bare.statusCode, `${route.method} ${route.url} without a key`).toBe(401);
      expect(JSON.parse(bare.body).detail).toContain("API key");
      const wrong = await call(route.method, path, { authorization: "Bearer nope" });
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
