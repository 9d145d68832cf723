// Custom tools: schemas derived from source, an agent calling a Python and a JS tool through the
// model, and escape probes at the isolate (JS), wasm (Python in WebAssembly) and namespace (Python,
// bubblewrap) levels.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { llmConfigFromEnv } from "../../src/llm/registry.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { namespaceAvailable, sandboxProblem } from "../../src/tools/sandbox/namespace.ts";
import { type TestApp, testApp } from "../support/app.ts";
import { type FakeLlm, startFakeLlm } from "../support/fake-llm/server.ts";

let fake: FakeLlm;
let t: TestApp;
beforeAll(async () => {
  fake = await startFakeLlm();
});
afterAll(async () => {
  await fake.close();
});
beforeEach(async () => {
  t = await testApp(new MemoryStorage(), {
    llm: llmConfigFromEnv({ OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` }),
  });
});
afterEach(async () => {
  await t.kelpie.close();
});

const PY_ADD = `def add_numbers(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: the first number
        b: the second number

    Returns:
        the sum
    """
    return a + b
`;
const JS_SHOUT = `/**
 * Shout a word.
 * @param {string} word - the word to shout
 * @returns {string}
 */
function shout(word) { return word.toUpperCase() + "!"; }
`;

/** A contained fork bomb ends well inside the sandbox's 10 s wall-clock limit. */
const FORK_BOMB_MS_MAX = 5_000;

/** Runs a Python probe at the server's default Python level (wasm unless the app says otherwise). */
const runPy = async (body: string) =>
  (
    await t.req("POST", "/v1/tools/run", {
      source_code: `def probe() -> str:\n    """Probe."""\n${body}\n`,
      source_type: "python",
      args: {},
    })
  ).body;
/** Restarts the app with `python` as the default Python level. */
const withPythonDefault = async (python: "wasm" | "namespace") => {
  await t.kelpie.close();
  t = await testApp(new MemoryStorage(), { sandboxDefaults: { javascript: "isolate", python } });
};
const runJs = async (body: string) =>
  (
    await t.req("POST", "/v1/tools/run", {
      source_code: `function probe() {\n${body}\n}`,
      source_type: "javascript",
      args: {},
    })
  ).body;

describe("custom tools", () => {
  it("the server says which sandbox levels it has", async () => {
    expect(namespaceAvailable()).toBe(true); // CI installs bubblewrap; without it this says so.
    const health = (await t.req("GET", "/v1/health/")).body;
    // vm where runsc is installed (vm-sandbox.test.ts needs it; this test does not).
    const vm = sandboxProblem("python", "vm") === null ? ["vm"] : [];
    expect(health.sandbox.levels).toEqual(["isolate", "wasm", "namespace", ...vm]);
    expect(health.sandbox.defaults).toEqual({ javascript: "isolate", python: "wasm" });
  });

  it("derives schemas, and an agent calls a Python and a JS tool through the model", async () => {
    const py = await t.req("POST", "/v1/tools/", { source_code: PY_ADD, source_type: "python" });
    expect(py.status).toBe(200);
    expect(py.body).toMatchObject({ name: "add_numbers", tool_type: "custom", source_type: "python" });
    expect(py.body.json_schema.description).toBe("Add two numbers.");
    expect(py.body.json_schema.parameters).toEqual({
      type: "object",
      properties: {
        a: { type: "integer", description: "the first number" },
        b: { type: "integer", description: "the second number" },
      },
      required: ["a", "b"],
    });
    const js = await t.req("POST", "/v1/tools/", { source_code: JS_SHOUT, source_type: "javascript" });
    expect(js.body.json_schema.parameters.properties.word).toEqual({
      type: "string",
      description: "the word to shout",
    });
    const agent = (
      await t.req("POST", "/v1/agents/", { model: "openai/gpt-4o-mini", tool_ids: [py.body.id, js.body.id] })
    ).body;
    fake.script((req) => {
      const last = [...req.messages].reverse().find((m) => m.role === "user")?.text ?? "";
      const i = req.messages.map((m) => m.role).lastIndexOf("user");
      const tool = req.messages.slice(i + 1).find((m) => m.role === "tool");
      if (tool) return { toolCalls: [{ name: "send_message", args: { message: `result ${tool.text}` } }] };
      return last === "add"
        ? { toolCalls: [{ name: "add_numbers", args: { a: 20, b: 22, request_heartbeat: true } }] }
        : { toolCalls: [{ name: "shout", args: { word: "kelpie", request_heartbeat: true } }] };
    });
    const added = await t.req("POST", `/v1/agents/${agent.id}/messages`, { input: "add" });
    const addReturn = added.body.messages.find((m: any) => m.message_type === "tool_return_message");
    expect(addReturn).toMatchObject({ status: "success", tool_return: "42" });
    expect(addReturn.stdout[0]).toBe("[sandbox: wasm]");
    const shouted = await t.req("POST", `/v1/agents/${agent.id}/messages`, { input: "shout" });
    const shoutReturn = shouted.body.messages.find((m: any) => m.message_type === "tool_return_message");
    expect(shoutReturn).toMatchObject({ status: "success", tool_return: "KELPIE!" });
    expect(shoutReturn.stdout[0]).toBe("[sandbox: isolate]");
    const direct = await t.req("POST", `/v1/agents/${agent.id}/tools/add_numbers/run`, {
      args: { a: 1, b: 2 },
    });
    expect(direct.body).toMatchObject({ status: "success", func_return: "3", sandbox: "wasm" });
  });

  it("passes the agent's tool environment variables in for that run only", async () => {
    const tool = (
      await t.req("POST", "/v1/tools/", {
        source_code:
          'import os\n\ndef secret() -> str:\n    """Secret."""\n    return os.environ.get("API_TOKEN", "none")\n',
        source_type: "python",
      })
    ).body;
    const agent = (
      await t.req("POST", "/v1/agents/", {
        model: "openai/gpt-4o-mini",
        tool_ids: [tool.id],
        tool_exec_environment_variables: [{ key: "API_TOKEN", value: "t0ken" }],
      })
    ).body;
    expect(
      (await t.req("POST", `/v1/agents/${agent.id}/tools/secret/run`, { args: {} })).body.func_return,
    ).toBe("t0ken");
    expect(
      (
        await t.req("POST", "/v1/tools/run", {
          source_code: tool.source_code,
          source_type: "python",
          args: {},
        })
      ).body.func_return,
    ).toBe("none");
  });

  it("manages tools: upsert by name, patch, count, delete, and clear 422s for bad source", async () => {
    const first = (await t.req("PUT", "/v1/tools/", { source_code: PY_ADD, source_type: "python" })).body;
    const again = (
      await t.req("PUT", "/v1/tools/", {
        source_code: PY_ADD.replace("a + b", "b + a"),
        source_type: "python",
        tags: ["math"],
      })
    ).body;
    expect(again.id).toBe(first.id);
    expect(again.tags).toEqual(["math"]);
    const patched = (await t.req("PATCH", `/v1/tools/${first.id}`, { return_char_limit: 10 })).body;
    expect(patched.return_char_limit).toBe(10);
    expect(
      (await t.req("POST", "/v1/tools/", { source_code: "def broken(:\n", source_type: "python" })).status,
    ).toBe(422);
    expect(
      (await t.req("POST", "/v1/tools/", { source_code: "const x = 1;", source_type: "javascript" })).status,
    ).toBe(422);
    expect((await t.req("POST", "/v1/tools/", { source_code: PY_ADD, source_type: "cobol" })).status).toBe(
      422,
    );
    expect((await t.req("DELETE", `/v1/tools/${first.id}`)).status).toBe(200);
    expect((await t.req("GET", `/v1/tools/${first.id}`)).status).toBe(404);
  });
});

describe("escape probes", () => {
  it("namespace level (Python under bubblewrap) contains every probe and the server keeps serving", async () => {
    await withPythonDefault("namespace");
    expect(JSON.stringify(await runPy('    return open("/etc/passwd").read()'))).not.toContain("root:x:");
    expect(JSON.stringify(await runPy("    import os\n    return str(os.listdir('/'))"))).not.toMatch(
      /kelpie|\.kelpie|root/,
    );
    const net = await runPy(
      '    import socket\n    socket.create_connection(("127.0.0.1", 5432), timeout=2)\n    return "CONNECTED"',
    );
    expect(net.status).toBe("error");
    const write = await runPy('    open("/usr/evil", "w").write("x")\n    return "WROTE"');
    expect(write.status).toBe("error");
    const loop = await runPy("    while True:\n        pass");
    expect(loop.status).toBe("error");
    expect(loop.func_return).toMatch(/killed|limit/);
    const hog = await runPy('    x = bytearray(4 * 1024 * 1024 * 1024)\n    return "ALLOCATED"');
    expect(hog.func_return).not.toBe("ALLOCATED");
    // The process limit holds even when the server is root (sandboxes drop to their own uid), so the
    // bomb ends fast, well before the wall-clock limit, instead of exhausting the machine.
    const bombStarted = performance.now();
    const bomb = await runPy(
      "    import os\n    for _ in range(1000):\n        os.fork()\n    return 'FORKED'",
    );
    expect(performance.now() - bombStarted).toBeLessThan(FORK_BOMB_MS_MAX);
    expect(bomb.status).toBe("error");
    expect(bomb.func_return).not.toBe("FORKED");
    const huge = await runPy('    print("x" * (4 * 1024 * 1024))\n    return "done"');
    expect(huge.stdout.join("").length + huge.func_return.length).toBeLessThan(5 * 1024 * 1024);
    const parent = await runPy(
      "    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n    return 'ok'",
    );
    expect(parent).toBeDefined();
    expect((await t.req("GET", "/health")).status).toBe(200);
  });

  it("isolate level (JS in a V8 isolate) contains every probe", async () => {
    expect((await runJs("return typeof require + typeof process + typeof fetch;")).func_return).toBe(
      "undefinedundefinedundefined",
    );
    const loop = await runJs("while (true) {}");
    expect(loop).toMatchObject({ status: "error", sandbox: "isolate" });
    expect(loop.func_return).toMatch(/Timeout/);
    const hog = await runJs("const a = []; while (true) a.push(new Array(1e6).fill(1));");
    expect(hog.status).toBe("error");
    expect(hog.func_return).toMatch(/memory/i);
    expect((await runJs('return "ok";')).func_return).toBe("ok");
    expect((await t.req("GET", "/health")).status).toBe(200);
  });
});
