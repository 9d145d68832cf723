// stdio MCP servers: the operator's allow-list (KELPIE_MCP_STDIO_COMMANDS; off when empty) and the
// bubblewrap command line an allowed server runs under. A stdio server is a host command a client
// names, so it never runs outside the sandbox: own user, PID, network, IPC, UTS and cgroup
// namespaces (no network at all), no capabilities, no nested user namespaces, the namespace level's
// seccomp filter, a read-only /usr and the command's own files, the operator's extra read-only
// paths, a size-capped private /tmp (also HOME) and only the environment its config names, never
// the server's. When the server runs as root, the sandbox runs as an unprivileged uid of its own
// with a process limit, so a fork bomb stays inside its budget. Without bubblewrap, stdio servers
// fail with an error saying so: there is no unsandboxed fallback (an operator who wants one runs
// the MCP server over HTTP instead).
import {
  accessSync,
  existsSync,
  constants as fsConstants,
  lstatSync,
  readlinkSync,
  realpathSync,
} from "node:fs";
import { basename, dirname, isAbsolute, join } from "node:path";
import { assert } from "../../core/assert.ts";
import { KelpieError } from "../../core/errors.ts";
import { BWRAP, SANDBOX_SECCOMP_FD, seccompDescriptor } from "../sandbox/namespace.ts";

/** Which stdio MCP servers this server may start (KELPIE_MCP_STDIO_COMMANDS, KELPIE_MCP_STDIO_PATHS). */
export interface McpStdioPolicy {
  /** Commands a client may name, compared exactly; `*` allows any. Empty: stdio servers are off. */
  readonly commands: readonly string[];
  /** Absolute host paths bound read-only into every stdio server's sandbox, at the same place. */
  readonly paths: readonly string[];
  /**
   * Whether stdio servers share the host's network (KELPIE_MCP_STDIO_NETWORK=1): `npx`/`uvx`
   * downloading a server, a server calling a web API. Off: no network at all. On, a server reaches
   * whatever the host reaches, loopback and private addresses included; the operator opts in.
   */
  readonly network?: boolean;
}

export const MCP_STDIO_OFF: McpStdioPolicy = { commands: [], paths: [] };
export const MCP_STDIO_ANY_COMMAND = "*";
/** The writable tmpfs (/tmp, which holds HOME too) of one stdio server. */
export const MCP_STDIO_TMPFS_BYTES_MAX = 128 * 1024 * 1024;
/** Processes and threads of one stdio server, when the server runs as root (a uid of its own). */
export const MCP_STDIO_PROCESSES_MAX = 256;
/** First uid of the range stdio servers run as when the server is root, after the tool sandboxes' range. */
export const MCP_STDIO_UID_BASE = 201_000;
/** Size of that range: the most stdio servers that can run at once as root. */
export const MCP_STDIO_UID_COUNT = 1_000;
/** PATH inside the sandbox unless the server's config names one. */
export const MCP_STDIO_PATH = "/usr/local/bin:/usr/bin:/bin";
export const MCP_STDIO_HOME = "/tmp/home";

const PRLIMIT = "/usr/bin/prlimit";
const SYSTEM_DIR = "/usr";
/** Top-level directories that merged-/usr systems make symlinks into /usr; bound read-only otherwise. */
const SYSTEM_TOP_DIRS = ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];
/** Host files name resolution needs, bound only when stdio servers share the network. */
const NETWORK_ETC_PATHS = ["/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/gai.conf"];
/** The few host files a program commonly needs: the dynamic linker's cache, alternatives, CA certificates, time zone. */
const ETC_PATHS = [
  "/etc/ld.so.cache",
  "/etc/alternatives",
  "/etc/ssl",
  "/etc/ca-certificates",
  "/etc/localtime",
];
const ENABLE_HINT =
  "the operator enables them with KELPIE_MCP_STDIO_COMMANDS (a comma-separated allow-list of commands, or * for any); remote MCP servers (sse, streamable_http) need no setting";

