// The wasm level: Python in Pyodide inside a bare V8 isolate. Escape probes (host files, the
// server's data dir, sockets, processes, memory, time, output), nothing carried over between runs,
// and the server's event loop free while an interpreter boots.
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SANDBOX_OUTPUT_BYTES_MAX } from "../../src/tools/sandbox/limits.ts";
import {
  closeWasmPool,
  runWasm,
  WASM_MEMORY_BYTES_MAX,
  wasmPoolCount,
  withMemoryMaximum,
} from "../../src/tools/sandbox/wasm.ts";
import { testApp } from "../support/app.ts";

const run = (body: string, env: Record<string, string> = {}) =>
  runWasm({
    language: "python",
    source: `def probe():\n${body}\n`,
    functionName: "probe",
    args: {},
    parameterNames: [],
    env,
  });

let listener: Server;
let port = 0;
let connections = 0;
const dataDir = mkdtempSync(join(tmpdir(), "kelpie-wasm-"));
writeFileSync(join(dataDir, "kelpie.db"), "SECRET-DATA-DIR-CONTENT");

beforeAll(async () => {
  listener = createServer((s) => {
    connections++;
    s.destroy();
  });
  await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
  port = (listener.address() as { port: number }).port;
});
afterAll(async () => {
  await closeWasmPool();
  listener.close();
});

