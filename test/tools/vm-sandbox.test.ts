// The vm level: python3 and node inside gVisor (runsc). Escape probes for both interpreters (host
// files, the server's data dir, sockets to the server and to 127.0.0.1:5432, forks, 4 GiB, a busy
// loop, 20 MB of output), nothing carried over between runs or left on the host after them, the
// level through the API (a tool's metadata, the server default, /v1/health/), and why a server
// without runsc does not offer it.
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { configFromEnv } from "../../src/config.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { SANDBOX_OUTPUT_BYTES_MAX, type SandboxRequest } from "../../src/tools/sandbox/limits.ts";
import { closeSandboxPool, runSandboxed, sandboxProblem } from "../../src/tools/sandbox/namespace.ts";
import { RUNSC, vmPrecondition } from "../../src/tools/sandbox/vm.ts";
import { type TestApp, testApp } from "../support/app.ts";

/** A contained fork bomb ends well inside the sandbox's 10 s wall-clock limit. */
const FORK_BOMB_MS_MAX = 5_000;
/** A busy loop is killed at the 10 s wall-clock limit; allow a loaded machine some slack. */
const LOOP_MS_MAX = 20_000;
const SECRET = "SECRET-DATA-DIR-CONTENT";

const py = (body: string, env: Record<string, string> = {}): SandboxRequest => ({
  language: "python",
  source: `def probe():\n${body}\n`,
  functionName: "probe",
  args: {},
  parameterNames: [],
  env,
});
const js = (body: string): SandboxRequest => ({
  language: "javascript",
  source: `async function probe() {\n${body}\n}`,
  functionName: "probe",
  args: {},
  parameterNames: [],
  env: {},
});
const runPy = (body: string, env: Record<string, string> = {}) => runSandboxed(py(body, env), "vm");
const runJs = (body: string) => runSandboxed(js(body), "vm");

let listener: Server;
let port = 0;
let connections = 0;
let t: TestApp | undefined;
const dataDir = mkdtempSync(join(tmpdir(), "kelpie-data-"));
const dataFile = join(dataDir, "kelpie.db");
writeFileSync(dataFile, SECRET);

/** What this process's vm runs could leave on the host: bundle directories and cgroups named after
 * them. Other test files' servers probe runsc at the same time, so only our pid's names count. */
const OURS = `kelpie-vm-${process.pid}-`;
function leftovers(): string[] {
  const bundles = readdirSync(tmpdir()).filter((name) => name.startsWith(OURS));
  const cgroups: string[] = [];
  for (const hierarchy of ["pids", "memory", "cpu"]) {
    const self = readFileSync("/proc/self/cgroup", "utf8")
      .split("\n")
      .find((line) => line.split(":")[1]?.split(",").includes(hierarchy))
      ?.split(":")[2];
    if (self === undefined) continue;
    try {
      cgroups.push(
        ...readdirSync(join("/sys/fs/cgroup", hierarchy, self)).filter((name) => name.startsWith(OURS)),
      );
    } catch {} // not a cgroup v1 machine: runsc's own clean-up is all there is to trust
  }
  return [...bundles, ...cgroups];
}

