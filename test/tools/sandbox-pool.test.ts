// The Python sandbox's warm pool and its uid drop: each pre-started sandbox serves one run only (no
// state carries over), tool env vars reach that run only, a fork bomb is contained fast when the
// server is root, and closing the pool leaves no process behind.
import { execFileSync } from "node:child_process";
import { afterEach, describe, expect, it } from "vitest";
import type { SandboxRequest } from "../../src/tools/sandbox/limits.ts";
import {
  closeSandboxPool,
  namespaceAvailable,
  runSandboxed,
  SANDBOX_POOL_SIZE,
  SANDBOX_UID_BASE,
  SANDBOX_UID_COUNT,
  sandboxPoolIdleCount,
} from "../../src/tools/sandbox/namespace.ts";

const RUNNING_AS_ROOT = process.getuid?.() === 0;
/** A fork bomb must end well inside the 10 s wall-clock limit: the process limit stops it. */
const FORK_BOMB_MS_MAX = 5_000;
/** Killed sandboxes are reaped by the host's init, which may take a moment. */
const REAP_WAIT_MS_MAX = 5_000;
const REAP_POLL_MS = 100;

const tool = (source: string, env: Record<string, string> = {}): SandboxRequest => ({
  language: "python",
  source,
  functionName: "probe",
  args: {},
  parameterNames: [],
  env,
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** Lets the pool's background refill (scheduled with setImmediate) run. */
const refilled = () => new Promise((resolve) => setImmediate(resolve));

interface Proc {
  pid: number;
  ppid: number;
  uid: number;
  stat: string;
  comm: string;
}

function processes(): Proc[] {
  return execFileSync("ps", ["-eo", "pid=,ppid=,uid=,stat=,comm="], { encoding: "utf8" })
    .trim()
    .split("\n")
    .map((line) => {
      const [pid, ppid, uid, stat, comm] = line.trim().split(/\s+/);
      return { pid: Number(pid), ppid: Number(ppid), uid: Number(uid), stat: stat!, comm: comm ?? "" };
    });
}

/** Live (not zombie) processes that belong to a sandbox: our children, or anything in the uid range. */
function sandboxProcesses(): Proc[] {
  return processes().filter(
    (p) =>
      !p.stat.startsWith("Z") &&
      (p.ppid === process.pid
        ? p.comm !== "ps"
        : p.uid >= SANDBOX_UID_BASE && p.uid < SANDBOX_UID_BASE + SANDBOX_UID_COUNT),
  );
}

async function expectNoSandboxProcesses(): Promise<void> {
  for (let waited = 0; waited < REAP_WAIT_MS_MAX && sandboxProcesses().length > 0; waited += REAP_POLL_MS) {
    await sleep(REAP_POLL_MS);
  }
  expect(sandboxProcesses()).toEqual([]);
}

afterEach(async () => {
  await closeSandboxPool();
});

describe("python sandbox pool", () => {
  it("keeps the pool filled, and each sandbox serves one run: nothing carries over to the next", async () => {
    expect(namespaceAvailable()).toBe(true);
    const writer = tool(`import builtins, os, sys
MODULE_STATE = "fresh"

def probe() -> str:
    global MODULE_STATE
    MODULE_STATE = "changed"
    builtins.KELPIE_LEAK = "leaked"
    sys.modules["kelpie_leak"] = sys
    os.environ["KELPIE_LEAK"] = "leaked"
    open("/work/leak.txt", "w").write("leaked")
    open("/tmp/leak.txt", "w").write("leaked")
    return "wrote"
`);
    const reader = tool(`import builtins, os, sys

def probe() -> list:
    return [
        globals().get("MODULE_STATE", "absent"),
        getattr(builtins, "KELPIE_LEAK", "absent"),
        "kelpie_leak" in sys.modules,
        os.environ.get("KELPIE_LEAK", "absent"),
        os.path.exists("/work/leak.txt"),
        os.path.exists("/tmp/leak.txt"),
        os.listdir("/work"),
    ]
`);
    await runSandboxed(reader, "namespace"); // the first run starts cold and fills the pool
    await refilled();
    expect(sandboxPoolIdleCount("namespace")).toBe(SANDBOX_POOL_SIZE);
    // Several rounds, so refilled sandboxes are used as well as the first ones.
    for (let round = 0; round < 3; round++) {
      expect(sandboxPoolIdleCount("namespace")).toBeGreaterThan(0); // the next run is a pooled one
      expect(await runSandboxed(writer, "namespace")).toMatchObject({ ok: true, value: "wrote" });
      await refilled();
      expect(sandboxPoolIdleCount("namespace")).toBeGreaterThan(0);
      const seen = await runSandboxed(reader, "namespace");
      expect(seen.ok).toBe(true);
      expect(JSON.parse(seen.value)).toEqual(["absent", "absent", false, "absent", false, false, []]);
      await refilled();
    }
  });

  it("passes the tool's env vars to its own run only, at both levels", async () => {
    const env = tool('import os\n\ndef probe() -> str:\n    return os.environ.get("API_TOKEN", "none")\n');
    for (const level of ["namespace", "process"] as const) {
      expect((await runSandboxed({ ...env, env: { API_TOKEN: "t0ken" } }, level)).value).toBe("t0ken");
      await refilled();
      expect((await runSandboxed(env, level)).value).toBe("none");
    }
  });

  it("starts every run cold with pool size 0, and rejects a pool size out of range", async () => {
    const add = tool("def probe() -> int:\n    return 1 + 2\n");
    expect(await runSandboxed(add, "namespace", { poolSize: 0 })).toMatchObject({ ok: true, value: "3" });
    await refilled();
    expect(sandboxPoolIdleCount("namespace")).toBe(0);
    expect(() => runSandboxed(add, "namespace", { poolSize: -1 })).toThrow(/pool size/);
    expect(() => runSandboxed(add, "namespace", { poolSize: 1.5 })).toThrow(/pool size/);
  });

  it.skipIf(!RUNNING_AS_ROOT)("runs each live sandbox as its own unprivileged uid when root", async () => {
    const ids = tool(
      "import os\n\ndef probe() -> list:\n    return [os.getuid(), os.getgid(), os.getgroups()]\n",
    );
    const results = await Promise.all(
      ["namespace", "namespace", "namespace", "process", "process"].map((level) =>
        runSandboxed(ids, level as "namespace" | "process"),
      ),
    );
    const seen = results.map((r) => JSON.parse(r.value) as [number, number, number[]]);
    for (const [uid, gid, groups] of seen) {
      expect(uid).toBeGreaterThanOrEqual(SANDBOX_UID_BASE);
      expect(uid).toBeLessThan(SANDBOX_UID_BASE + SANDBOX_UID_COUNT);
      expect(gid).toBe(uid);
      expect(groups.filter((g) => g !== gid)).toEqual([]);
    }
    expect(new Set(seen.map(([uid]) => uid)).size).toBe(seen.length);
  });

  it.skipIf(!RUNNING_AS_ROOT)("kills what a tool leaves running, even in its own session", async () => {
    // Holds the sandbox's stdout open too: the run must still end at its result, not at the sleep's end.
    const leaver = tool(
      'import subprocess\n\ndef probe() -> str:\n    subprocess.Popen(["/usr/bin/sleep", "60"], start_new_session=True)\n    return "left"\n',
    );
    for (const level of ["namespace", "process"] as const) {
      const started = performance.now();
      expect(await runSandboxed(leaver, level)).toMatchObject({ ok: true, value: "left" });
      expect(performance.now() - started).toBeLessThan(FORK_BOMB_MS_MAX);
    }
    await closeSandboxPool();
    await expectNoSandboxProcesses();
  });

  it("contains a fork bomb fast at both levels, and closing the pool leaves no process behind", async () => {
    const bomb = tool(
      "import os\n\ndef probe() -> str:\n    for _ in range(1000):\n        os.fork()\n    return 'FORKED'\n",
    );
    for (const level of ["namespace", "process"] as const) {
      const started = performance.now();
      const result = await runSandboxed(bomb, level);
      expect(performance.now() - started).toBeLessThan(FORK_BOMB_MS_MAX);
      expect(result.ok).toBe(false);
      expect(result.value).not.toBe("FORKED");
      const after = await runSandboxed(tool("def probe() -> str:\n    return 'ok'\n"), level);
      expect(after).toMatchObject({ ok: true, value: "ok" });
    }
    await refilled();
    expect(sandboxPoolIdleCount("namespace")).toBe(SANDBOX_POOL_SIZE);
    await closeSandboxPool();
    expect(sandboxPoolIdleCount("namespace")).toBe(0);
    expect(sandboxPoolIdleCount("process")).toBe(0);
    await expectNoSandboxProcesses();
  });
});