/** Why a client may not register (or this server may not start) a stdio server running `command`, or null. */
export function stdioRefusal(policy: McpStdioPolicy, command: string): KelpieError | null {
  if (policy.commands.length === 0) {
    return new KelpieError(
      "MCP_STDIO_FORBIDDEN",
      `stdio MCP servers are disabled on this server: ${ENABLE_HINT}`,
    );
  }
  if (policy.commands.includes(MCP_STDIO_ANY_COMMAND) || policy.commands.includes(command)) return null;
  return new KelpieError(
    "MCP_STDIO_FORBIDDEN",
    `command '${command}' is not in this server's KELPIE_MCP_STDIO_COMMANDS allow-list (${policy.commands.join(", ")})`,
  );
}

/** What the transport spawns for one sandboxed stdio server. */
export interface SandboxedCommand {
  command: string;
  args: string[];
  /** The uid (and gid) to spawn it as when the server is root; release it when the process is gone. */
  uid: number | undefined;
  /** The seccomp filter, to pass as the child's descriptor SANDBOX_SECCOMP_FD and close once spawned. */
  seccompFd: number | null;
}

export interface StdioServerConfig {
  command: string;
  args: readonly string[];
  env: Readonly<Record<string, string>>;
}

const RUNNING_AS_ROOT = process.getuid?.() === 0;
const uidsInUse = new Set<number>();
let uidCursor = 0;

function uidAcquire(): number {
  for (let i = 0; i < MCP_STDIO_UID_COUNT; i++) {
    const offset = (uidCursor + i) % MCP_STDIO_UID_COUNT;
    const uid = MCP_STDIO_UID_BASE + offset;
    if (!uidsInUse.has(uid)) {
      uidCursor = (offset + 1) % MCP_STDIO_UID_COUNT;
      uidsInUse.add(uid);
      return uid;
    }
  }
  throw new Error(`too many stdio MCP servers at once: all ${MCP_STDIO_UID_COUNT} sandbox uids are in use`);
}

/** Gives a sandbox's uid back once its process has exited (its PID namespace went with it). */
export function stdioUidRelease(uid: number | undefined): void {
  if (uid === undefined) return;
  assert(uidsInUse.has(uid), `stdio MCP uid ${uid} released twice`);
  uidsInUse.delete(uid);
}

function isExecutableFile(path: string): boolean {
  try {
    accessSync(path, fsConstants.X_OK);
    return lstatSync(realpathSync(path)).isFile();
  } catch {
    return false;
  }
}

/** The host path `command` runs from inside the sandbox: itself if absolute, else the first match on PATH. */
function commandPath(command: string, path: string): string {
  if (isAbsolute(command)) {
    if (!isExecutableFile(command))
      throw new Error(`command '${command}' is not an executable file on this server`);
    return command;
  }
  for (const dir of path.split(":")) {
    if (!isAbsolute(dir)) continue;
    const candidate = join(dir, command);
    if (isExecutableFile(candidate)) return candidate;
  }
  throw new Error(`command '${command}' was not found on the sandbox's PATH (${path})`);
}

function underSystemDir(path: string): boolean {
  return path === SYSTEM_DIR || path.startsWith(`${SYSTEM_DIR}/`);
}

/** The nearest enclosing node_modules directory of `path` (not resolving links), or null. */
function nodeModulesOf(path: string): string | null {
  for (let dir = dirname(path); dir !== dirname(dir); dir = dirname(dir)) {
    if (basename(dir) === "node_modules") return dir;
  }
  return null;
}

/**
 * Read-only binds (host source → sandbox destination) for the command's own files, when they live
 * outside /usr: the node_modules tree a package's bin lives in (its dependencies are there too), or
 * else the one file. Both the path as named and its real path are bound, so links resolve inside.
 */
