// Simulated code reaches time and randomness only through the injected Clock and Rng (env.clock,
// env.rng), so a seed replays a run exactly. Every source file under src is checked for ambient
// clocks, timers and random sources; the few places that must touch the real ones are listed
// below, each with its reason. A new folder is checked by default; a stale entry fails too.
import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

const AMBIENT =
  /(?<![\w$])(Date\.now|Math\.random|setTimeout|setInterval|setImmediate|randomUUID|randomBytes|randomInt|getRandomValues|performance\.now|process\.hrtime)(?![\w$])|new Date\(\)/;
const SRC_DIR = new URL("../../src/", import.meta.url);

/** Folders never run under simulation. */
const EXEMPT_DIRS: Record<string, string> = {
  cli: "the command line: makes API keys, handles signals and exits; it starts servers, it is not one",
};

interface Allowed {
  file: string;
  /** Text the allowed line contains; absent: the whole file. */
  line?: string;
  reason: string;
}

const ALLOWED: Allowed[] = [
  { file: "core/clock.ts", reason: "SystemClock: the one door to the real clock and timers" },
  { file: "core/rng.ts", reason: "SystemRng: the one door to the OS random source" },
  {
    file: "cluster/node-auth.ts",
    line: "randomBytes",
    reason: "the cluster secret must be unguessable; it is a key, not state a seed replays",
  },
  {
    file: "server.ts",
    line: "setInterval(() => app.server.closeIdleConnections()",
    reason: "closing real sockets at shutdown",
  },
  { file: "api/forward.ts", line: "setTimeout(", reason: "connect timeout of a real socket to another node" },
  {
    file: "api/cluster-outbox.ts",
    line: "setTimeout(",
    reason: "connect timeout of a real socket to another node (an outbox delivery)",
  },
  {
    file: "storage/sqlite.ts",
    line: "setImmediate(",
    reason: "batches writes for the SQLite writer thread (real storage, not simulated); no clock read",
  },
  {
    file: "memory/embedders.ts",
    line: "setTimeout(",
    reason: "a real worker thread that may hang needs a real timeout (simulation uses SimEmbedder)",
  },
  {
    file: "observability/span-recorder.ts",
    line: "performance.now()",
    reason: "trace timestamps for operators; never read back into agent state",
  },
  {
    file: "dst/scheduler.ts",
    line: "setImmediate(resolve)",
    reason: "lets microtasks settle; reads no time",
  },
  {
    file: "dst/main.ts",
    line: "performance.now()",
    reason: "reports how long the simulation took in wall time",
  },
  {
    file: "tools/sandbox/wasm-boot.ts",
    reason: "source run inside the wasm sandbox's isolate (its own shims), not by the server",
  },
  {
    file: "tools/sandbox/wasm.ts",
    reason: "the sandbox guest's random_get and a wall timer on a real isolate",
  },
  { file: "tools/sandbox/isolate.ts", reason: "a real V8 isolate: pool refill and wall timeout" },
  { file: "tools/sandbox/namespace.ts", reason: "a real child process: pool refill and kill timer" },
  { file: "tools/sandbox/vm.ts", line: "VM_CGROUP_REMOVE_WAIT_MS", reason: "host clean-up of a real cgroup" },
  { file: "tools/mcp/stdio-transport.ts", line: "setTimeout(", reason: "kill timer of a real child process" },
];

function sources(dir: URL, prefix = ""): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = `${prefix}${entry.name}`;
    if (entry.isDirectory()) {
      if (prefix === "" && entry.name in EXEMPT_DIRS) return [];
      return sources(new URL(`${entry.name}/`, dir), `${path}/`);
    }
    return /\.(ts|mjs|js)$/.test(entry.name) ? [path] : [];
  });
}

interface Hit {
  file: string;
  lineNumber: number;
  text: string;
}

function ambientHits(file: string): Hit[] {
  return readFileSync(new URL(file, SRC_DIR), "utf8")
    .split("\n")
    .map((text, i) => ({ file, lineNumber: i + 1, text }))
    .filter(({ text }) => !/^\s*(\/\/|\*|\/\*)/.test(text) && AMBIENT.test(text));
}

const covers = (allowed: Allowed, hit: Hit) =>
  allowed.file === hit.file && (allowed.line === undefined || hit.text.includes(allowed.line));

describe("determinism of src", () => {
  const files = sources(SRC_DIR);
  const hits = files.flatMap(ambientHits);

  it("checks every folder that runs under simulation", () => {
    for (const dir of [
      "agent",
      "api",
      "cluster",
      "core",
      "dst",
      "llm",
      "memory",
      "runtime",
      "storage",
      "tools",
    ]) {
      expect(
        files.some((f) => f.startsWith(`${dir}/`)),
        dir,
      ).toBe(true);
    }
  });

  it("finds the real clock and randomness only where the allowlist says why", () => {
    const unexplained = hits.filter((hit) => !ALLOWED.some((a) => covers(a, hit)));
    expect(unexplained.map((h) => `src/${h.file}:${h.lineNumber}: ${h.text.trim()}`)).toEqual([]);
  });

  it("has no stale allowlist entries", () => {
    const stale = ALLOWED.filter((a) => !hits.some((hit) => covers(a, hit)));
    expect(stale.map((a) => a.file)).toEqual([]);
  });

  it("catches what it is meant to catch", () => {
    for (const line of [
      "const t = Date.now();",
      "const d = new Date();",
      "x = Math.random()",
      "setTimeout(f, 1)",
      "crypto.randomUUID()",
      "performance.now()",
    ]) {
      expect(AMBIENT.test(line), line).toBe(true);
    }
    for (const line of ["clearTimeout(t)", "new Date(nowMs)", "env.clock.nowMs()", "rng.uuid()"]) {
      expect(AMBIENT.test(line), line).toBe(false);
    }
  });
});
