// Python tools under bubblewrap: no network (own network namespace), own PID namespace, a
// read-only /usr and nothing else of the host (no /etc, no data dir), a private tmpfs work dir,
// rlimits (address space, CPU, processes, file size) and a wall-clock timeout. The `process` level
// is the same run without bubblewrap, for operators who opt in.
import { spawn, spawnSync } from "node:child_process";
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

const PYTHON = "/usr/bin/python3";
const BWRAP = "/usr/bin/bwrap";
const PRLIMIT = "/usr/bin/prlimit";

// Runs the tool's function with JSON arguments; what the tool prints is captured separately.
const PY_WRAPPER = String.raw`
import io, json, sys, contextlib, traceback
req = json.loads(sys.stdin.read())
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
sys.__stdout__.write("\n__KELPIE_RESULT__" + json.dumps(result))
`;

let bwrapChecked: boolean | undefined;

/** Whether bubblewrap is installed and can make namespaces here. */
export function namespaceAvailable(): boolean {
  if (bwrapChecked === undefined) {
    const probe = spawnSync(BWRAP, [...bwrapArgs({}), "/usr/bin/true"], { timeout: 5_000 });
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

function bwrapArgs(env: Record<string, string>): string[] {
  const args = [
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
  ];
  for (const [k, v] of Object.entries(env)) args.push("--setenv", k, v);
  return [...args, "--"];
}

export function runPython(request: SandboxRequest, level: "namespace" | "process"): Promise<SandboxResult> {
  const command =
    level === "namespace"
      ? [BWRAP, ...bwrapArgs(request.env), ...limitsPrefix(), PYTHON, "-I", "-c", PY_WRAPPER]
      : [...limitsPrefix(), PYTHON, "-I", "-c", PY_WRAPPER];
  return new Promise((resolve) => {
    const child = spawn(command[0]!, command.slice(1), {
      stdio: ["pipe", "pipe", "pipe"],
      detached: true,
      env: level === "process" ? { PATH: "/usr/bin:/bin", HOME: "/tmp", ...request.env } : {},
      cwd: "/tmp",
    });
    let stdout = "";
    let stderr = "";
    let overflow = false;
    let timedOut = false;
    const kill = () => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
      } catch {}
    };
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, SANDBOX_WALL_TIMEOUT_MS); // det-ok: a real child process needs a real kill timer
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString("utf8");
      if (stdout.length > SANDBOX_OUTPUT_BYTES_MAX) {
        overflow = true;
        kill();
      }
    });
    child.stderr.on("data", (chunk: Buffer) => {
      if (stderr.length < SANDBOX_OUTPUT_BYTES_MAX) stderr += chunk.toString("utf8");
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const marker = stdout.lastIndexOf("\n__KELPIE_RESULT__");
      if (timedOut) {
        return resolve({
          ok: false,
          value: `Timeout: the tool ran past its ${SANDBOX_WALL_TIMEOUT_MS} ms wall-clock limit and was killed`,
          stdout: [],
          stderr: [],
          level,
        });
      }
      if (overflow) {
        return resolve({
          ok: false,
          value: `${stdout.slice(0, SANDBOX_OUTPUT_BYTES_MAX)}\n[truncated by Kelpie: the tool printed more than ${SANDBOX_OUTPUT_BYTES_MAX} bytes and was killed]`,
          stdout: [],
          stderr: [],
          level,
        });
      }
      if (marker < 0) {
        // bwrap passes the child's fate on as an exit code: 128 + signal (SIGKILL 9, SIGXCPU 24).
        const killedBy = signal ?? (code === 137 ? "SIGKILL" : code === 152 ? "SIGXCPU" : null);
        const why =
          killedBy !== null
            ? `was killed by ${killedBy}: it hit its limit of ${SANDBOX_CPU_SECONDS_MAX} s CPU time or ${SANDBOX_MEMORY_BYTES_MAX} bytes of memory`
            : `exited with ${code}`;
        return resolve({
          ok: false,
          value: `The tool process ${why}. ${stderr.slice(-2_000)}`.trim(),
          stdout: [],
          stderr: stderr ? [stderr] : [],
          level,
        });
      }
      const parsed = JSON.parse(stdout.slice(marker + "\n__KELPIE_RESULT__".length)) as {
        ok: boolean;
        value: unknown;
        stdout: string;
        stderr: string;
      };
      resolve({
        ok: parsed.ok,
        value: typeof parsed.value === "string" ? parsed.value : JSON.stringify(parsed.value),
        stdout: parsed.stdout ? [parsed.stdout] : [],
        stderr: parsed.stderr ? [parsed.stderr] : [],
        level,
      });
    });
    child.stdin.end(
      JSON.stringify({ source: request.source, function: request.functionName, args: request.args }),
    );
  });
}