beforeAll(async () => {
  listener = createServer((socket) => {
    connections++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
  port = (listener.address() as { port: number }).port;
});
afterEach(async () => {
  await t?.kelpie.close();
  t = undefined;
});
afterAll(async () => {
  await closeSandboxPool();
  listener.close();
});

describe("vm level (gVisor)", () => {
  it("runs here: runsc is installed and a trivial tool runs inside it", () => {
    // The test setup installs runsc (test/setup/system-packages.ts); without it this says why.
    expect(sandboxProblem("python", "vm")).toBeNull();
    expect(sandboxProblem("node", "vm")).toBeNull();
  });

  it("runs a Python tool with its arguments, env vars and what it prints", async () => {
    const r = await runSandboxed(
      {
        language: "python",
        source:
          'import os\n\ndef add(a, b):\n    print("adding")\n    return {"sum": a + b, "token": os.environ["TOKEN"], "uid": os.getuid()}\n',
        functionName: "add",
        args: { a: 20, b: 22 },
        parameterNames: ["a", "b"],
        env: { TOKEN: "t0ken" },
      },
      "vm",
    );
    expect(r).toMatchObject({ ok: true, level: "vm", stdout: ["adding\n"] });
    expect(JSON.parse(r.value)).toEqual({ sum: 42, token: "t0ken", uid: 65_534 });
  });

  it("Python: keeps host files, the data dir, the network and the host's processes out of reach", async () => {
    expect(JSON.stringify(await runPy('    return open("/etc/passwd").read()'))).not.toContain("root:");
    const data = await runPy(`    return open(${JSON.stringify(dataFile)}).read()`);
    expect(data.ok).toBe(false);
    expect(data.value).toMatch(/FileNotFoundError/);
    // The root holds /usr and gVisor's own /proc, /sys and /dev: no /etc, /home, /root or host /tmp.
    const root = await runPy("    import os\n    return str(sorted(os.listdir('/')))");
    expect(root.value).toBe("['bin', 'dev', 'lib', 'lib64', 'proc', 'sys', 'tmp', 'usr', 'work']");
    expect((await runPy("    import os\n    return str(os.listdir('/tmp'))")).value).toBe("[]");
    const write = await runPy('    open("/usr/evil", "w").write("x")\n    return "WROTE"');
    expect(write.value).toMatch(/PermissionError|Read-only/);
    for (const target of [port, 5432]) {
      const net = await runPy(
        `    import socket\n    s = socket.create_connection(("127.0.0.1", ${target}), timeout=2)\n    s.send(b"x")\n    return "CONNECTED"`,
      );
      expect(net).toMatchObject({ ok: false, level: "vm" });
    }
    expect(connections).toBe(0);
    // The host's processes are not there to see, let alone signal.
    const procs = await runPy(
      "    import os\n    return str(len([p for p in os.listdir('/proc') if p.isdigit()]))",
    );
    expect(Number(procs.value)).toBeLessThan(5);
  }, 60_000);

  it("Python: bounds processes, memory, time and output", async () => {
    const bombStarted = performance.now();
    const bomb = await runPy(
      "    import os\n    for _ in range(1000):\n        os.fork()\n    return 'FORKED'",
    );
    expect(performance.now() - bombStarted).toBeLessThan(FORK_BOMB_MS_MAX);
    expect(bomb).toMatchObject({ ok: false, level: "vm" });
    expect(bomb.value).toMatch(/BlockingIOError|Resource temporarily unavailable/);
    const huge = await runPy('    x = bytearray(4 * 1024 * 1024 * 1024)\n    return "ALLOCATED"');
    expect(huge).toMatchObject({ ok: false, value: "MemoryError: the tool exceeded its memory limit" });
    // Eight processes of 400 MiB each stay under their own limit; the sandbox's cgroup stops them.
    const many = await runPy(
      "    import os\n    kids = []\n    for _ in range(8):\n        pid = os.fork()\n        if pid == 0:\n            b = bytearray(400 * 1024 * 1024)\n            for i in range(0, len(b), 4096):\n                b[i] = 1\n            os._exit(0)\n        kids.append(pid)\n    for k in kids:\n        os.waitpid(k, 0)\n    return 'ALL FILLED'",
    );
    expect(many.ok).toBe(false);
    expect(many.value).not.toContain("ALL FILLED");
    const loopStarted = performance.now();
    const loop = await runPy("    while True:\n        pass");
    expect(loop).toMatchObject({ ok: false, level: "vm" });
    expect(loop.value).toMatch(/Timeout|killed/);
    expect(performance.now() - loopStarted).toBeLessThan(LOOP_MS_MAX);
    const loud = await runPy(
      "    s = 'x' * 1048576\n    for _ in range(20):\n        print(s)\n    return 'done'",
    );
    expect(loud.ok).toBe(false);
    expect(loud.value).toMatch(/more than 1048576 bytes and was killed/);
    expect(loud.value.length + loud.stdout.join("").length).toBeLessThan(SANDBOX_OUTPUT_BYTES_MAX + 1_000);
    const disk = await runPy(
      "    open('/tmp/big', 'wb').write(b'x' * (100 * 1024 * 1024))\n    return 'WROTE'",
    );
    expect(disk.ok).toBe(false);
  }, 120_000);

  it("Node: keeps host files, the network and processes out of reach, and bounds memory and time", async () => {
    const files = await runJs(
      `const fs = require("node:fs");
       const tryRead = (p) => { try { return fs.readFileSync(p, "utf8"); } catch (e) { return e.code; } };
       return [tryRead("/etc/passwd"), tryRead(${JSON.stringify(dataFile)}), process.getuid()].join(" ");`,
    );
    expect(files).toMatchObject({ ok: true, value: "ENOENT ENOENT 65534", level: "vm" });
    for (const target of [port, 5432]) {
      const net = await runJs(
        `const net = require("node:net");
         return await new Promise((resolve) => {
           const s = net.connect(${target}, "127.0.0.1", () => resolve("CONNECTED"));
           s.on("error", (e) => resolve(e.code));
         });`,
      );
      expect(net.value).toBe("ECONNREFUSED");
    }
    expect(connections).toBe(0);
    const bombStarted = performance.now();
    const bomb = await runJs(
      `const { spawn } = require("node:child_process");
       let refused = 0;
       for (let i = 0; i < 200; i++) {
         const child = spawn("/usr/bin/sleep", ["30"]);
         child.on("error", () => refused++);
       }
       await new Promise((r) => setTimeout(r, 500));
       return "refused " + refused;`,
    );
    expect(performance.now() - bombStarted).toBeLessThan(FORK_BOMB_MS_MAX);
    expect(bomb.value).toMatch(/^refused [1-9]\d*$|killed|EAGAIN/);
    const huge = await runJs('const b = Buffer.alloc(4 * 1024 * 1024 * 1024); return "ALLOCATED";');
    expect(huge.ok).toBe(false);
    expect(huge.value).not.toContain("ALLOCATED");
    const loop = await runJs("while (true) {}");
    expect(loop).toMatchObject({ ok: false, level: "vm" });
    expect(loop.value).toMatch(/Timeout|killed/);
    const loud = await runJs(
      'const s = "x".repeat(1 << 20); for (let i = 0; i < 20; i++) process.stdout.write(s); return "done";',
    );
    expect(loud.ok).toBe(false);
    expect(loud.value.length + loud.stdout.join("").length).toBeLessThan(SANDBOX_OUTPUT_BYTES_MAX + 1_000);
  }, 120_000);

  it("carries nothing over from one run to the next, and leaves nothing on the host", async () => {
    expect(
      (await runPy("    open('/tmp/left', 'w').write('x')\n    return 'ok'", { ONLY_FIRST: "1" })).value,
    ).toBe("ok");
    const second = await runPy(
      "    import os\n    return str([os.path.exists('/tmp/left'), 'ONLY_FIRST' in os.environ])",
    );
    expect(second.value).toBe("[False, False]");
    await closeSandboxPool(); // kills the pooled sandboxes and waits for their clean-up
    expect(leftovers()).toEqual([]);
  }, 60_000);

  it("a tool asks for it in its metadata, the server defaults to it, and /v1/health/ lists it", async () => {
    t = await testApp(new MemoryStorage(), {
      sandboxDefaults: configFromEnv({ KELPIE_SANDBOX_PYTHON: "vm" }).sandboxDefaults,
    });
    const health = (await t.req("GET", "/v1/health/")).body;
    expect(health.sandbox.levels).toContain("vm");
    expect(health.sandbox).toMatchObject({ vm: true, vmNode: true, vmProblem: null });
    expect(health.sandbox.defaults).toEqual({ javascript: "isolate", python: "vm" });
    const byDefault = await t.req("POST", "/v1/tools/run", {
      source_code: 'def probe() -> str:\n    """Probe."""\n    import os\n    return os.uname().release\n',
      source_type: "python",
      args: {},
    });
    expect(byDefault.body).toMatchObject({ status: "success", sandbox: "vm" });
    const asked = await t.req("POST", "/v1/tools/run", {
      source_code: "function probe() { return typeof require; }",
      source_type: "javascript",
      args: {},
      metadata_: { sandbox: "vm" },
    });
    expect(asked.body).toMatchObject({ status: "success", func_return: "function", sandbox: "vm" });
  }, 60_000);

  it("is not offered without runsc or without root, saying why and how to get it", () => {
    const host = (present: boolean, uid: number) => ({
      exists: (path: string) => present && path === RUNSC,
      uid,
    });
    expect(vmPrecondition(host(false, 0))).toBe(
      "gVisor (/usr/bin/runsc) is not available on this server: install it (apt-get install runsc)",
    );
    expect(vmPrecondition(host(true, 1000))).toMatch(/needs the server to run as root/);
    expect(vmPrecondition(host(true, 0))).toBeNull();
  });
});
