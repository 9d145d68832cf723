// Sandboxes bounded in every dimension (issue #16, findings 5 and 8). The isolate: a promise that
// never settles ends at the wall-clock limit and every run disposes its isolate; printed output and
// the returned value are cut at SANDBOX_OUTPUT_BYTES_MAX, over HTTP and in a stored tool message.
// The namespace level: tmpfs mounts are size-limited and the rest is read-only, no nested user
// namespace, a seccomp filter refuses kernel-facing calls with EPERM (threads, forks and child
// processes still work). Across levels: at most SANDBOX_CONCURRENT_MAX runs at once, a bounded line,
// and a clear error past it.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { llmConfigFromEnv } from "../../src/llm/registry.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { ISOLATE_POOL_SIZE, isolateLiveCount, runIsolate } from "../../src/tools/sandbox/isolate.ts";
import {
  ISOLATE_WALL_TIMEOUT_MS,
  SANDBOX_DEFAULTS,
  SANDBOX_OUTPUT_BYTES_MAX,
  SANDBOX_TMPFS_BYTES_MAX,
  type SandboxRequest,
} from "../../src/tools/sandbox/limits.ts";
import { closeSandboxPool, runSandboxed } from "../../src/tools/sandbox/namespace.ts";
import { capText, OutputCap, outputCutMarker } from "../../src/tools/sandbox/output.ts";
import { Sandbox } from "../../src/tools/sandbox/sandbox.ts";
import { seccompProgram } from "../../src/tools/sandbox/seccomp.ts";
import { type TestApp, testApp } from "../support/app.ts";
import { type FakeLlm, startFakeLlm } from "../support/fake-llm/server.ts";

/** What 20 MiB of output must shrink to before it reaches a client (the acceptance check's bound). */
const ANSWER_BYTES_MAX = 2_000_000;
const MARKER = outputCutMarker(SANDBOX_OUTPUT_BYTES_MAX);
/** A hung tool must end by then (the acceptance check's bound): the wall-clock limit plus slack for
 * a loaded machine. */
const HANG_END_MS_MAX = 30_000;
/** A short wall-clock limit for the isolate runs that would otherwise each wait the full one. */
const SHORT_WALL_MS = 300;
const HUNG_RUNS_COUNT = 10;
/** Each hung tool holds this much of its heap; ten of them, never freed, grew RSS past 800 MB. */
const HUNG_HEAP_BYTES = 40 * 1024 * 1024;
/** RSS growth allowed after ten such runs: well under the 400 MB they would hold if leaked. */
const HUNG_RSS_GROWTH_BYTES_MAX = 150 * 1024 * 1024;

let fake: FakeLlm;
let t: TestApp | undefined;
beforeAll(async () => {
  fake = await startFakeLlm();
});
afterAll(async () => {
  await fake.close();
  await closeSandboxPool();
});
afterEach(async () => {
  await t?.kelpie.close();
  t = undefined;
});

