// Letta's built-in web tools through the fake LLM: fetch_webpage turns a real page into text;
// web_search without an Exa key answers that it is unavailable. fetch_webpage goes through the
// egress policy: loopback, private and metadata addresses are refused in every spelling, also
// after DNS resolution and after a redirect, and a capture server proves nothing reached them.

import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { llmConfigFromEnv } from "../../src/llm/registry.ts";
import { systemResolver } from "../../src/net/egress.ts";
import type { KelpieOptions } from "../../src/server.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { htmlToText, WEB_FETCH_BODY_BYTES_MAX } from "../../src/tools/web-tools.ts";
import { type TestApp, testApp } from "../support/app.ts";
import { type FakeLlm, startFakeLlm } from "../support/fake-llm/server.ts";

let fake: FakeLlm;
let t: TestApp;
let site: Server;
let siteUrl = "";
/** Listens on every local address (IPv4 and IPv6) and counts what reaches it. */
let capture: Server;
let capturePort = 0;
const captured: string[] = [];
/** On 127.0.0.1: answers every request with a redirect to the capture server on 127.0.0.2. */
let redirector: Server;
let redirectorPort = 0;

beforeAll(async () => {
  fake = await startFakeLlm();
  site = createServer((req, res) => {
    if (req.url === "/missing") {
      res.writeHead(404);
      return res.end("site-error-body-secret");
    }
    if (req.url === "/huge") {
      res.writeHead(200, { "content-type": "text/plain" });
      return res.end("x".repeat(WEB_FETCH_BODY_BYTES_MAX + 1_000_000));
    }
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(
      "<html><head><style>p{}</style><script>var x = 1;</script></head><body><h1>Kelpie &amp; friends</h1><p>Seaweed grows fast.</p><ul><li>one</li><li>two</li></ul></body></html>",
    );
  });
  await new Promise<void>((r) => site.listen(0, "127.0.0.1", r));
  const address = site.address();
  siteUrl = `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}`;
  capture = createServer((req, res) => {
    captured.push(`${req.headers.host} ${req.url}`);
    res.end("captured-body-secret");
  });
  await new Promise<void>((r) => capture.listen(0, "::", r));
  capturePort = (capture.address() as AddressInfo).port;
  redirector = createServer((req, res) => {
    res.writeHead(302, { location: `http://127.0.0.2:${capturePort}/after-redirect${req.url}` });
    res.end();
  });
  await new Promise<void>((r) => redirector.listen(0, "127.0.0.1", r));
  redirectorPort = (redirector.address() as AddressInfo).port;
});
afterAll(async () => {
  await fake.close();
  site.close();
  capture.close();
  redirector.close();
});
beforeEach(async () => {
  fake.reset();
  captured.length = 0;
  t = await app();
});
afterEach(async () => {
  await t.kelpie.close();
});