function commandBinds(path: string): Map<string, string> {
  const binds = new Map<string, string>();
  for (const p of [path, realpathSync(path)]) {
    if (underSystemDir(p) || underSystemDir(realpathSync(p))) continue;
    const tree = nodeModulesOf(p) ?? p;
    binds.set(tree, realpathSync(tree));
  }
  return binds;
}

/** Bubblewrap's arguments for the system part of the sandbox: /usr, its top-level links, a little of /etc. */
function systemArgs(network: boolean): string[] {
  const args = ["--ro-bind", SYSTEM_DIR, SYSTEM_DIR];
  for (const dir of SYSTEM_TOP_DIRS) {
    let stat: ReturnType<typeof lstatSync>;
    try {
      stat = lstatSync(dir);
    } catch {
      continue;
    }
    if (stat.isSymbolicLink()) args.push("--symlink", readlinkSync(dir), dir);
    else if (stat.isDirectory()) args.push("--ro-bind", dir, dir);
  }
  for (const path of network ? [...ETC_PATHS, ...NETWORK_ETC_PATHS] : ETC_PATHS)
    args.push("--ro-bind-try", path, path);
  return args;
}

/**
 * The command line that runs an allowed stdio server sandboxed. Throws (with a message for the
 * client) when it cannot run: no bubblewrap, a command not found, a configured path missing.
 */
export function sandboxedStdio(policy: McpStdioPolicy, config: StdioServerConfig): SandboxedCommand {
  if (!existsSync(BWRAP)) {
    throw new Error(
      `bubblewrap (${BWRAP}) is not installed on this server, and stdio MCP servers run only inside it: install it (apt-get install bubblewrap), or run the MCP server over HTTP`,
    );
  }
  const sandboxPath = config.env.PATH ?? MCP_STDIO_PATH;
  const binds = commandBinds(commandPath(config.command, sandboxPath));
  for (const path of policy.paths) {
    if (!existsSync(path))
      throw new Error(`KELPIE_MCP_STDIO_PATHS names ${path}, which does not exist on this server`);
    binds.set(path, realpathSync(path));
  }
  const args = [
    "--unshare-all",
    ...(policy.network === true ? ["--share-net"] : []),
    "--unshare-user",
    "--disable-userns",
    "--cap-drop",
    "ALL",
    "--die-with-parent",
    "--new-session",
    "--clearenv",
    ...systemArgs(policy.network === true),
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--size",
    String(MCP_STDIO_TMPFS_BYTES_MAX),
    "--tmpfs",
    "/tmp",
    "--dir",
    MCP_STDIO_HOME,
  ];
  for (const [destination, source] of binds) args.push("--ro-bind", source, destination);
  // Last: nothing outside /tmp is writable, not even the sandbox's own (unbounded) root tmpfs.
  args.push("--remount-ro", "/", "--chdir", MCP_STDIO_HOME);
  const env: Record<string, string> = {
    PATH: MCP_STDIO_PATH,
    HOME: MCP_STDIO_HOME,
    TMPDIR: "/tmp",
    ...config.env,
  };
  for (const [name, value] of Object.entries(env)) args.push("--setenv", name, value);
  args.push("--", config.command, ...config.args);
  // As root, the kernel enforces no process limit: run as a uid of the sandbox's own, which also
  // keeps the sandboxed process from being host root should it ever get out.
  const uid = RUNNING_AS_ROOT ? uidAcquire() : undefined;
  // The namespace level's filter: no mounts, namespaces, keyrings, BPF, ptrace, io_uring, ...
  const seccompFd = seccompDescriptor();
  if (seccompFd !== null) args.unshift("--seccomp", String(SANDBOX_SECCOMP_FD));
  if (uid === undefined) return { command: BWRAP, args, uid, seccompFd };
  return {
    command: PRLIMIT,
    args: [`--nproc=${MCP_STDIO_PROCESSES_MAX}`, "--", BWRAP, ...args],
    uid,
    seccompFd,
  };
}