async function app(): Promise<TestApp> {
  t = await testApp(new MemoryStorage(), {
    llm: llmConfigFromEnv({ OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` }),
  });
  return t;
}

const js = (body: string): SandboxRequest => ({
  language: "javascript",
  source: `async function probe() {\n${body}\n}`,
  functionName: "probe",
  args: {},
  parameterNames: [],
  env: {},
});
const py = (body: string): SandboxRequest => ({
  language: "python",
  source: `def probe():\n${body}\n`,
  functionName: "probe",
  args: {},
  parameterNames: [],
  env: {},
});

/** A Python tool's result at the namespace level, parsed from the JSON it returns. */
async function namespaceJson(body: string): Promise<any> {
  const result = await runSandboxed(py(body), "namespace");
  expect(result, result.value).toMatchObject({ ok: true });
  return JSON.parse(result.value);
}

describe("isolate level", () => {
  it("ends a tool awaiting a promise that never settles at the wall-clock limit, over HTTP", async () => {
    const a = await app();
    const started = performance.now();
    const res = await a.req("POST", "/v1/tools/run", {
      source_code: "async function hang() { await new Promise(() => {}); }",
      source_type: "javascript",
      args: {},
    });
    const elapsedMs = performance.now() - started;
    expect(res.body).toMatchObject({ status: "error", sandbox: "isolate" });
    expect(res.body.func_return).toMatch(/wall-clock limit/);
    expect(elapsedMs).toBeGreaterThanOrEqual(ISOLATE_WALL_TIMEOUT_MS - 50);
    expect(elapsedMs).toBeLessThan(HANG_END_MS_MAX);
    expect(isolateLiveCount()).toBe(0);
  }, 60_000);

  it("disposes every isolate: ten hung runs leave none alive and give their memory back", async () => {
    const hang = js(
      `const held = new Uint8Array(${HUNG_HEAP_BYTES}).fill(1); await new Promise(() => {}); return held.length;`,
    );
    globalThis.gc?.();
    const rssBefore = process.memoryUsage().rss;
    for (let i = 0; i < HUNG_RUNS_COUNT; i++) {
      const result = await runIsolate(hang, { wallTimeoutMs: SHORT_WALL_MS });
      expect(result).toMatchObject({ ok: false, level: "isolate" });
      expect(result.value).toMatch(/wall-clock limit/);
      expect(isolateLiveCount()).toBe(0);
    }
    globalThis.gc?.();
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(HUNG_RSS_GROWTH_BYTES_MAX);
    // Every other way out disposes too: an error, the CPU limit, the memory limit, success.
    const runs = [
      js('throw new Error("boom");'),
      js("while (true) {}"),
      js("const a = []; while (true) a.push(new Array(1e6).fill(1));"),
      js('return "ok";'),
    ];
    const results = await Promise.all(runs.map((run) => runIsolate(run, { wallTimeoutMs: 8_000 })));
    expect(results.map((r) => r.ok)).toEqual([false, false, false, true]);
    expect(isolateLiveCount()).toBe(0);
  }, 60_000);

  it("pooled isolates serve one run each: nothing a tool leaves behind reaches the next run", async () => {
    const dirty = await runIsolate(
      js(
        'globalThis.leftover = 1; Object.prototype.polluted = "yes"; Array.prototype.push = () => 0; JSON.stringify = () => "hijacked"; return "dirtied";',
      ),
    );
    expect(dirty).toMatchObject({ ok: true, value: "dirtied" });
    for (let i = 0; i < ISOLATE_POOL_SIZE + 1; i++) {
      const clean = await runIsolate(
        js(
          'const a = []; a.push(1); return [typeof globalThis.leftover, ({}).polluted === undefined, a.length, JSON.stringify({ k: 1 })].join(" ");',
        ),
      );
      expect(clean.value).toBe('undefined true 1 {"k":1}');
    }
    expect(isolateLiveCount()).toBe(0);
  });

  it("caps 20 MB of console.log before it reaches the client, with one marker", async () => {
    const a = await app();
    const res = await a.req("POST", "/v1/tools/run", {
      source_code:
        'function loud() { const s = "x".repeat(1048576); for (let i = 0; i < 20; i++) console.log(s); return 1; }',
      source_type: "javascript",
      args: {},
    });
    expect(res.body).toMatchObject({ status: "success", func_return: "1", sandbox: "isolate" });
    expect(JSON.stringify(res.body).length).toBeLessThan(ANSWER_BYTES_MAX);
    expect(res.body.stdout.at(-1)).toBe(MARKER);
    expect(res.body.stdout.filter((line: string) => line === MARKER)).toHaveLength(1);
    const printedBytes = res.body.stdout.reduce((sum: number, line: string) => sum + line.length + 1, 0);
    expect(printedBytes).toBeGreaterThan(SANDBOX_OUTPUT_BYTES_MAX - 1024);
  });

  it("caps a 20 MB return value before it reaches the client, with the marker", async () => {
    const a = await app();
    const res = await a.req("POST", "/v1/tools/run", {
      source_code: 'function big() { return "é".repeat(20 * 1048576); }',
      source_type: "javascript",
      args: {},
    });
    expect(res.body).toMatchObject({ status: "success", sandbox: "isolate" });
    expect(JSON.stringify(res.body).length).toBeLessThan(ANSWER_BYTES_MAX);
    expect(res.body.func_return.endsWith(`\n${MARKER}`)).toBe(true);
    const kept = res.body.func_return.slice(0, -MARKER.length - 1);
    expect(Buffer.byteLength(kept)).toBeLessThanOrEqual(SANDBOX_OUTPUT_BYTES_MAX);
    expect(kept).toMatch(/^é+$/); // cut between characters, never inside one
  });

  it("the tool cannot reach the host's print callback past the cap", async () => {
    const result = await runIsolate(js("return typeof __kelpieLog + typeof globalThis.__kelpieLog;"));
    expect(result.value).toBe("undefinedundefined");
  });

  it("bounds what an agent's tool call stores: 20 MB printed and returned, return_char_limit 100", async () => {
    const a = await app();
    const tool = await a.req("POST", "/v1/tools/", {
      source_code:
        '/** Loud. */\nfunction loud() { const s = "y".repeat(1048576); for (let i = 0; i < 20; i++) console.log(s); return s.repeat(20); }',
      source_type: "javascript",
      return_char_limit: 100,
    });
    expect(tool.status).toBe(200);
    const agent = (
      await a.req("POST", "/v1/agents/", { model: "openai/gpt-4o-mini", tool_ids: [tool.body.id] })
    ).body;
    fake.script((req) => {
      const i = req.messages.map((m) => m.role).lastIndexOf("user");
      const called = req.messages.slice(i + 1).some((m) => m.role === "tool");
      return called
        ? { toolCalls: [{ name: "send_message", args: { message: "done" } }] }
        : { toolCalls: [{ name: "loud", args: { request_heartbeat: true } }] };
    });
    const turn = await a.req("POST", `/v1/agents/${agent.id}/messages`, { input: "go" });
    expect(turn.status).toBe(200);
    const stored = await a.req("GET", `/v1/agents/${agent.id}/messages?limit=50`);
    const toolReturn = stored.body.find((m: any) => m.message_type === "tool_return_message");
    expect(toolReturn.status).toBe("success");
    expect(toolReturn.tool_return.length).toBeLessThan(300);
    // Stored once (the message shows it twice: stdout, and again in tool_returns), at most the cap.
    const storedBytes = toolReturn.stdout.reduce((sum: number, line: string) => sum + line.length + 1, 0);
    expect(storedBytes).toBeLessThan(SANDBOX_OUTPUT_BYTES_MAX + 100);
    expect(toolReturn.stdout.at(-1)).toBe(MARKER);
  });
});

describe("namespace level", () => {
  it("bounds the tmpfs mounts and keeps the rest read-only: 1 GB written to /tmp stops at the limit", async () => {
    const written = await namespaceJson(`    import json, os
    def fill(d):
        total = 0
        try:
            for i in range(64):
                with open(f"{d}/f{i}", "wb") as f:
                    for _ in range(16):
                        f.write(b"x" * (1024 * 1024))
                        f.flush()
                        total += 1024 * 1024
        except OSError as e:
            return [total, e.strerror]
        return [total, None]
    out = {d: fill(d) for d in ["/tmp", "/work", "/dev/shm"]}
    for d in ["/", "/dev", "/usr"]:
        try:
            open(d + "/probe", "w").close()
            out[d] = "written"
        except OSError as e:
            out[d] = e.strerror
    return json.dumps(out)`);
    for (const dir of ["/tmp", "/work", "/dev/shm"]) {
      const [bytes, error] = written[dir];
      expect(error, dir).toBe("No space left on device");
      expect(bytes, dir).toBeLessThanOrEqual(SANDBOX_TMPFS_BYTES_MAX);
      expect(bytes, dir).toBeGreaterThan(SANDBOX_TMPFS_BYTES_MAX / 2);
    }
    expect(written["/"]).toBe("Read-only file system");
    expect(written["/dev"]).toBe("Read-only file system");
    expect(written["/usr"]).toBe("Read-only file system");
  }, 30_000);

  it("allows no nested user namespace: unshare -U and unshare(CLONE_NEWUSER) fail", async () => {
    const tried = await namespaceJson(`    import ctypes, errno, json, subprocess
    libc = ctypes.CDLL(None, use_errno=True)
    ctypes.set_errno(0)
    rc = libc.unshare(0x10000000)
    shell = subprocess.run(["unshare", "-U", "id"], capture_output=True, text=True)
    return json.dumps({"rc": rc, "errno": errno.errorcode.get(ctypes.get_errno()), "shell": shell.returncode, "out": shell.stdout})`);
    expect(tried).toMatchObject({ rc: -1, errno: "EPERM", out: "" });
    expect(tried.shell).not.toBe(0);
  });

  it("refuses kernel-facing system calls with EPERM; threads, forks and child processes still work", async () => {
    // Raw syscall numbers (x86_64 first, aarch64 second): glibc wrappers differ between versions.
    const calls = {
      mount: [165, 40],
      keyctl: [250, 219],
      ptrace: [101, 117],
      bpf: [321, 280],
      io_uring_setup: [425, 425],
      unshare: [272, 97],
      setns: [308, 268],
      personality: [135, 92],
      memfd_create: [319, 279],
      shmget: [29, 194],
      clone_newuser: [56, 220],
    };
    // Were clone allowed, it would fork (no stack given): the child leaves at once.
    const outcome = await namespaceJson(`    import ctypes, errno, json, os, platform, subprocess, threading
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    arm = platform.machine() == "aarch64"
    calls = ${JSON.stringify(calls)}
    args = {"personality": [0x0040000], "clone_newuser": [0x10000000 | 17], "unshare": [0x10000000], "keyctl": [0, -3, 0], "setns": [0, 0x10000000], "shmget": [0, 1 << 20, 0o1600]}
    out = {}
    for name, numbers in calls.items():
        ctypes.set_errno(0)
        a = [ctypes.c_ulong(x & 0xffffffffffffffff) for x in args.get(name, [0])]
        rc = libc.syscall(numbers[1 if arm else 0], *a, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
        if name == "clone_newuser" and rc == 0:
            os._exit(0)
        out[name] = errno.errorcode.get(ctypes.get_errno()) if rc == -1 else rc
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    out["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    box = []
    th = threading.Thread(target=lambda: box.append("ran"))
    th.start()
    th.join()
    out["thread"] = box[0]
    out["child"] = subprocess.run(["sh", "-c", "echo hi"], capture_output=True, text=True).stdout
    out["seccomp"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("Seccomp:")][0]
    return json.dumps(out)`);
    for (const name of Object.keys(calls)) expect(outcome[name], name).toBe("EPERM");
    expect(outcome).toMatchObject({ fork: 7, thread: "ran", child: "hi\n", seccomp: "2" });
  });

  it("node tools run under the filter: worker threads and child processes", async () => {
    const result = await runSandboxed(
      js(`const { Worker } = require("node:worker_threads");
const w = new Worker("require('node:worker_threads').parentPort.postMessage(6 * 7)", { eval: true });
const answer = await new Promise((resolve) => w.once("message", resolve));
return answer + require("node:child_process").execFileSync("sh", ["-c", "echo !"]).toString().trim();`),
      "namespace",
    );
    expect(result).toMatchObject({ ok: true, value: "42!" });
  });
});

describe("sandbox runs at once", () => {
  it("runs at most the cap at once, queues a bounded line and refuses the run past it", async () => {
    const sandbox = new Sandbox(false, SANDBOX_DEFAULTS, { concurrentMax: 2, queuedMax: 1 });
    const sleeper: SandboxRequest = {
      ...py(
        "    import json, time\n    start = time.time()\n    time.sleep(1)\n    return json.dumps([start, time.time()])",
      ),
      level: "namespace",
    };
    const runs = Array.from({ length: 4 }, () => sandbox.run(sleeper));
    const settledFirst = await Promise.race(runs.map((run, index) => run.then(() => index)));
    expect(settledFirst).toBe(3); // refused at once, while the others sleep
    const results = await Promise.all(runs);
    expect(results[3]).toMatchObject({ ok: false, level: "namespace" });
    expect(results[3]!.value).toMatch(/Too many sandboxed tool runs at once.*SANDBOX_CONCURRENT_MAX/);
    const spans = results.slice(0, 3).map((result) => {
      expect(result, result.value).toMatchObject({ ok: true });
      return JSON.parse(result.value) as [number, number];
    });
    // The queued run starts only after one of the first two has ended.
    const [first, second, queued] = spans as [[number, number], [number, number], [number, number]];
    expect(queued[0]).toBeGreaterThanOrEqual(Math.min(first[1], second[1]) - 0.05);
    expect(sandbox.status().runs).toMatchObject({ running: 0, queued: 0, running_max: 2, queued_max: 1 });
  }, 30_000);
});

describe("building blocks", () => {
  it("assembles the seccomp filter for x64 and arm64", () => {
    for (const arch of ["x64", "arm64"] as const) {
      const program = seccompProgram(arch);
      expect(program.length % 8).toBe(0);
      expect(program.length / 8).toBeGreaterThan(50);
    }
  });

  it("cuts text and printed lines at a byte limit with one marker, never inside a character", () => {
    expect(capText("short", 10)).toBe("short");
    expect(capText("ééééé", 5)).toBe(`éé\n${outputCutMarker(5)}`);
    expect(capText("😀😀", 6)).toBe(`😀\n${outputCutMarker(6)}`);
    const cap = new OutputCap(10);
    for (const line of ["abc", "def", "ghijkl", "never"]) cap.push(line);
    expect(cap.lines).toEqual(["abc", "def", "g", outputCutMarker(10)]);
    expect(cap.full).toBe(true);
  });
});