describe("wasm level", () => {
  it("runs a tool with keyword arguments, its env vars and what it prints", async () => {
    const r = await runWasm({
      language: "python",
      source:
        'import os\n\ndef add(a, b):\n    print("adding")\n    return {"sum": a + b, "token": os.environ["TOKEN"]}\n',
      functionName: "add",
      args: { a: 20, b: 22 },
      parameterNames: ["a", "b"],
      env: { TOKEN: "t0ken" },
    });
    expect(r).toMatchObject({ ok: true, level: "wasm", stdout: ["adding\n"] });
    expect(JSON.parse(r.value)).toEqual({ sum: 42, token: "t0ken" });
  });

  it("keeps the host's files, the data dir, the network and processes out of reach", async () => {
    expect(JSON.stringify(await run('    return open("/etc/passwd").read()'))).not.toContain("root:");
    expect((await run(`    return open(${JSON.stringify(join(dataDir, "kelpie.db"))}).read()`)).ok).toBe(
      false,
    );
    expect((await run("    import os\n    return str(os.listdir('/'))")).value).not.toMatch(
      /etc|usr|root|kelpie/,
    );
    for (const target of [port, 5432]) {
      const net = await run(
        `    import socket\n    s = socket.create_connection(("127.0.0.1", ${target}), timeout=2)\n    s.send(b"x")\n    return "CONNECTED"`,
      );
      expect(net.ok).toBe(false);
    }
    expect(connections).toBe(0);
    const fork = await run("    import os\n    os.fork()\n    return 'FORKED'");
    expect(fork).toMatchObject({ ok: false });
    const sub = await run("    import subprocess\n    subprocess.run(['ls'])\n    return 'RAN'");
    expect(sub.ok).toBe(false);
    // Python's JavaScript bridge reaches only the isolate: no Node, no module loading.
    const js = await run(
      "    from pyodide.code import run_js\n    return run_js('typeof process + typeof require + typeof fetch')",
    );
    expect(js.value).toBe("undefinedundefinedundefined");
    const jsFile = await run("    import js\n    return str(len(js.readbuffer('/etc/passwd').to_py()))");
    expect(jsFile.ok).toBe(false);
  });

  it("bounds memory, time and output", async () => {
    const huge = await run('    x = bytearray(4 * 1024 * 1024 * 1024)\n    return "ALLOCATED"');
    expect(huge.ok).toBe(false);
    // An allocation WebAssembly could hold (600 MiB < 4 GiB) stops at the interpreter's bound.
    const grow = await run('    x = bytearray(600 * 1024 * 1024)\n    return "ALLOCATED"');
    expect(grow).toMatchObject({ ok: false });
    expect(grow.value).toMatch(/MemoryError/);
    const started = performance.now();
    const loop = await run("    while True:\n        pass");
    expect(loop.ok).toBe(false);
    expect(loop.value).toMatch(/Timeout/);
    expect(performance.now() - started).toBeLessThan(20_000);
    const loud = await run(
      "    s = 'x' * 1048576\n    for _ in range(20):\n        print(s)\n    return 'done'",
    );
    expect(loud.value).toBe("done");
    const printed = loud.stdout.join("");
    expect(printed.length).toBeLessThan(SANDBOX_OUTPUT_BYTES_MAX + 200);
    expect(printed).toContain("[output cut by Kelpie");
    const big = await run("    return 'y' * (20 * 1024 * 1024)");
    expect(big.value.length).toBeLessThan(SANDBOX_OUTPUT_BYTES_MAX + 200);
    expect(big.value).toContain("[cut by Kelpie");
  }, 120_000);

  it("carries nothing over from one run to the next", async () => {
    const first = await run(
      "    import os, json, sys\n    open('/tmp/left', 'w').write('x')\n    os.environ['LEFT'] = '1'\n    json.LEFT = 1\n    sys.modules['leftover'] = json\n    return 'ok'",
      { ONLY_FIRST: "1" },
    );
    expect(first.value).toBe("ok");
    const second = await run(
      "    import os, json, sys\n    return str([os.path.exists('/tmp/left'), 'LEFT' in os.environ, hasattr(json, 'LEFT'), 'leftover' in sys.modules, 'ONLY_FIRST' in os.environ])",
    );
    expect(second.value).toBe("[False, False, False, False, False]");
  }, 120_000);

  it("boots interpreters without blocking the event loop", async () => {
    await closeWasmPool(); // The next run boots one cold.
    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();
    const r = await run("    return 'booted'");
    delay.disable();
    expect(r.value).toBe("booted");
    // Booting takes a second or more of CPU; none of it on this thread.
    expect(delay.max / 1e6).toBeLessThan(250);
  }, 120_000);

  it("starts booting an interpreter when a Python tool is stored, not when a JavaScript one is", async () => {
    await closeWasmPool();
    const t = await testApp();
    try {
      const js = await t.req("POST", "/v1/tools/", {
        source_code: "function add(a, b) { return a + b; }",
        source_type: "javascript",
      });
      expect(js.status).toBe(200);
      expect(wasmPoolCount()).toBe(0);
      const py = await t.req("POST", "/v1/tools/", {
        source_code: 'def py_add(a: int, b: int) -> int:\n    """Adds."""\n    return a + b\n',
        source_type: "python",
      });
      expect(py.status, JSON.stringify(py.body)).toBe(200);
      expect(wasmPoolCount()).toBe(1); // its first run takes this one
      const ran = await run("    return 'warm'");
      expect(ran.value).toBe("warm");
    } finally {
      await t.kelpie.close(); // closes the pool too
    }
  }, 120_000);

  it("sets the interpreter's memory maximum in the module", () => {
    // (module (memory 2 65536)) with a custom section after it.
    const module = Uint8Array.from([
      0, 97, 115, 109, 1, 0, 0, 0, 5, 6, 1, 1, 2, 128, 128, 4, 0, 3, 1, 120, 0,
    ]);
    const patched = withMemoryMaximum(module, 8_192);
    expect(Array.from(patched.subarray(8, 15))).toEqual([5, 5, 1, 1, 2, 128, 64]);
    expect(Array.from(patched.subarray(15))).toEqual([0, 3, 1, 120, 0]);
    expect(() => new WebAssembly.Module(patched)).not.toThrow();
    expect(WASM_MEMORY_BYTES_MAX).toBe(512 * 1024 * 1024);
  });
});
