// Python tools under bubblewrap: no network (own network namespace), own PID namespace, a
// read-only /usr and nothing else of the host (no /etc, no data dir), a private tmpfs work dir,
// rlimits (address space, CPU, processes, file size) and a wall-clock timeout. The `process` level
// is the same run without bubblewrap, for operators who opt in.
//
// Sandboxes are started ahead of need: a small warm pool per level holds sandboxes whose python3
// has already started and imported the wrapper's modules, blocked reading its request on stdin.
// A run takes one (or starts one cold when the pool is empty) and the pool is refilled in the
// background. Each sandbox serves exactly one run, so nothing (files, interpreter state, env)
// carries over from one run to the next.
//
// When the server runs as root, sandboxes run as an unprivileged uid from a reserved range, one uid
// per live sandbox: the kernel never enforces RLIMIT_NPROC for root, and a per-sandbox uid makes
// the process limit count only that sandbox's own processes.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { assert } from "../../core/assert.ts";
import {
  SANDBOX_CPU_SECONDS_MAX,
  SANDBOX_FILE_BYTES_MAX,
  SANDBOX_MEMORY_BYTES_MAX,
  SANDBOX_OUTPUT_BYTES_MAX,
  SANDBOX_PROCESSES_MAX,
  SANDBOX_WALL_TIMEOUT_MS,
  type SandboxRequest,
  type SandboxResult,
} from "./limits.ts";

/** Idle pre-started sandboxes kept per level; a run finds one ready instead of starting one. */
export const SANDBOX_POOL_SIZE = 2;
/** Upper bound on a configured pool size: each idle sandbox holds a python3 (~10 MB) and a uid. */
export const SANDBOX_POOL_SIZE_MAX = 16;
/** First uid of the range sandboxes run as when the server is root; no host account may use it. */
export const SANDBOX_UID_BASE = 200_000;
/** Size of that range: the most sandboxes (running or pooled) that can be live at once as root. */
export const SANDBOX_UID_COUNT = 1_000;

const PROBE_TIMEOUT_MS = 5_000;
/** Tail of the sandbox's own stderr quoted in the error when it dies without a result. */
const STDERR_TAIL_CHARS = 2_000;

const PYTHON = "/usr/bin/python3";
const BWRAP = "/usr/bin/bwrap";
const PRLIMIT = "/usr/bin/prlimit";
const KILL = "/usr/bin/kill";

const RESULT_MARKER = "\n__KELPIE_RESULT__";

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

export type PythonLevel = "namespace" | "process";

export interface RunPythonOptions {
  /** Idle sandboxes to keep for this level (default SANDBOX_POOL_SIZE); 0 starts every run cold. */
  poolSize?: number;
}

/** One pre-started sandbox. It serves one run at most, then dies. */
interface Member {
  readonly level: PythonLevel;
  readonly child: ChildProcess;
  /** The uid it runs as when the server is root; undefined otherwise. */
  readonly uid: number | undefined;
  exited: boolean;
}

const RUNNING_AS_ROOT = process.getuid?.() === 0;

