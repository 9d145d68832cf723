// Python tools (system python3) and JavaScript/TypeScript tools (system node) under bubblewrap: no
// network (own network namespace), own PID namespace, a read-only /usr and nothing else of the host
// (no /etc, no data dir), everything read-only but three size-limited tmpfs mounts (/tmp, the /work
// dir, /dev/shm), a seccomp filter (seccomp.ts) and no nested user namespaces, rlimits (address
// space, CPU, processes, file size, open files) and a wall-clock timeout. The `process` level is the
// same run without bubblewrap (rlimits and timeout only), for operators who opt in. One
// implementation serves both interpreters: a RuntimeSpec says what differs (binary, wrapper,
// address-space limit, how the request is built). The `vm` level is the same run inside gVisor instead
// of bubblewrap: its bundle, bounds and clean-up are in vm.ts.
//
// Sandboxes are started ahead of need: a small warm pool per interpreter and level holds sandboxes
// whose interpreter has already started and loaded its wrapper, blocked reading its request on stdin.
// A run takes one (or starts one cold when the pool is empty) and the pool is refilled in the
// background. Each sandbox serves exactly one run, so nothing (files, interpreter state, env)
// carries over from one run to the next.
//
// When the server runs as root, sandboxes run as an unprivileged uid from a reserved range, one uid
// per live sandbox: the kernel never enforces RLIMIT_NPROC for root, and a per-sandbox uid makes
// the process limit count only that sandbox's own processes.
import { type ChildProcess, type SpawnSyncReturns, spawn, spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { constants as osConstants, tmpdir } from "node:os";
import { join } from "node:path";
import { assert } from "../../core/assert.ts";
import { toScript } from "./compile.ts";
import {
  NODE_ADDRESS_SPACE_BYTES_MAX,
  NODE_HEAP_MB_MAX,
  SANDBOX_CPU_SECONDS_MAX,
  SANDBOX_FILE_BYTES_MAX,
  SANDBOX_FILES_OPEN_MAX,
  SANDBOX_MEMORY_BYTES_MAX,
  SANDBOX_OUTPUT_BYTES_MAX,
  SANDBOX_PROCESSES_MAX,
  SANDBOX_TMPFS_BYTES_MAX,
  SANDBOX_WALL_TIMEOUT_MS,
  type SandboxLanguage,
  type SandboxRequest,
  type SandboxResult,
  VM_MEMORY_BYTES_MAX,
} from "./limits.ts";
import { hostSeccompProgram } from "./seccomp.ts";
import { type VmBundle, vmBundle, vmCleanup, vmCleanupSync, vmPrecondition } from "./vm.ts";

/** Idle pre-started sandboxes kept per interpreter and level; a run finds one ready instead of starting one. */
export const SANDBOX_POOL_SIZE = 2;
/** Upper bound on a configured pool size: each idle sandbox holds an interpreter (python3 ~10 MB,
 * node ~40 MB) and a uid. */
export const SANDBOX_POOL_SIZE_MAX = 16;
/** First uid of the range sandboxes run as when the server is root; no host account may use it. */
export const SANDBOX_UID_BASE = 200_000;
/** Size of that range: the most sandboxes (running or pooled) that can be live at once as root. */
export const SANDBOX_UID_COUNT = 1_000;

const PROBE_TIMEOUT_MS = 5_000;
/** The vm level's probe also boots gVisor's kernel (~0.5 s warm, more from a cold disk cache). */
const VM_PROBE_TIMEOUT_MS = 15_000;
/** Tail of the sandbox's own stderr quoted in the error when it dies without a result. */
const STDERR_TAIL_CHARS = 2_000;

const PYTHON = "/usr/bin/python3";
/** Where node is looked for, in order. Only a binary whose real path is under /usr is reachable: /usr
 * is the one host directory the sandbox binds. */
const NODE_CANDIDATES = [process.execPath, "/usr/bin/node", "/usr/local/bin/node"];
const SANDBOX_HOST_DIR = "/usr/";
/** Bubblewrap, which the namespace level and stdio MCP servers run under. */
export const BWRAP = "/usr/bin/bwrap";
const PRLIMIT = "/usr/bin/prlimit";
const KILL = "/usr/bin/kill";

const RESULT_MARKER = "\n__KELPIE_RESULT__";
/** What the JS schema deriver accepts as a function name; the Node wrapper evaluates it as code. */
const JS_IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

// Imports first, so a pooled sandbox pays for them while idle; then blocks until its one request
// arrives. Runs the tool's function with JSON arguments and the tool's env vars (a pre-started
// process cannot take them from bubblewrap); what the tool prints is captured separately. The
// result is one line: json.dumps escapes newlines.
const PY_WRAPPER = String.raw`
import io, json, os, sys, contextlib, traceback
req = json.loads(sys.stdin.read())
os.environ.update(req["env"])
out, err = io.StringIO(), io.StringIO()
result = {}
try:
    ns = {"__name__": "__tool__"}
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        exec(compile(req["source"], "<tool>", "exec"), ns)
        value = ns[req["function"]](**req["args"])
    result = {"ok": True, "value": value if isinstance(value, str) else json.dumps(value, default=str)}
except MemoryError:
    result = {"ok": False, "value": "MemoryError: the tool exceeded its memory limit"}
except BaseException as e:
    result = {"ok": False, "value": f"{type(e).__name__}: {e}", "trace": traceback.format_exc(limit=5)}
result["stdout"] = out.getvalue()
result["stderr"] = err.getvalue()
sys.__stdout__.write("${RESULT_MARKER.replace("\n", "\\n")}" + json.dumps(result) + "\n")
sys.__stdout__.flush()
`;

// The same protocol for node. The wrapper's own names live in a closure, so the tool's top-level
// declarations (evaluated as a global script, as in the isolate) cannot collide with them; the tool
// may require() Node's modules. Arguments come by position (JS has no keyword arguments). The result
// is one line: JSON.stringify escapes newlines.
const NODE_WRAPPER = String.raw`"use strict";
(() => {
  const vm = require("node:vm");
  const { format } = require("node:util");
  const chunks = [];
  process.stdin.on("data", (chunk) => chunks.push(chunk));
  process.stdin.once("end", async () => {
    const req = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    Object.assign(process.env, req.env);
    const out = [];
    const err = [];
    const sink = (lines) => (...parts) => void lines.push(format(...parts) + "\n");
    for (const name of ["log", "info", "debug"]) console[name] = sink(out);
    for (const name of ["error", "warn"]) console[name] = sink(err);
    let result;
    try {
      vm.runInThisContext(req.source, { filename: "<tool>" });
      const value = await vm.runInThisContext(req.function)(...req.args);
      result = { ok: true, value: typeof value === "string" ? value : String(JSON.stringify(value)) };
    } catch (e) {
      const message = e instanceof Error ? e.name + ": " + e.message : "Thrown: " + String(e);
      const memory = e instanceof RangeError && /allocation failed/i.test(e.message);
      result = { ok: false, value: memory ? message + " (the tool exceeded its memory limit)" : message };
    }
    result.stdout = out.join("");
    result.stderr = err.join("");
    process.stdout.write(${JSON.stringify(RESULT_MARKER)} + JSON.stringify(result) + "\n");
  });
})();
`;

export type ProcessLevel = "namespace" | "vm" | "process";
/** The interpreter a tool runs under: python3 for Python, node for JavaScript and TypeScript. */
export type SandboxRuntime = "python" | "node";

export interface SandboxRunOptions {
  /** Idle sandboxes to keep for this interpreter and level (default SANDBOX_POOL_SIZE); 0 starts every run cold. */
  poolSize?: number;
}

/** What differs between the interpreters; everything else (spawn, limits, pool, protocol) is shared. */
interface RuntimeSpec {
  readonly name: string;
  /** The interpreter's path, or why there is none. */
  binary(): string | { missing: string };
  /** The interpreter's arguments: flags, then the wrapper. */
  readonly args: readonly string[];
  /** RLIMIT_AS for the sandbox's processes. */
  readonly addressSpaceBytes: number;
  /** The memory limit as an error message names it. */
  readonly memoryLimit: string;
  /** The wrapper's request (JSON) for a run, or why the tool cannot run. */
  request(request: SandboxRequest): Promise<string>;
  /** A request whose run returns "ok": the start-up check runs it as a real run would. */
  readonly probeRequest: string;
}

const PYTHON_SPEC: RuntimeSpec = {
  name: "python3",
  binary: () => PYTHON,
  args: ["-I", "-c", PY_WRAPPER],
  addressSpaceBytes: SANDBOX_MEMORY_BYTES_MAX,
  memoryLimit: `${SANDBOX_MEMORY_BYTES_MAX} bytes of memory`,
  request: async (request) =>
    JSON.stringify({
      source: request.source,
      function: request.functionName,
      args: request.args,
      env: request.env,
    }),
  probeRequest: JSON.stringify({
    source: "def probe():\n    return 'ok'\n",
    function: "probe",
    args: {},
    env: {},
  }),
};

let nodeFound: string | { missing: string } | undefined;

/** The system node, found once: the server's own binary when it lives under /usr, else the usual places. */
function nodeBinary(): string | { missing: string } {
  if (nodeFound !== undefined) return nodeFound;
  const outside: string[] = [];
  for (const candidate of NODE_CANDIDATES) {
    let real: string;
    try {
      real = realpathSync(candidate); // a symlink may lead out of /usr (e.g. /etc/alternatives)
    } catch {
      continue;
    }
    if (real.startsWith(SANDBOX_HOST_DIR)) {
      nodeFound = real;
      return real;
    }
    outside.push(real);
  }
  nodeFound = {
    missing:
      `no node binary under ${SANDBOX_HOST_DIR}, the only host directory the sandbox binds (looked at ` +
      `${NODE_CANDIDATES.join(", ")}${outside.length > 0 ? `; found only ${outside.join(", ")}` : ""}): ` +
      "install the system Node.js (apt-get install nodejs)",
  };
  return nodeFound;
}

const NODE_SPEC: RuntimeSpec = {
  name: "node",
  binary: nodeBinary,
  // The heap limit makes V8 fail at the tool's memory budget, well inside the address-space limit.
  args: [`--max-old-space-size=${NODE_HEAP_MB_MAX}`, "-e", NODE_WRAPPER],
  addressSpaceBytes: NODE_ADDRESS_SPACE_BYTES_MAX,
  memoryLimit: `${NODE_HEAP_MB_MAX} MiB of JavaScript heap (${NODE_ADDRESS_SPACE_BYTES_MAX} bytes of address space)`,
  request: async (request) => {
    assert(JS_IDENTIFIER.test(request.functionName), `not a JS function name: ${request.functionName}`);
    return JSON.stringify({
      source: await toScript(request.language, request.source),
      function: request.functionName,
      args: request.parameterNames.map((name) => request.args[name]),
      env: request.env,
    });
  },
  probeRequest: JSON.stringify({
    source: "function probe() { return 'ok'; }",
    function: "probe",
    args: [],
    env: {},
  }),
};

const RUNTIMES: Record<SandboxRuntime, RuntimeSpec> = { python: PYTHON_SPEC, node: NODE_SPEC };

export function runtimeOf(language: SandboxLanguage): SandboxRuntime {
  return language === "python" ? "python" : "node";
}

/** One pre-started sandbox. It serves one run at most, then dies. */
interface Member {
  readonly runtime: SandboxRuntime;
  readonly level: ProcessLevel;
  readonly child: ChildProcess;
  /** The uid it runs as when the server is root; undefined otherwise. */
  readonly uid: number | undefined;
  /** The vm level's bundle, removed once the sandbox has exited. */
  readonly bundle: VmBundle | undefined;
  exited: boolean;
}

const RUNNING_AS_ROOT = process.getuid?.() === 0;

const pools: Record<SandboxRuntime, Record<ProcessLevel, Member[]>> = {
  python: { namespace: [], vm: [], process: [] },
  node: { namespace: [], vm: [], process: [] },
};
/** vm bundles being removed (vmCleanup); closeSandboxPool waits for them. */
const cleanups = new Set<Promise<void>>();
/** Bumped by closeSandboxPool so a refill scheduled before the close does not start new members. */
let poolGeneration = 0;

const uidsInUse = new Set<number>();
let uidCursor = 0;

/** The next uid of the sandbox range that no live sandbox holds (round robin), or null if all are held. */
function uidAcquire(): number | null {
  for (let i = 0; i < SANDBOX_UID_COUNT; i++) {
    const offset = (uidCursor + i) % SANDBOX_UID_COUNT;
    const uid = SANDBOX_UID_BASE + offset;
    if (!uidsInUse.has(uid)) {
      uidCursor = (offset + 1) % SANDBOX_UID_COUNT;
      uidsInUse.add(uid);
      return uid;
    }
  }
  return null;
}

/** Frees a uid once nothing runs as it any more, so the next holder's process count starts at zero. */
function uidRelease(uid: number, level: ProcessLevel): void {
  assert(uidsInUse.has(uid), `sandbox uid ${uid} released twice`);
  // Inside bubblewrap the PID namespace died with the sandbox. The process level has none, so
  // whatever the tool left running (even in its own session) is killed as that uid: kill -1.
  if (level === "namespace") {
    uidsInUse.delete(uid);
    return;
  }
  try {
    const sweep = spawn(KILL, ["-9", "--", "-1"], { stdio: "ignore", uid, gid: uid, env: {} });
    sweep.on("error", () => {}); // a failed sweep keeps the uid out of rotation: see 'close'
    sweep.once("close", (code) => {
      // 1 (ESRCH on some kills) also means nothing is left; anything else: keep the uid out of rotation.
      if (code === 0 || code === 1) uidsInUse.delete(uid);
    });
  } catch {
    // Could not sweep: never hand the uid out again rather than share it with a leftover process.
  }
}

/** Whether a sandbox at `level` runs as a uid of its own: as root, yes, except under gVisor, where runsc
 * must start as root (it drops its privileges itself) and the tool runs as nobody inside. */
function takesUid(level: ProcessLevel): boolean {
  return RUNNING_AS_ROOT && level !== "vm";
}

function uidOptions(uid: number | undefined): { uid?: number; gid?: number } {
  return uid === undefined ? {} : { uid, gid: uid };
}

/** Per interpreter and level: null when tools can run there, else why not. Checked once. */
const probes = new Map<string, string | null>();

/** Why `runtime` cannot run tools at `level` on this server, or null when it can. The first call for
 * each pair runs a trivial tool exactly as a run would (same binary, limits, uid and wrapper). */
export function sandboxProblem(runtime: SandboxRuntime, level: ProcessLevel): string | null {
  const key = `${runtime}:${level}`;
  const known = probes.get(key);
  if (known !== undefined) return known;
  const spec = RUNTIMES[runtime];
  if (level === "namespace" && !existsSync(BWRAP)) {
    return cacheProbe(
      key,
      `bubblewrap (${BWRAP}) is not available on this server: install it (apt-get install bubblewrap)`,
    );
  }
  if (level === "vm") {
    const missing = vmPrecondition();
    if (missing !== null) return cacheProbe(key, missing);
  }
  const binary = spec.binary();
  if (typeof binary !== "string") return cacheProbe(key, binary.missing);
  const uid = takesUid(level) ? uidAcquire() : undefined;
  // Every uid busy: cannot check now; ask again later rather than remember a passing state.
  if (uid === null) return `all ${SANDBOX_UID_COUNT} sandbox uids are in use`;
  const seccompFd = seccompFor(level);
  let probe: SpawnSyncReturns<string>;
  let bundle: VmBundle | undefined;
  try {
    bundle = level === "vm" ? vmBundle(vmProcess(spec, binary)) : undefined;
    const command = bundle?.command ?? sandboxCommand(spec, binary, level, seccompFd);
    probe = spawnSync(command[0]!, command.slice(1), {
      input: spec.probeRequest,
      encoding: "utf8",
      timeout: level === "vm" ? VM_PROBE_TIMEOUT_MS : PROBE_TIMEOUT_MS,
      killSignal: "SIGKILL",
      env: sandboxEnv(level),
      cwd: "/tmp",
      stdio: sandboxStdio(seccompFd),
      ...uidOptions(uid),
    });
  } catch (err) {
    if (uid !== undefined) uidRelease(uid, level);
    return cacheProbe(
      key,
      `could not start the ${level} sandbox: ${err instanceof Error ? err.message : String(err)}`,
    );
  } finally {
    if (seccompFd !== null) closeSync(seccompFd);
    if (bundle !== undefined) vmCleanupSync(bundle);
  }
  if (uid !== undefined) uidRelease(uid, level);
  const stdout = probe.stdout ?? "";
  const at = stdout.indexOf(RESULT_MARKER);
  if (probe.error === undefined && at >= 0) {
    const line = stdout.slice(at + RESULT_MARKER.length).split("\n", 1)[0] ?? "";
    const result = parseResult(line, level);
    if (result.ok && result.value === "ok") return cacheProbe(key, null);
  }
  const how = probe.error?.message ?? (probe.signal ? `killed by ${probe.signal}` : `exit ${probe.status}`);
  return cacheProbe(
    key,
    `${spec.name} (${binary}) could not run a trivial tool in the ${level} sandbox (${how}): ${tail(probe.stderr ?? "")}`.trim(),
  );
}

function cacheProbe(key: string, problem: string | null): string | null {
  probes.set(key, problem);
  return problem;
}

/** Whether bubblewrap is installed and can run a sandboxed python3 here, as a run would. */
export function namespaceAvailable(): boolean {
  return sandboxProblem("python", "namespace") === null;
}

function limitsPrefix(spec: RuntimeSpec): string[] {
  return [
    PRLIMIT,
    `--as=${spec.addressSpaceBytes}`,
    `--cpu=${SANDBOX_CPU_SECONDS_MAX}`,
    `--nproc=${SANDBOX_PROCESSES_MAX}`,
    `--fsize=${SANDBOX_FILE_BYTES_MAX}`,
    `--nofile=${SANDBOX_FILES_OPEN_MAX}`,
    "--",
  ];
}

/** The sandbox's descriptor bubblewrap reads the seccomp filter from (`--seccomp`). */
export const SANDBOX_SECCOMP_FD = 3;

/** A descriptor of the filter file, which is already unlinked: nothing is left in /tmp. */
let seccompHeld: number | null | undefined;

/** A fresh read descriptor of this machine's seccomp filter (null: none for this architecture), to
 * pass as the sandbox's fd SANDBOX_SECCOMP_FD and close once spawned. Each spawn needs its own: a
 * shared one would share its read offset. A file rather than a pipe, because the start-up probe is
 * a synchronous spawn, which can pass only files. */
export function seccompDescriptor(): number | null {
  if (seccompHeld === undefined) {
    const program = hostSeccompProgram();
    if (program === null) {
      seccompHeld = null;
    } else {
      const dir = mkdtempSync(join(tmpdir(), "kelpie-seccomp-"));
      try {
        const path = join(dir, "filter");
        writeFileSync(path, program, { mode: 0o600 });
        seccompHeld = openSync(path, "r");
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  }
  // Reopened through /proc: a new open file (own offset) of the unlinked file.
  return seccompHeld === null ? null : openSync(`/proc/self/fd/${seccompHeld}`, "r");
}

/** Whether the namespace level loads a seccomp filter on this machine's architecture. */
export function seccompSupported(): boolean {
  return hostSeccompProgram() !== null;
}

/** bubblewrap's options for a sandbox, up to the command. The filter comes in on SANDBOX_SECCOMP_FD
 * when `seccomp` (see seccompDescriptor). */
export function bwrapArgs(seccomp: boolean): string[] {
  const size = String(SANDBOX_TMPFS_BYTES_MAX);
  return [
    "--unshare-all",
    // A user namespace of its own (--unshare-all only tries), so that none can be made inside it.
    "--unshare-user",
    "--disable-userns",
    ...(seccomp ? ["--seccomp", String(SANDBOX_SECCOMP_FD)] : []),
    "--die-with-parent",
    "--new-session",
    "--clearenv",
    "--ro-bind",
    "/usr",
    "/usr",
    "--symlink",
    "usr/lib",
    "/lib",
    "--symlink",
    "usr/lib64",
    "/lib64",
    "--symlink",
    "usr/bin",
    "/bin",
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--size",
    size,
    "--tmpfs",
    "/dev/shm",
    "--size",
    size,
    "--tmpfs",
    "/tmp",
    "--size",
    size,
    "--tmpfs",
    "/work",
    // The root and /dev are tmpfs mounts bubblewrap made, without a size: nothing may be written there.
    "--remount-ro",
    "/dev",
    "--remount-ro",
    "/",
    "--chdir",
    "/work",
    "--setenv",
    "PATH",
    "/usr/bin:/bin",
    "--setenv",
    "HOME",
    "/work",
    "--",
  ];
}

function sandboxCommand(
  spec: RuntimeSpec,
  binary: string,
  level: ProcessLevel,
  seccompFd: number | null,
): string[] {
  const run = [...limitsPrefix(spec), binary, ...spec.args];
  return level === "namespace" ? [BWRAP, ...bwrapArgs(seccompFd !== null), ...run] : run;
}

/** The interpreter and its limits as the vm level's bundle takes them. */
function vmProcess(spec: RuntimeSpec, binary: string): { argv: string[]; addressSpaceBytes: number } {
  return { argv: [binary, ...spec.args], addressSpaceBytes: spec.addressSpaceBytes };
}

/** The filter's descriptor for a spawn at `level` (only the namespace level loads it); close it after.
 * gVisor needs none of ours: it filters its own kernel's host calls and answers the tool's itself. */
function seccompFor(level: ProcessLevel): number | null {
  return level === "namespace" ? seccompDescriptor() : null;
}

/** stdin, stdout, stderr piped; the filter, when there is one, at SANDBOX_SECCOMP_FD. */
function sandboxStdio(seccompFd: number | null): Array<"pipe" | number> {
  return seccompFd === null ? ["pipe", "pipe", "pipe"] : ["pipe", "pipe", "pipe", seccompFd];
}

/** Bubblewrap sets the sandbox's env itself (--clearenv); a plain process gets only these. */
function sandboxEnv(level: ProcessLevel): Record<string, string> {
  return level === "process" ? { PATH: "/usr/bin:/bin", HOME: "/tmp" } : {};
}

/** Starts one sandbox, blocked on its request; a string says why it could not start. */
function memberStart(runtime: SandboxRuntime, level: ProcessLevel): Member | string {
  const spec = RUNTIMES[runtime];
  const binary = spec.binary();
  if (typeof binary !== "string") return `Could not start the ${level} sandbox: ${binary.missing}`;
  let uid: number | undefined;
  if (takesUid(level)) {
    const acquired = uidAcquire();
    if (acquired === null) {
      return `Too many sandboxed tools at once: all ${SANDBOX_UID_COUNT} sandbox uids (from ${SANDBOX_UID_BASE}) are in use.`;
    }
    uid = acquired;
  }
  let child: ChildProcess;
  let seccompFd: number | null = null;
  let bundle: VmBundle | undefined;
  try {
    seccompFd = seccompFor(level);
    bundle = level === "vm" ? vmBundle(vmProcess(spec, binary)) : undefined;
    const command = bundle?.command ?? sandboxCommand(spec, binary, level, seccompFd);
    child = spawn(command[0]!, command.slice(1), {
      stdio: sandboxStdio(seccompFd),
      detached: true, // its own process group, killed as one
      env: sandboxEnv(level),
      cwd: "/tmp",
      ...uidOptions(uid),
    });
  } catch (err) {
    if (uid !== undefined) uidRelease(uid, level);
    if (bundle !== undefined) vmCleanupSync(bundle);
    return `Could not start the ${level} sandbox: ${err instanceof Error ? err.message : String(err)}`;
  } finally {
    if (seccompFd !== null) closeSync(seccompFd); // the child holds its own copy
  }
  const member: Member = { runtime, level, child, uid, bundle, exited: false };
  // A sandbox that died before or while taking its request is reported through the run's 'close'.
  child.stdin!.on("error", () => {});
  child.on("error", () => {});
  // On exit, not close: a process the tool left behind may hold the pipes open, and the process
  // level's sweep (in uidRelease) is what kills it. A failed spawn emits 'close' without 'exit'.
  const gone = () => {
    if (member.exited) return;
    member.exited = true;
    const pool = pools[runtime][level];
    const index = pool.indexOf(member);
    if (index >= 0) pool.splice(index, 1);
    if (uid !== undefined) uidRelease(uid, level);
    if (bundle !== undefined) {
      const cleanup = vmCleanup(bundle);
      cleanups.add(cleanup);
      void cleanup.then(() => cleanups.delete(cleanup));
    }
  };
  child.once("exit", gone);
  child.once("close", gone);
  return member;
}

/** Child processes and their pipes (net.Socket) can be ref'd and unref'd alike. */
type Refable = { ref(): unknown; unref(): unknown };

/** Idle members must not keep the server's event loop alive; a taken one must. */
function memberRef(member: Member, ref: boolean): void {
  const { child } = member;
  const handles: Array<Refable | null> = [
    child,
    child.stdin as Refable | null,
    child.stdout as Refable | null,
    child.stderr as Refable | null,
  ];
  for (const handle of handles) {
    if (ref) handle?.ref();
    else handle?.unref();
  }
}

/** Kills the sandbox's process group (bubblewrap takes its PID namespace with it; runsc's sandbox and
 * file server are in the group too, and the tool's processes live inside the sandbox). */
function memberKill(member: Member): void {
  const { child } = member;
  // Once reaped, the pid may belong to someone else: only signal a child not yet reaped.
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, "SIGKILL");
  } catch {}
}

function poolTake(runtime: SandboxRuntime, level: ProcessLevel): Member | undefined {
  const pool = pools[runtime][level];
  while (pool.length > 0) {
    const member = pool.shift()!;
    if (!member.exited && member.child.exitCode === null && member.child.signalCode === null) return member;
  }
  return undefined;
}

function poolRefill(runtime: SandboxRuntime, level: ProcessLevel, size: number, generation: number): void {
  if (generation !== poolGeneration) return; // closed since this refill was scheduled
  const pool = pools[runtime][level];
  while (pool.length < size) {
    const member = memberStart(runtime, level);
    if (typeof member === "string") return; // the next run starts cold and reports why
    memberRef(member, false);
    pool.push(member);
  }
}

/** How many pre-started sandboxes wait idle for a run at this level (tests and benchmarks). */
export function sandboxPoolIdleCount(level: ProcessLevel, runtime: SandboxRuntime = "python"): number {
  return pools[runtime][level].filter((member) => !member.exited).length;
}

/** Kills every idle pooled sandbox; resolves once they are gone. Runs in flight finish on their own. */
export function closeSandboxPool(): Promise<void> {
  poolGeneration++;
  const idle = Object.values(pools).flatMap((byLevel) => [
    ...byLevel.namespace.splice(0),
    ...byLevel.vm.splice(0),
    ...byLevel.process.splice(0),
  ]);
  const stopped = Promise.all(
    idle.map(
      (member) =>
        new Promise<void>((resolve) => {
          if (member.exited) return resolve();
          member.child.once("close", () => resolve());
          memberRef(member, true); // the caller awaits this close: keep the event loop alive for it
          memberKill(member);
        }),
    ),
  );
  // A vm sandbox's clean-up starts as it exits; its cgroups must not outlive the server.
  return stopped.then(() => Promise.all([...cleanups])).then(() => undefined);
}

function failure(value: string, level: ProcessLevel): SandboxResult {
  return { ok: false, value, stdout: [], stderr: [], level };
}

/** Runs a tool under its interpreter (python3 for Python, node for JavaScript/TypeScript) at `level`. */
export function runSandboxed(
  request: SandboxRequest,
  level: ProcessLevel,
  options: SandboxRunOptions = {},
): Promise<SandboxResult> {
  const poolSize = options.poolSize ?? SANDBOX_POOL_SIZE;
  assert(
    Number.isInteger(poolSize) && poolSize >= 0 && poolSize <= SANDBOX_POOL_SIZE_MAX,
    `sandbox pool size must be an integer in [0, ${SANDBOX_POOL_SIZE_MAX}], got ${poolSize}`,
  );
  const runtime = runtimeOf(request.language);
  // Built before a sandbox is taken: compiling TypeScript must not count against the wall clock.
  return RUNTIMES[runtime].request(request).then(
    (payload) => {
      const member = (poolSize > 0 ? poolTake(runtime, level) : undefined) ?? memberStart(runtime, level);
      if (poolSize > 0) {
        // After this run's request is written: the refill's spawn must not delay it.
        const generation = poolGeneration;
        setImmediate(() => poolRefill(runtime, level, poolSize, generation)); // det-ok: scheduling only, no clock read
      }
      if (typeof member === "string") return failure(member, level);
      return memberRun(member, payload);
    },
    (err: unknown) =>
      failure(
        `The tool's ${request.language} could not be compiled: ${err instanceof Error ? err.message : String(err)}`,
        level,
      ),
  );
}

/** The end of a sandbox's stderr, marked when cut. */
function tail(stderr: string, cut = false): string {
  return stderr.length > STDERR_TAIL_CHARS || cut
    ? `[stderr, last ${STDERR_TAIL_CHARS} chars] ${stderr.slice(-STDERR_TAIL_CHARS)}`
    : stderr;
}

/** The signal that ended the sandbox: given by the kernel, or (bwrap, runsc) passed on as exit code 128 + n. */
function signalOf(code: number | null, signal: NodeJS.Signals | null, level: ProcessLevel): string | null {
  if (signal !== null) return signal;
  if (level === "process" || code === null || code <= 128) return null;
  const found = Object.entries(osConstants.signals).find(([, number]) => number === code - 128);
  return found?.[0] ?? null;
}

/** Signals a limit sends: SIGKILL (wall clock, kernel), SIGXCPU (CPU time), SIGABRT (V8 out of memory). */
const LIMIT_SIGNALS = ["SIGKILL", "SIGXCPU", "SIGABRT"];

function memberRun(member: Member, payload: string): Promise<SandboxResult> {
  const { child, level } = member;
  const spec = RUNTIMES[member.runtime];
  memberRef(member, true);
  return new Promise((resolve) => {
    let stdout = "";
    let stdoutBytes = 0;
    let stderr = "";
    let stderrCut = false;
    let markerAt = -1;
    let settled = false;
    const settle = (result: SandboxResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(result);
      // The result is in: whatever the tool left running (forks, a fork bomb) dies now.
      memberKill(member);
    };
    child.stdout!.setEncoding("utf8");
    child.stdout!.on("data", (chunk: string) => {
      if (settled) return;
      const before = stdout.length;
      stdout += chunk;
      stdoutBytes += Buffer.byteLength(chunk, "utf8");
      if (stdoutBytes > SANDBOX_OUTPUT_BYTES_MAX) {
        return settle(
          failure(
            `${stdout.slice(0, SANDBOX_OUTPUT_BYTES_MAX)}\n[truncated by Kelpie: the tool printed more than ${SANDBOX_OUTPUT_BYTES_MAX} bytes and was killed]`,
            level,
          ),
        );
      }
      // The first complete result line wins: forks of the tool may print results of their own later.
      if (markerAt < 0) markerAt = stdout.indexOf(RESULT_MARKER, Math.max(0, before - RESULT_MARKER.length));
      if (markerAt < 0) return;
      const start = markerAt + RESULT_MARKER.length;
      const end = stdout.indexOf("\n", Math.max(start, before));
      if (end >= 0) settle(parseResult(stdout.slice(start, end), level));
    });
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (chunk: string) => {
      if (stderr.length < SANDBOX_OUTPUT_BYTES_MAX) stderr += chunk;
      else stderrCut = true;
    });
    child.once("close", (code, signal) => {
      // Died without a complete result line.
      const killedBy = signalOf(code, signal, level);
      const why =
        killedBy === null
          ? `exited with ${code}`
          : LIMIT_SIGNALS.includes(killedBy)
            ? `was killed by ${killedBy}: it hit its limit of ${SANDBOX_CPU_SECONDS_MAX} s CPU time or ${spec.memoryLimit}${level === "vm" ? ` (${VM_MEMORY_BYTES_MAX} bytes for the whole vm sandbox)` : ""}`
            : `was killed by ${killedBy}`;
      settle({
        ok: false,
        value: `The tool process ${why}. ${tail(stderr, stderrCut)}`.trim(),
        stdout: [],
        stderr: stderr ? [stderr] : [],
        level,
      });
    });
    // The wall clock starts with the request: a pooled sandbox may have idled for any time before.
    const onTimeout = () =>
      settle(
        failure(
          `Timeout: the tool ran past its ${SANDBOX_WALL_TIMEOUT_MS} ms wall-clock limit and was killed`,
          level,
        ),
      );
    const timer = setTimeout(onTimeout, SANDBOX_WALL_TIMEOUT_MS); // det-ok: a real child needs a real kill timer
    child.stdin!.end(payload);
  });
}

function parseResult(line: string, level: ProcessLevel): SandboxResult {
  let parsed: { ok?: unknown; value?: unknown; stdout?: unknown; stderr?: unknown };
  try {
    parsed = JSON.parse(line) as typeof parsed;
  } catch {
    // Only the tool itself can write a malformed result line (straight to fd 1).
    const shown =
      line.length > STDERR_TAIL_CHARS
        ? `[first ${STDERR_TAIL_CHARS} chars] ${line.slice(0, STDERR_TAIL_CHARS)}`
        : line;
    return failure(`The tool's result could not be read: ${shown}`, level);
  }
  return {
    ok: parsed.ok === true,
    value: typeof parsed.value === "string" ? parsed.value : JSON.stringify(parsed.value ?? null),
    stdout: typeof parsed.stdout === "string" && parsed.stdout ? [parsed.stdout] : [],
    stderr: typeof parsed.stderr === "string" && parsed.stderr ? [parsed.stderr] : [],
    level,
  };
}
