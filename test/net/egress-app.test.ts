// The egress policy and the key rule through the real routes: a model endpoint, an embedding
// endpoint or an MCP server URL that a client names is reached only through the policy, gets no
// key of the server's, and its error bodies are not echoed back. A capture server on loopback
// records every request that reaches it (with its Authorization header) and answers with a body
// that must never come back to the client.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { llmConfigFromEnv } from "../../src/llm/registry.ts";
import type { KelpieOptions } from "../../src/server.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { type TestApp, testApp } from "../support/app.ts";
import { type FakeLlm, startFakeLlm } from "../support/fake-llm/server.ts";

const CANARY_KEY = "sk-canary-4711";
const FOREIGN_BODY = "captured-body-secret";

let fake: FakeLlm;
let capture: Server;
let captureUrl = "";
const captured: { url: string; authorization: string }[] = [];
let t: TestApp;

beforeAll(async () => {
  fake = await startFakeLlm();
  capture = createServer((req, res) => {
    captured.push({ url: req.url ?? "", authorization: req.headers.authorization ?? "" });
    req.resume();
    res.writeHead(500, { "content-type": "text/plain" });
    res.end(FOREIGN_BODY);
  });
  await new Promise<void>((r) => capture.listen(0, "127.0.0.1", r));
  captureUrl = `http://127.0.0.1:${(capture.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await fake.close();
  capture.close();
});
beforeEach(() => {
  fake.reset();
  captured.length = 0;
});
afterEach(async () => {
  await t?.kelpie.close();
});

/** The server's OpenAI is the fake LLM, with a key that must go nowhere else. */
async function app(egress?: KelpieOptions["egress"]): Promise<TestApp> {
  t = await testApp(new MemoryStorage(), {
    llm: llmConfigFromEnv({ OPENAI_API_KEY: CANARY_KEY, OPENAI_BASE_URL: `${fake.url}/v1` }),
    llmRetry: { attemptsMax: 1 },
    ...(egress === undefined ? {} : { egress }),
  });
  return t;
}

const embeddingAt = (endpoint: string) => ({
  embedding_endpoint_type: "openai",
  embedding_endpoint: endpoint,
  embedding_model: "text-embedding-3-small",
  embedding_dim: 1536,
});

describe("secrets go only where the operator sent them", () => {
  it("an embedding endpoint a client names never receives the server's OpenAI key", async () => {
    // Allowed, so the request does reach the capture server: what it carries is the point here.
    await app({ allow: ["127.0.0.1"] });
    const agent = await t.req("POST", "/v1/agents/", {
      name: "leak",
      model: "openai/gpt-4o-mini",
      embedding_config: embeddingAt(`${captureUrl}/v1`),
    });
    expect(agent.status).toBe(200);
    const put = await t.req("POST", `/v1/agents/${agent.body.id}/archival-memory`, { text: "a passage" });
    expect(put.status).toBeGreaterThanOrEqual(400);
    expect(JSON.stringify(put.body)).not.toContain(FOREIGN_BODY);
    expect(captured.length).toBeGreaterThan(0);
    for (const c of captured) expect(c.authorization).not.toContain(CANARY_KEY);
    // The configured endpoint still gets the key, as before.
    const own = await t.req("POST", "/v1/agents/", {
      name: "own",
      model: "openai/gpt-4o-mini",
      embedding_config: embeddingAt("https://api.openai.com/v1"),
    });
    expect((await t.req("POST", `/v1/agents/${own.body.id}/archival-memory`, { text: "mine" })).status).toBe(
      200,
    );
    const toFake = fake.requests.filter((r) => r.protocol === "embeddings");
    expect(toFake.at(-1)?.headers.authorization).toBe(`Bearer ${CANARY_KEY}`);
  });

  it("nor does an agent file whose archive names another embedding endpoint", async () => {
    await app({ allow: ["127.0.0.1"] });
    const made = await t.req("POST", "/v1/agents/", {
      name: "archivist",
      model: "openai/gpt-4o-mini",
      embedding: "openai/text-embedding-3-small",
    });
    expect((await t.req("POST", `/v1/agents/${made.body.id}/archival-memory`, { text: "kept" })).status).toBe(
      200,
    );
    const file = (await t.req("GET", `/v1/agents/${made.body.id}/export`)).body;
    file.archives[0].embedding_config = {
      ...file.archives[0].embedding_config,
      ...embeddingAt(`${captureUrl}/v1`),
    };
    file.agents[0].embedding_config = file.archives[0].embedding_config;
    const form = new FormData();
    form.append("file", new Blob([JSON.stringify(file)]), "agent.af");
    const encoded = new Response(form);
    const res = await t.kelpie.app.inject({
      method: "POST",
      url: "/v1/agents/import",
      payload: Buffer.from(await encoded.arrayBuffer()),
      headers: { "content-type": encoded.headers.get("content-type")! },
    });
    expect(res.body).not.toContain(FOREIGN_BODY);
    expect(captured.length).toBeGreaterThan(0);
    for (const c of captured) expect(c.authorization).not.toContain(CANARY_KEY);
  });

  it("without an allow-list entry a loopback embedding endpoint is refused and sees nothing", async () => {
    await app();
    const agent = await t.req("POST", "/v1/agents/", {
      name: "refused",
      model: "openai/gpt-4o-mini",
      embedding_config: embeddingAt(`${captureUrl}/v1`),
    });
    const put = await t.req("POST", `/v1/agents/${agent.body.id}/archival-memory`, { text: "a passage" });
    expect(put.status).toBe(403);
    expect(put.body.detail).toContain("KELPIE_EGRESS_ALLOW");
    expect(captured).toEqual([]);
  });
});

describe("model endpoints named in an llm_config", () => {
  const llmConfigAt = (endpoint: string) => ({
    model: "gpt-4o-mini",
    model_endpoint_type: "openai",
    model_endpoint: endpoint,
    context_window: 32000,
  });

  it("a private or loopback model_endpoint is refused with a clear error, and nothing reaches it", async () => {
    await app();
    for (const endpoint of ["http://10.0.0.1:9/v1", "http://169.254.169.254/v1", `${captureUrl}/v1`]) {
      const agent = await t.req("POST", "/v1/agents/", { name: "m", llm_config: llmConfigAt(endpoint) });
      expect(agent.status, endpoint).toBe(200);
      const res = await t.req("POST", `/v1/agents/${agent.body.id}/messages`, {
        messages: [{ role: "user", content: "hi" }],
      });
      expect(res.status, endpoint).toBe(403);
      expect(res.body.detail, endpoint).toMatch(/refused: it is a (private|link-local|loopback) address/);
    }
    expect(captured).toEqual([]);
  });

  it("an allowed one is called without the server's key, and its error body is not echoed", async () => {
    await app({ allow: ["127.0.0.1"] });
    const agent = await t.req("POST", "/v1/agents/", {
      name: "m",
      llm_config: llmConfigAt(`${captureUrl}/v1`),
    });
    const res = await t.req("POST", `/v1/agents/${agent.body.id}/messages`, {
      messages: [{ role: "user", content: "hi" }],
    });
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(JSON.stringify(res.body)).toContain("500");
    expect(JSON.stringify(res.body)).not.toContain(FOREIGN_BODY);
    expect(captured.length).toBeGreaterThan(0);
    for (const c of captured) expect(c.authorization).not.toContain(CANARY_KEY);
  });
});

describe("MCP server URLs", () => {
  it("a loopback server_url is refused (403 saying how to allow it) and nothing reaches it", async () => {
    await app();
    for (const type of ["streamable_http", "sse"]) {
      const created = await t.req("POST", "/v1/mcp-servers/", {
        server_name: `loop-${type}`,
        config: { mcp_server_type: type, server_url: `${captureUrl}/mcp`, auth_token: "tok-secret" },
      });
      const listed =
        created.status === 200 ? await t.req("GET", `/v1/mcp-servers/${created.body.id}/tools`) : created;
      expect(listed.status, type).toBe(403);
      expect(listed.body.detail, type).toContain("KELPIE_EGRESS_ALLOW");
    }
    expect(captured).toEqual([]);
  });

  it("allowed, its error body is still not echoed", async () => {
    await app({ allow: ["127.0.0.1"] });
    const created = await t.req("POST", "/v1/mcp-servers/", {
      server_name: "loop",
      config: { mcp_server_type: "streamable_http", server_url: `${captureUrl}/mcp` },
    });
    const listed =
      created.status === 200 ? await t.req("GET", `/v1/mcp-servers/${created.body.id}/tools`) : created;
    expect(listed.status).toBe(502);
    expect(JSON.stringify(listed.body)).not.toContain(FOREIGN_BODY);
    expect(captured.length).toBeGreaterThan(0);
  });
});