/** An app whose model is the fake LLM (on loopback too, but the operator configured it). */
function app(egress?: KelpieOptions["egress"]): Promise<TestApp> {
  return testApp(new MemoryStorage(), {
    llm: llmConfigFromEnv({ OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` }),
    ...(egress === undefined ? {} : { egress }),
  });
}

/** Runs the test body on another app, then goes back to the default one. */
async function withApp(egress: KelpieOptions["egress"], body: () => Promise<void>): Promise<void> {
  const saved = t;
  t = await app(egress);
  try {
    await body();
  } finally {
    await t.kelpie.close();
    t = saved;
  }
}

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
  it("fetch_webpage returns the page as text, without scripts or styles (the site allowed)", async () => {
    await withApp({ allow: ["127.0.0.1"] }, async () => {
      const ok = await call("fetch_webpage", { url: `${siteUrl}/page` });
      expect(ok.status).toBe("success");
      expect(ok.tool_return).toContain("Kelpie & friends");
      expect(ok.tool_return).toContain("Seaweed grows fast.");
      expect(ok.tool_return).toContain("- one");
      expect(ok.tool_return).not.toContain("var x");
      const missing = await call("fetch_webpage", { url: `${siteUrl}/missing` });
      expect(missing.status).toBe("error");
      expect(missing.tool_return).toContain("404");
      // Status and host only: the foreign page's error text is not repeated.
      expect(missing.tool_return).not.toContain("site-error-body-secret");
      const bad = await call("fetch_webpage", { url: "file:///etc/passwd" });
      expect(bad.status).toBe("error");
      expect(bad.tool_return).toContain("http");
    });
  });

  it("fetch_webpage refuses loopback, unspecified and metadata addresses in every spelling; nothing reaches them", async () => {
    const p = capturePort;
    const urls = [
      `http://127.0.0.1:${p}/dotted`,
      `http://localhost:${p}/name`,
      `http://LOCALHOST.:${p}/name-dot`,
      `http://kelpie.localhost:${p}/sub-localhost`,
      `http://[::1]:${p}/ipv6`,
      `http://[::ffff:127.0.0.1]:${p}/mapped`,
      `http://[::ffff:7f00:1]:${p}/mapped-hex`,
      `http://2130706433:${p}/decimal`,
      `http://0x7f.1:${p}/hex-short`,
      `http://0177.0.0.1:${p}/octal`,
      `http://127.1:${p}/short`,
      `http://0.0.0.0:${p}/unspecified`,
      `http://0:${p}/zero`,
      "http://169.254.169.254/latest/meta-data/",
      "http://[fd00::1]/ula",
      "http://10.0.0.1/private",
    ];
    for (const url of urls) {
      const res = await call("fetch_webpage", { url });
      expect(res.status, url).toBe("error");
      expect(res.tool_return, url).toMatch(
        /refused: it is a (loopback|unspecified|link-local|private) address/,
      );
      expect(res.tool_return, url).toContain("KELPIE_EGRESS_ALLOW");
    }
    expect(captured).toEqual([]);
  });

  it("a host name is checked after resolution: a name that resolves to loopback is refused", async () => {
    const resolve = async (host: string) =>
      host === "rebind.example"
        ? [{ address: "127.0.0.1", family: 4 }]
        : host === "mixed.example"
          ? [
              { address: "93.184.216.34", family: 4 },
              { address: "::1", family: 6 },
            ]
          : systemResolver(host);
    await withApp({ resolve }, async () => {
      for (const host of ["rebind.example", "mixed.example"]) {
        const res = await call("fetch_webpage", { url: `http://${host}:${capturePort}/` });
        expect(res.status, host).toBe("error");
        expect(res.tool_return, host).toMatch(new RegExp(`${host} \\((127\\.0\\.0\\.1|::1)\\) refused`));
      }
    });
    expect(captured).toEqual([]);
  });

  it("every redirect is checked again: an allowed site redirecting to loopback reaches nothing", async () => {
    await withApp({ allow: ["127.0.0.1"] }, async () => {
      const res = await call("fetch_webpage", { url: `http://127.0.0.1:${redirectorPort}/start` });
      expect(res.status).toBe("error");
      expect(res.tool_return).toContain(`127.0.0.2 refused: it is a loopback address`);
    });
    expect(captured).toEqual([]);
  });

  it("KELPIE_EGRESS_ALLOW lets a listed host or CIDR through", async () => {
    for (const allow of [["127.0.0.0/8"], ["localhost"]]) {
      await withApp({ allow }, async () => {
        const host = allow[0] === "localhost" ? "localhost" : "127.0.0.1";
        const res = await call("fetch_webpage", { url: `http://${host}:${capturePort}/allowed` });
        expect(res.status, String(allow)).toBe("success");
        expect(res.tool_return).toBe("captured-body-secret");
      });
    }
    expect(captured.map((c) => c.split(" ")[1])).toEqual(["/allowed", "/allowed"]);
  });

  it("a page larger than WEB_FETCH_BODY_BYTES_MAX is cut, with a marker that says so", async () => {
    await withApp({ allow: ["127.0.0.1"] }, async () => {
      const res = await call("fetch_webpage", { url: `${siteUrl}/huge` });
      expect(res.status).toBe("success");
      expect(res.tool_return).toContain(
        `[truncated by Kelpie: the response is larger than ${WEB_FETCH_BODY_BYTES_MAX} bytes; only the first ${WEB_FETCH_BODY_BYTES_MAX} were read]`,
      );
    });
  });

  it("web_search says clearly that it needs an Exa key", async () => {
    const res = await call("web_search", { query: "kelpie" });
    expect(res.status).toBe("error");
    expect(res.tool_return).toContain("EXA_API_KEY");
  });

  it("htmlToText keeps block structure and decodes entities", () => {
    expect(htmlToText("<p>a &lt;b&gt;</p><p>c</p>")).toBe("a <b>\nc");
    expect(htmlToText("a <!-- c --> b<br/>x  \t\n\n\n\ny &amp;lt; <SCRIPT type=x>bad</SCRIPT >z")).toBe(
      "a  b\nx\n\ny &lt; z",
    );
  });

  it("htmlToText takes linear time on hostile pages (unclosed tags, comments, scripts, blank runs)", () => {
    const size = 200_000;
    for (const page of [
      "<".repeat(size),
      "<!--".repeat(size / 4),
      "<script>".repeat(size / 8),
      `${" ".repeat(size)}x`,
    ]) {
      const started = performance.now();
      htmlToText(page);
      expect(performance.now() - started).toBeLessThan(1_000);
    }
  });
});
