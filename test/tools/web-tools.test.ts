// Letta's built-in web tools through the fake LLM: fetch_webpage turns a real page into text;
// web_search without an Exa key answers that it is unavailable.
import { createServer, type Server } from "node:http";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { llmConfigFromEnv } from "../../src/llm/registry.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { htmlToText } from "../../src/tools/web-tools.ts";
import { type TestApp, testApp } from "../support/app.ts";
import { type FakeLlm, startFakeLlm } from "../support/fake-llm/server.ts";

let fake: FakeLlm;
let t: TestApp;
let site: Server;
let siteUrl = "";

beforeAll(async () => {
  fake = await startFakeLlm();
  site = createServer((req, res) => {
    if (req.url === "/missing") {
      res.writeHead(404);
      return res.end("no");
    }
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(
      "<html><head><style>p{}</style><script>var x = 1;</script></head><body><h1>Kelpie &amp; friends</h1><p>Seaweed grows fast.</p><ul><li>one</li><li>two</li></ul></body></html>",
    );
  });
  await new Promise<void>((r) => site.listen(0, "127.0.0.1", r));
  const address = site.address();
  siteUrl = `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}`;
});
afterAll(async () => {
  await fake.close();
  site.close();
});
beforeEach(async () => {
  fake.reset();
  t = await testApp(new MemoryStorage(), {
    llm: llmConfigFromEnv({ OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` }),
  });
});
afterEach(async () => {
  await t.kelpie.close();
});

async function call(tool: string, args: object): Promise<{ status: string; tool_return: string }> {
  fake.script((req) =>
    req.messages.at(-1)?.role === "tool"
      ? { toolCalls: [{ name: "send_message", args: { message: "done" } }] }
      : { toolCalls: [{ name: tool, args }] },
  );
  const agent = (await t.req("POST", "/v1/agents/", { model: "openai/gpt-4o-mini", tools: [tool] })).body;
  const res = await t.req("POST", `/v1/agents/${agent.id}/messages`, {
    messages: [{ role: "user", content: "go" }],
  });
  expect(res.status).toBe(200);
  return res.body.messages.find((m: any) => m.message_type === "tool_return_message");
}

describe("web tools", () => {
  it("fetch_webpage returns the page as text, without scripts or styles", async () => {
    const ok = await call("fetch_webpage", { url: `${siteUrl}/page` });
    expect(ok.status).toBe("success");
    expect(ok.tool_return).toContain("Kelpie & friends");
    expect(ok.tool_return).toContain("Seaweed grows fast.");
    expect(ok.tool_return).toContain("- one");
    expect(ok.tool_return).not.toContain("var x");
    const missing = await call("fetch_webpage", { url: `${siteUrl}/missing` });
    expect(missing.status).toBe("error");
    expect(missing.tool_return).toContain("404");
    const bad = await call("fetch_webpage", { url: "file:///etc/passwd" });
    expect(bad.status).toBe("error");
    expect(bad.tool_return).toContain("http");
  });

  it("web_search says clearly that it needs an Exa key", async () => {
    const res = await call("web_search", { query: "kelpie" });
    expect(res.status).toBe("error");
    expect(res.tool_return).toContain("EXA_API_KEY");
  });

  it("htmlToText keeps block structure and decodes entities", () => {
    expect(htmlToText("<p>a &lt;b&gt;</p><p>c</p>")).toBe("a <b>\nc");
  });
});
