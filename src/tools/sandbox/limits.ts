// Bounds for one sandboxed tool run. Output past its bound is cut with an explicit marker.
export const SANDBOX_WALL_TIMEOUT_MS = 10_000;
export const SANDBOX_CPU_SECONDS_MAX = 5;
export const SANDBOX_MEMORY_BYTES_MAX = 512 * 1024 * 1024;
export const SANDBOX_PROCESSES_MAX = 32;
export const SANDBOX_FILE_BYTES_MAX = 16 * 1024 * 1024;
/** What one run prints, and separately what it returns: past it, cut with "[output cut at N bytes]"
 * (the namespace and process levels kill a tool whose printed output and result pass it). */
export const SANDBOX_OUTPUT_BYTES_MAX = 1024 * 1024;
/** Size of each writable tmpfs in the namespace sandbox (/tmp, /work, /dev/shm); the rest is read-only. */
export const SANDBOX_TMPFS_BYTES_MAX = 64 * 1024 * 1024;
/** Open files per namespace or process sandbox: bounds the kernel memory a tool can pin in pipes and sockets. */
export const SANDBOX_FILES_OPEN_MAX = 256;
/** Sandboxed runs at once, across all levels; further runs wait in line. */
export const SANDBOX_CONCURRENT_MAX = 8;
/** Runs that may wait for a free slot; a run beyond them fails at once, saying so. Each running
 * sandbox ends within its wall-clock limit, so a run waits at most
 * ceil(SANDBOX_QUEUED_MAX / SANDBOX_CONCURRENT_MAX) wall-clock limits before it starts. */
export const SANDBOX_QUEUED_MAX = 32;
export const ISOLATE_MEMORY_MB_MAX = 128;
/** Limit on the isolate's synchronous run (isolated-vm's own timeout: a busy loop). */
export const ISOLATE_TIMEOUT_MS = 5_000;
/** Limit on the whole isolate run, awaited promises included; then the isolate is disposed, which
 * ends everything still pending in it. */
export const ISOLATE_WALL_TIMEOUT_MS = SANDBOX_WALL_TIMEOUT_MS;
/** A Node tool's JavaScript heap: the same memory budget as a Python tool's. */
export const NODE_HEAP_MB_MAX = SANDBOX_MEMORY_BYTES_MAX / (1024 * 1024);
/** RLIMIT_AS for a Node tool. V8 reserves ~700 MiB of address space before any tool code runs and
 * about twice the heap it uses, so Python's 512 MiB would not even start node; 2 GiB leaves room for
 * the 512 MiB heap and still refuses a multi-GiB allocation. */
export const NODE_ADDRESS_SPACE_BYTES_MAX = 2 * 1024 * 1024 * 1024;
/** Memory of one whole vm sandbox (its memory cgroup): gVisor's kernel, its file server, the tool's
 * processes and its tmpfs files together. Each process is held to its own address-space limit as at
 * the namespace level; this bounds them all at once (32 processes of 512 MiB would be 16 GiB). Past
 * it the host kills the sandbox. Room for node's 512 MiB heap plus gVisor's own ~100 MiB. */
export const VM_MEMORY_BYTES_MAX = 1024 * 1024 * 1024;
/** Host tasks (threads and processes) of one vm sandbox (its pids cgroup), a backstop behind the
 * tool's own RLIMIT_NPROC, which gVisor enforces: gVisor itself runs ~30 host threads, and on the
 * ptrace platform each process of the tool takes a host stub process and threads. */
export const VM_HOST_TASKS_MAX = 512;
/** Cores one vm sandbox may use at once (its CPU cgroup's quota), whatever it forks. */
export const VM_CPUS_MAX = 1;

export const SANDBOX_LEVELS = ["isolate", "wasm", "namespace", "vm", "process"] as const;
export type SandboxLevel = (typeof SANDBOX_LEVELS)[number];
export type SandboxLanguage = "python" | "javascript" | "typescript";

/** The level per language when a tool asks for none (`javascript` covers TypeScript too). */
export interface SandboxDefaults {
  javascript: SandboxLevel;
  python: SandboxLevel;
}
export const SANDBOX_DEFAULTS: SandboxDefaults = { javascript: "isolate", python: "wasm" };

/** The environment variable that sets each language's default level. */
export const SANDBOX_DEFAULT_ENV: Record<keyof SandboxDefaults, string> = {
  javascript: "KELPIE_SANDBOX_JS",
  python: "KELPIE_SANDBOX_PYTHON",
};

export function defaultsKey(language: SandboxLanguage): keyof SandboxDefaults {
  return language === "python" ? "python" : "javascript";
}

/** Null when `value` is a level a `language` tool can run at; otherwise what is wrong with it. */
export function levelProblem(value: unknown, language: SandboxLanguage): string | null {
  if (typeof value !== "string" || !(SANDBOX_LEVELS as readonly string[]).includes(value)) {
    return `must be one of ${SANDBOX_LEVELS.join(", ")}, got ${JSON.stringify(value)}`;
  }
  if (value === "isolate" && language === "python") {
    return "cannot be isolate for a python tool: the V8 isolate runs JavaScript and TypeScript only (use wasm, namespace, vm or process)";
  }
  if (value === "wasm" && language !== "python") {
    return "cannot be wasm for a JavaScript or TypeScript tool: the wasm level runs Python only (use isolate, namespace, vm or process)";
  }
  return null;
}

export interface SandboxRequest {
  language: SandboxLanguage;
  source: string;
  functionName: string;
  args: Record<string, unknown>;
  /** Parameter names in declaration order (JS calls pass arguments by position). */
  parameterNames: string[];
  env: Record<string, string>;
  /** The level the tool asked for (its metadata's `sandbox`); undefined: the server's default. */
  level?: SandboxLevel;
}

export interface SandboxResult {
  ok: boolean;
  value: string;
  stdout: string[];
  stderr: string[];
  level: SandboxLevel;
}