const pools: Record<PythonLevel, Member[]> = { namespace: [], process: [] };
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
function uidRelease(uid: number, level: PythonLevel): void {
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

function uidOptions(uid: number | undefined): { uid?: number; gid?: number } {
  return uid === undefined ? {} : { uid, gid: uid };
}

let bwrapChecked: boolean | undefined;

/** Whether bubblewrap is installed and can run a sandboxed python3 here, as a run would. */
export function namespaceAvailable(): boolean {
  if (bwrapChecked === undefined) {
    const uid = RUNNING_AS_ROOT ? uidAcquire() : undefined;
    if (uid === null) return false; // every uid busy: cannot probe now, ask again later
    const probe = spawnSync(BWRAP, [...bwrapArgs(), ...limitsPrefix(), PYTHON, "-I", "-c", "pass"], {
      timeout: PROBE_TIMEOUT_MS,
      env: {},
      cwd: "/tmp",
      ...uidOptions(uid),
    });
    if (uid !== undefined) uidRelease(uid, "namespace");
    bwrapChecked = probe.status === 0;
  }
  return bwrapChecked;
}

function limitsPrefix(): string[] {
  return [
    PRLIMIT,
    `--as=${SANDBOX_MEMORY_BYTES_MAX}`,
    `--cpu=${SANDBOX_CPU_SECONDS_MAX}`,
    `--nproc=${SANDBOX_PROCESSES_MAX}`,
    `--fsize=${SANDBOX_FILE_BYTES_MAX}`,
    "--",
  ];
}

function bwrapArgs(): string[] {
  return [
    "--unshare-all",
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
    "--tmpfs",
    "/tmp",
    "--tmpfs",
    "/work",
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

/** Starts one sandbox, blocked on its request; a string says why it could not start. */
function memberStart(level: PythonLevel): Member | string {
  let uid: number | undefined;
  if (RUNNING_AS_ROOT) {
    const acquired = uidAcquire();
    if (acquired === null) {
      return `Too many Python tools at once: all ${SANDBOX_UID_COUNT} sandbox uids (from ${SANDBOX_UID_BASE}) are in use.`;
    }
    uid = acquired;
  }
  const python = [PYTHON, "-I", "-c", PY_WRAPPER];
  const command =
    level === "namespace"
      ? [BWRAP, ...bwrapArgs(), ...limitsPrefix(), ...python]
      : [...limitsPrefix(), ...python];
  let child: ChildProcess;
  try {
    child = spawn(command[0]!, command.slice(1), {
      stdio: ["pipe", "pipe", "pipe"],
      detached: true, // its own process group, killed as one
      env: level === "process" ? { PATH: "/usr/bin:/bin", HOME: "/tmp" } : {},
      cwd: "/tmp",
      ...uidOptions(uid),
    });
  } catch (err) {
    if (uid !== undefined) uidRelease(uid, level);
    return `Could not start the ${level} sandbox: ${err instanceof Error ? err.message : String(err)}`;
  }
  const member: Member = { level, child, uid, exited: false };
  // A sandbox that died before or while taking its request is reported through the run's 'close'.
  child.stdin!.on("error", () => {});
  child.on("error", () => {});
  // On exit, not close: a process the tool left behind may hold the pipes open, and the process
  // level's sweep (in uidRelease) is what kills it. A failed spawn emits 'close' without 'exit'.
  const gone = () => {
    if (member.exited) return;
    member.exited = true;
    const pool = pools[level];
    const index = pool.indexOf(member);
    if (index >= 0) pool.splice(index, 1);
    if (uid !== undefined) uidRelease(uid, level);
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

/** Kills the sandbox's process group (bubblewrap takes its PID namespace with it). */
function memberKill(member: Member): void {
  const { child } = member;
  // Once reaped, the pid may belong to someone else: only signal a child not yet reaped.
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, "SIGKILL");
  } catch {}
}

function poolTake(level: PythonLevel): Member | undefined {
  const pool = pools[level];
  while (pool.length > 0) {
    const member = pool.shift()!;
    if (!member.exited && member.child.exitCode === null && member.child.signalCode === null) return member;
  }
  return undefined;
}

function poolRefill(level: PythonLevel, size: number, generation: number): void {
  if (generation !== poolGeneration) return; // closed since this refill was scheduled
  const pool = pools[level];
  while (pool.length < size) {
    const member = memberStart(level);
    if (typeof member === "string") return; // the next run starts cold and reports why
    memberRef(member, false);
    pool.push(member);
  }
}

/** How many pre-started sandboxes wait idle for a run at this level (tests and benchmarks). */
export function sandboxPoolIdleCount(level: PythonLevel): number {
  return pools[level].filter((member) => !member.exited).length;
}

/** Kills every idle pooled sandbox; resolves once they are gone. Runs in flight finish on their own. */
export function closeSandboxPool(): Promise<void> {
  poolGeneration++;
  const idle = [...pools.namespace.splice(0), ...pools.process.splice(0)];
  return Promise.all(
    idle.map(
      (member) =>
        new Promise<void>((resolve) => {
          if (member.exited) return resolve();
          member.child.once("close", () => resolve());
          memberRef(member, true); // the caller awaits this close: keep the event loop alive for it
          memberKill(member);
        }),
    ),
  ).then(() => undefined);
}

function failure(value: string, level: PythonLevel): SandboxResult {
  return { ok: false, value, stdout: [], stderr: [], level };
}

export function runPython(
  request: SandboxRequest,
  level: PythonLevel,
  options: RunPythonOptions = {},
): Promise<SandboxResult> {
  const poolSize = options.poolSize ?? SANDBOX_POOL_SIZE;
  assert(
    Number.isInteger(poolSize) && poolSize >= 0 && poolSize <= SANDBOX_POOL_SIZE_MAX,
    `sandbox pool size must be an integer in [0, ${SANDBOX_POOL_SIZE_MAX}], got ${poolSize}`,
  );
  const member = (poolSize > 0 ? poolTake(level) : undefined) ?? memberStart(level);
  if (poolSize > 0) {
    // After this run's request is written: the refill's spawn must not delay it.
    const generation = poolGeneration;
    setImmediate(() => poolRefill(level, poolSize, generation)); // det-ok: scheduling only, no clock read
  }
  if (typeof member === "string") return Promise.resolve(failure(member, level));
  return memberRun(member, request);
}

function memberRun(member: Member, request: SandboxRequest): Promise<SandboxResult> {
  const { child, level } = member;
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
      // bwrap passes the child's fate on as an exit code: 128 + signal (SIGKILL 9, SIGXCPU 24).
      const killedBy = signal ?? (code === 137 ? "SIGKILL" : code === 152 ? "SIGXCPU" : null);
      const why =
        killedBy !== null
          ? `was killed by ${killedBy}: it hit its limit of ${SANDBOX_CPU_SECONDS_MAX} s CPU time or ${SANDBOX_MEMORY_BYTES_MAX} bytes of memory`
          : `exited with ${code}`;
      const tail =
        stderr.length > STDERR_TAIL_CHARS || stderrCut
          ? `[stderr, last ${STDERR_TAIL_CHARS} chars] ${stderr.slice(-STDERR_TAIL_CHARS)}`
          : stderr;
      settle({
        ok: false,
        value: `The tool process ${why}. ${tail}`.trim(),
        stdout: [],
        stderr: stderr ? [stderr] : [],
        level,
      });
    });
    // The wall clock starts with the request: a pooled sandbox may have idled for any time before.
    const timer = setTimeout(() => {
      settle(
        failure(
          `Timeout: the tool ran past its ${SANDBOX_WALL_TIMEOUT_MS} ms wall-clock limit and was killed`,
          level,
        ),
      );
    }, SANDBOX_WALL_TIMEOUT_MS); // det-ok: a real child process needs a real kill timer
    child.stdin!.end(
      JSON.stringify({
        source: request.source,
        function: request.functionName,
        args: request.args,
        env: request.env,
      }),
    );
  });
}

function parseResult(line: string, level: PythonLevel): SandboxResult {
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
