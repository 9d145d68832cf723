// Node tools at the namespace level (system node under bubblewrap), the per-tool sandbox level in
// metadata_ (with 422s for bad ones), and the server defaults KELPIE_SANDBOX_JS / KELPIE_SANDBOX_PYTHON.
import { execFileSync } from "node:child_process";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ConfigError, configFromEnv } from "../../src/config.ts";
import { llmConfigFromEnv } from "../../src/llm/registry.ts";
import type { KelpieOptions } from "../../src/server.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import type { SandboxRequest } from "../../src/tools/sandbox/limits.ts";
import {
  closeSandboxPool,
  runSandboxed,
  SANDBOX_POOL_SIZE,
  SANDBOX_UID_BASE,
  SANDBOX_UID_COUNT,
  sandboxPoolIdleCount,
  sandboxProblem,
} from "../../src/tools/sandbox/namespace.ts";
import { type TestApp, testApp } from "../support/app.ts";
import { type FakeLlm, startFakeLlm } from "../support/fake-llm/server.ts";

const RUNNING_AS_ROOT = process.getuid?.() === 0;
/** A contained spawn bomb ends well inside the sandbox's 10 s wall-clock limit. */
const FORK_BOMB_MS_MAX = 5_000;
/** Killed sandboxes are reaped by the host's init, which may take a moment. */
const REAP_WAIT_MS_MAX = 5_000;
const REAP_POLL_MS = 100;
const SECRET = "kelpie-host-only-secret";

let fake: FakeLlm;
let host: Server;
let hostPort: number;
let t: TestApp | undefined;

beforeAll(async () => {
  fake = await startFakeLlm();
  // A server on the host's loopback: a sandboxed tool must not reach it.
  host = createServer((_req, res) => res.end(SECRET));
  await new Promise<void>((resolve) => host.listen(0, "127.0.0.1", resolve));
  hostPort = (host.address() as AddressInfo).port;
});
afterAll(async () => {
  await fake.close();
  await new Promise((resolve) => host.close(resolve));
});
afterEach(async () => {
  await t?.kelpie.close();
  t = undefined;
});

async function app(options: KelpieOptions = {}): Promise<TestApp> {
  t = await testApp(new MemoryStorage(), {
    llm: llmConfigFromEnv({ OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` }),
    ...options,
  });
  return t;
}

/** POST /v1/tools/run of a JS function `probe` with the given body, at the namespace level. */
async function runJs(a: TestApp, body: string, level: string | undefined = "namespace") {
  return (
    await a.req("POST", "/v1/tools/run", {
      source_code: `async function probe() {\n${body}\n}`,
      source_type: "javascript",
      args: {},
      ...(level === undefined ? {} : { metadata_: { sandbox: level } }),
    })
  ).body;
}

const JS_DIVIDE = `/**
 * Divide.
 * @param {number} a - dividend
 * @param {number} b - divisor
 */
function divide(a, b) {
  console.log("dividing", a, "by", b);
  // The isolate has no process (nor require): the same tool runs at both levels.
  const node = typeof process === "undefined" ? undefined : process;
  return { quotient: a / b, token: node?.env.API_TOKEN, node: typeof require, pid: node?.pid };
}
`;
const TS_GREET = `interface Greeting { text: string; length: number }

/**
 * Greet someone.
 * @param {string} name - who
 * @param {number} times - how often
 */
export function greet(name: string, times: number): Greeting {
  const text: string = Array.from({ length: times }, () => \`hi \${name}\`).join(" ");
  return { text, length: text.length };
}
`;
const PY_ADD = `def add(a: int, b: int) -> int:
    """Add.

    Args:
        a: first
        b: second
    """
    return a + b
`;

function sandboxUidProcesses(): string[] {
  return execFileSync("ps", ["-eo", "uid=,stat=,comm="], { encoding: "utf8" })
    .trim()
    .split("\n")
    .filter((line) => {
      const [uid, stat] = line.trim().split(/\s+/);
      const n = Number(uid);
      return !stat!.startsWith("Z") && n >= SANDBOX_UID_BASE && n < SANDBOX_UID_BASE + SANDBOX_UID_COUNT;
    });
}

describe("node tools at the namespace level", () => {
  it("finds a node that runs inside the sandbox", () => {
    expect(sandboxProblem("node", "namespace")).toBeNull();
  });

  it("gives each run a fresh pooled sandbox (as its own uid when root): nothing carries over", async () => {
    const tool = (source: string): SandboxRequest => ({
      language: "javascript",
      source,
      functionName: "probe",
      args: {},
      parameterNames: [],
      env: {},
    });
    const writer = tool(`var MODULE_STATE = "fresh";
function probe() {
  MODULE_STATE = "changed";
  globalThis.KELPIE_LEAK = "leaked";
  process.env.KELPIE_LEAK = "leaked";
  require("node:fs").writeFileSync("/work/leak.txt", "leaked");
  require("node:fs").writeFileSync("/tmp/leak.txt", "leaked");
  return "wrote";
}`);
    const reader = tool(`function probe() {
  const fs = require("node:fs");
  return [
    typeof MODULE_STATE, globalThis.KELPIE_LEAK ?? "absent", process.env.KELPIE_LEAK ?? "absent",
    fs.existsSync("/work/leak.txt"), fs.existsSync("/tmp/leak.txt"), process.getuid(),
  ];
}`);
    await runSandboxed(reader, "namespace"); // the first run starts cold and fills the pool
    await new Promise((resolve) => setImmediate(resolve));
    expect(sandboxPoolIdleCount("namespace", "node")).toBe(SANDBOX_POOL_SIZE);
    const uids = new Set<number>();
    for (let round = 0; round < 3; round++) {
      expect(await runSandboxed(writer, "namespace")).toMatchObject({ ok: true, value: "wrote" });
      await new Promise((resolve) => setImmediate(resolve));
      const seen = await runSandboxed(reader, "namespace");
      const [state, global, env, work, tmp, uid] = JSON.parse(seen.value);
      expect([state, global, env, work, tmp]).toEqual(["undefined", "absent", "absent", false, false]);
      uids.add(uid);
      await new Promise((resolve) => setImmediate(resolve));
    }
    if (RUNNING_AS_ROOT) {
      for (const uid of uids) expect(uid).toBeGreaterThanOrEqual(SANDBOX_UID_BASE);
    }
    await closeSandboxPool();
    expect(sandboxPoolIdleCount("namespace", "node")).toBe(0);
  });

  it("runs a JS and a TS tool under node, arguments by position, env vars and output captured", async () => {
    const a = await app();
    const js = (
      await a.req("POST", "/v1/tools/run", {
        source_code: JS_DIVIDE,
        source_type: "javascript",
        args: { b: 4, a: 10 }, // keyword order differs from the parameter order
        env_vars: { API_TOKEN: "t0ken" },
        metadata_: { sandbox: "namespace" },
      })
    ).body;
    expect(js).toMatchObject({ status: "success", sandbox: "namespace" });
    // require exists (node, not the isolate) and the tool is a low pid of its own PID namespace.
    const value = JSON.parse(js.func_return);
    expect(value).toMatchObject({ quotient: 2.5, token: "t0ken", node: "function" });
    expect(value.pid).toBeLessThan(10);
    expect(js.stdout).toEqual(["dividing 10 by 4\n"]);
    const ts = (
      await a.req("POST", "/v1/tools/run", {
        source_code: TS_GREET,
        source_type: "typescript",
        args: { name: "kelpie", times: 2 },
        metadata_: { sandbox: "namespace" },
      })
    ).body;
    expect(ts).toMatchObject({ status: "success", sandbox: "namespace" });
    expect(JSON.parse(ts.func_return)).toEqual({ text: "hi kelpie hi kelpie", length: 19 });
    const broken = (
      await a.req("POST", "/v1/tools/run", {
        source_code: "export function bad(x: number): number { return x +; }",
        source_type: "typescript",
        args: { x: 1 },
        metadata_: { sandbox: "namespace" },
      })
    ).body;
    expect(broken).toMatchObject({ status: "error", sandbox: "namespace" });
    expect(broken.func_return).toMatch(/could not be compiled/);
  });

  it("contains every escape probe and the server keeps serving", async () => {
    const a = await app();
    const passwd = await runJs(a, 'return require("node:fs").readFileSync("/etc/passwd", "utf8");');
    expect(passwd.status).toBe("error");
    expect(JSON.stringify(passwd)).not.toContain("root:x:");
    const listing = await runJs(a, 'return require("node:fs").readdirSync("/").join(",");');
    expect(listing.func_return).not.toMatch(/etc|root|home/);
    const write = await runJs(a, 'require("node:fs").writeFileSync("/usr/evil", "x"); return "WROTE";');
    expect(write.status).toBe("error");
    const net = await runJs(
      a,
      `const res = await fetch("http://127.0.0.1:${hostPort}/"); return await res.text();`,
    );
    expect(net.status).toBe("error");
    expect(JSON.stringify(net)).not.toContain(SECRET);
    const http = await runJs(
      a,
      `return await new Promise((resolve, reject) => require("node:http")
        .get("http://127.0.0.1:${hostPort}/", (res) => { let body = ""; res.on("data", (c) => (body += c)); res.on("end", () => resolve(body)); })
        .on("error", reject));`,
    );
    expect(http.status).toBe("error");
    expect(http.func_return).toMatch(/ECONNREFUSED|ENETUNREACH/);
    const loop = await runJs(a, "while (true) {}");
    expect(loop).toMatchObject({ status: "error", sandbox: "namespace" });
    expect(loop.func_return).toMatch(/killed|limit/);
    const buffer = await runJs(a, 'Buffer.alloc(4 * 1024 ** 3); return "ALLOCATED";');
    expect(buffer.status).toBe("error");
    expect(buffer.func_return).toMatch(/memory limit/);
    const heap = await runJs(
      a,
      'const a = []; while (true) a.push(new Array(1e6).fill(1)); return "ALLOCATED";',
    );
    expect(heap.status).toBe("error");
    expect(heap.func_return).toMatch(/memory|heap/i);
    // Each spawned shell forks without end; the process limit (per-sandbox uid when root) refuses
    // most spawns, and everything dies with the sandbox when the result is in.
    const bombStarted = performance.now();
    const bomb = await runJs(
      a,
      `const { spawn } = require("node:child_process");
  let spawned = 0, refused = 0;
  for (let i = 0; i < 1000; i++) {
    try {
      const child = spawn("/bin/sh", ["-c", "b() { b | b & }; b"], { stdio: "ignore", detached: true });
      child.on("error", () => refused++);
      spawned++;
    } catch { refused++; }
  }
  await new Promise((resolve) => setTimeout(resolve, 500));
  return { spawned, refused };`,
    );
    expect(performance.now() - bombStarted).toBeLessThan(FORK_BOMB_MS_MAX);
    expect(bomb.status).toBe("success");
    expect(JSON.parse(bomb.func_return).refused).toBeGreaterThan(0);
    const parent = await runJs(a, 'process.kill(process.ppid, "SIGKILL"); return "ok";');
    expect(parent).toBeDefined();
    expect((await runJs(a, 'return "still here";')).func_return).toBe("still here");
    expect((await a.req("GET", "/health")).status).toBe(200);
    if (RUNNING_AS_ROOT) {
      await closeSandboxPool();
      for (let waited = 0; waited < REAP_WAIT_MS_MAX && sandboxUidProcesses().length > 0; ) {
        await new Promise((resolve) => setTimeout(resolve, REAP_POLL_MS));
        waited += REAP_POLL_MS;
      }
      expect(sandboxUidProcesses()).toEqual([]);
    }
  });
});

describe("sandbox level per tool", () => {
  it("takes the level from the tool's metadata_, and the level used reaches the tool return", async () => {
    const a = await app();
    const pinned = await a.req("POST", "/v1/tools/", {
      source_code: JS_DIVIDE,
      source_type: "javascript",
      metadata_: { sandbox: "namespace", owner: "ops" },
    });
    expect(pinned.status).toBe(200);
    expect(pinned.body.metadata_).toEqual({ sandbox: "namespace", owner: "ops" });
    const plain = await a.req("POST", "/v1/tools/", {
      source_code: TS_GREET,
      source_type: "typescript",
    });
    const agent = (
      await a.req("POST", "/v1/agents/", {
        model: "openai/gpt-4o-mini",
        tool_ids: [pinned.body.id, plain.body.id],
      })
    ).body;
    fake.script((req) => {
      const i = req.messages.map((m) => m.role).lastIndexOf("user");
      const tool = req.messages.slice(i + 1).find((m) => m.role === "tool");
      if (tool) return { toolCalls: [{ name: "send_message", args: { message: `result ${tool.text}` } }] };
      return { toolCalls: [{ name: "divide", args: { a: 9, b: 3, request_heartbeat: true } }] };
    });
    const turn = await a.req("POST", `/v1/agents/${agent.id}/messages`, { input: "divide" });
    const toolReturn = turn.body.messages.find((m: any) => m.message_type === "tool_return_message");
    expect(toolReturn.status).toBe("success");
    expect(JSON.parse(toolReturn.tool_return).quotient).toBe(3);
    expect(toolReturn.stdout[0]).toBe("[sandbox: namespace]");
    const direct = await a.req("POST", `/v1/agents/${agent.id}/tools/greet/run`, {
      args: { name: "x", times: 1 },
    });
    expect(direct.body).toMatchObject({ status: "success", sandbox: "isolate" });
    // PATCH moves the pinned tool to the isolate; the same call now reports it.
    const moved = await a.req("PATCH", `/v1/tools/${pinned.body.id}`, { metadata_: { sandbox: "isolate" } });
    expect(moved.status).toBe(200);
    const again = await a.req("POST", `/v1/agents/${agent.id}/tools/divide/run`, { args: { a: 1, b: 2 } });
    expect(again.body).toMatchObject({ status: "success", sandbox: "isolate" });
    expect(JSON.parse(again.body.func_return)).toMatchObject({ quotient: 0.5, node: "undefined" });
  });

  it("rejects an unknown level, or one wrong for the language, with a 422 naming the field", async () => {
    const a = await app();
    const unknown = await a.req("POST", "/v1/tools/", {
      source_code: JS_DIVIDE,
      source_type: "javascript",
      metadata_: { sandbox: "docker" },
    });
    expect(unknown.status).toBe(422);
    expect(unknown.body.detail[0].loc).toEqual(["body", "metadata_", "sandbox"]);
    expect(unknown.body.detail[0].msg).toMatch(/isolate, wasm, namespace, vm, process/);
    const pyIsolate = await a.req("POST", "/v1/tools/", {
      source_code: PY_ADD,
      source_type: "python",
      metadata_: { sandbox: "isolate" },
    });
    expect(pyIsolate.status).toBe(422);
    expect(pyIsolate.body.detail[0].loc).toEqual(["body", "metadata_", "sandbox"]);
    expect(pyIsolate.body.detail[0].msg).toMatch(/JavaScript and TypeScript only/);
    const notObject = await a.req("POST", "/v1/tools/", {
      source_code: JS_DIVIDE,
      source_type: "javascript",
      metadata_: "namespace",
    });
    expect(notObject.status).toBe(422);
    expect(notObject.body.detail[0].loc).toEqual(["body", "metadata_"]);
    const run = await a.req("POST", "/v1/tools/run", {
      source_code: JS_DIVIDE,
      source_type: "javascript",
      args: { a: 1, b: 1 },
      metadata_: { sandbox: 3 },
    });
    expect(run.status).toBe(422);
    // A JS tool pinned to the isolate cannot become a Python tool without a new level.
    const js = await a.req("POST", "/v1/tools/", {
      source_code: JS_DIVIDE,
      source_type: "javascript",
      metadata_: { sandbox: "isolate" },
    });
    expect(js.status).toBe(200);
    const toPython = await a.req("PATCH", `/v1/tools/${js.body.id}`, {
      source_code: PY_ADD,
      source_type: "python",
    });
    expect(toPython.status).toBe(422);
    const fixed = await a.req("PATCH", `/v1/tools/${js.body.id}`, {
      source_code: PY_ADD,
      source_type: "python",
      metadata_: { sandbox: "namespace" },
    });
    expect(fixed.status).toBe(200);
  });

  it("never falls back: a level the server lacks is an error naming what is missing", async () => {
    const closed = await app();
    const denied = (
      await closed.req("POST", "/v1/tools/run", {
        source_code: PY_ADD,
        source_type: "python",
        args: { a: 1, b: 2 },
        metadata_: { sandbox: "process" },
      })
    ).body;
    expect(denied).toMatchObject({ status: "error", sandbox: "process" });
    expect(denied.func_return).toMatch(/KELPIE_SANDBOX_ALLOW_PROCESS=1/);
    expect(denied.func_return).toMatch(/tool's metadata/);
    const deniedJs = await runJs(closed, "return 1;", "process");
    expect(deniedJs).toMatchObject({ status: "error", sandbox: "process" });
    await closed.kelpie.close();
    const open = await app({ sandboxAllowProcess: true });
    const allowed = (
      await open.req("POST", "/v1/tools/run", {
        source_code: PY_ADD,
        source_type: "python",
        args: { a: 1, b: 2 },
        metadata_: { sandbox: "process" },
      })
    ).body;
    expect(allowed).toMatchObject({ status: "success", func_return: "3", sandbox: "process" });
    const allowedJs = await runJs(open, "return typeof require;", "process");
    expect(allowedJs).toMatchObject({ status: "success", func_return: "function", sandbox: "process" });
  });
});

describe("server default level per language", () => {
  it("reads KELPIE_SANDBOX_JS and KELPIE_SANDBOX_PYTHON, rejecting bad values", () => {
    expect(configFromEnv({}).sandboxDefaults).toEqual({ javascript: "isolate", python: "wasm" });
    expect(
      configFromEnv({ KELPIE_SANDBOX_JS: "Namespace", KELPIE_SANDBOX_PYTHON: "process" }).sandboxDefaults,
    ).toEqual({ javascript: "namespace", python: "process" });
    expect(() => configFromEnv({ KELPIE_SANDBOX_JS: "docker" })).toThrow(ConfigError);
    expect(() => configFromEnv({ KELPIE_SANDBOX_JS: "docker" })).toThrow(/KELPIE_SANDBOX_JS/);
    expect(() => configFromEnv({ KELPIE_SANDBOX_PYTHON: "isolate" })).toThrow(/KELPIE_SANDBOX_PYTHON/);
  });

  it("runs tools that ask for no level at the configured default; a tool's own level still wins", async () => {
    const a = await app({
      sandboxDefaults: configFromEnv({ KELPIE_SANDBOX_JS: "namespace" }).sandboxDefaults,
    });
    expect((await a.req("GET", "/v1/health/")).body.sandbox.defaults).toEqual({
      javascript: "namespace",
      python: "wasm",
    });
    const js = await runJs(a, "return typeof require;", undefined);
    expect(js).toMatchObject({ status: "success", func_return: "function", sandbox: "namespace" });
    const ts = (
      await a.req("POST", "/v1/tools/run", {
        source_code: TS_GREET,
        source_type: "typescript",
        args: { name: "a", times: 1 },
      })
    ).body;
    expect(ts).toMatchObject({ status: "success", sandbox: "namespace" });
    const pinned = await runJs(a, "return typeof require;", "isolate");
    expect(pinned).toMatchObject({ status: "success", func_return: "undefined", sandbox: "isolate" });
  });

  it("a default the server cannot provide fails the tool clearly and shows in the health status", async () => {
    const a = await app({
      sandboxDefaults: configFromEnv({ KELPIE_SANDBOX_PYTHON: "process" }).sandboxDefaults,
    });
    const health = (await a.req("GET", "/v1/health/")).body;
    expect(health.sandbox.problems.join("\n")).toMatch(
      /KELPIE_SANDBOX_PYTHON=process: .*KELPIE_SANDBOX_ALLOW_PROCESS=1/,
    );
    const py = (
      await a.req("POST", "/v1/tools/run", {
        source_code: PY_ADD,
        source_type: "python",
        args: { a: 1, b: 2 },
      })
    ).body;
    expect(py).toMatchObject({ status: "error", sandbox: "process" });
    expect(py.func_return).toMatch(/server default KELPIE_SANDBOX_PYTHON/);
    expect(py.func_return).toMatch(/KELPIE_SANDBOX_ALLOW_PROCESS=1/);
  });
});
