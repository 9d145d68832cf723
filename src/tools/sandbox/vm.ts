// The vm level: a tool's interpreter (python3, node: the same wrappers and protocol as the namespace
// level, in namespace.ts) inside gVisor (`runsc`), a kernel in user space that answers the tool's
// system calls itself, so a kernel bug reachable from the tool is gVisor's, not the host's. Here it
// runs on gVisor's ptrace platform, which needs no /dev/kvm.
//
// Why `runsc run` with a generated OCI bundle, not `runsc do`: `do` shows the whole host filesystem
// (read-only, under an overlay) and takes no memory or process bounds. A bundle lets us say exactly
// what the sandbox sees and holds:
//   - its root is an empty read-only directory with /usr bound read-only (and the /bin, /lib,
//     /lib64 symlinks into it): no /etc, no /home, no data dir; /tmp and /work are private tmpfs
//     mounts of SANDBOX_TMPFS_BYTES_MAX; /proc, /sys and /dev are gVisor's own;
//   - no network (`--network=none`: gVisor's own loopback only, in a network namespace of its own,
//     so 127.0.0.1 inside is not the host's);
//   - the tool runs as nobody without capabilities, under rlimits gVisor enforces (address space,
//     CPU time, processes, file size, open files), the same numbers as the namespace level;
//   - the whole sandbox (gVisor's kernel, its file server and every process of the tool) sits in
//     cgroups of its own, nested under the server's: VM_MEMORY_BYTES_MAX of memory (past it the host
//     kills the sandbox) and VM_HOST_TASKS_MAX host tasks (a backstop behind RLIMIT_NPROC).
// The wall clock, the output cap and the kill are namespace.ts's, shared with the other process
// levels: killing runsc's process group ends the sandbox, and `runsc delete --force` then removes
// its state and cgroups before the bundle directory is deleted.
//
// Why root and cgroups, not `--rootless` or `--ignore-cgroups`: the memory and task bounds on the
// sandbox as a whole come from cgroups, which rootless runsc cannot set up. Without them a tool could
// hold SANDBOX_PROCESSES_MAX processes of SANDBOX_MEMORY_BYTES_MAX each. So the level is offered only
// where the server runs as root and the start-up probe (a real run, cgroups and all) succeeds; a
// server where it fails says why at /v1/health/.
import { spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import {
  SANDBOX_CPU_SECONDS_MAX,
  SANDBOX_FILE_BYTES_MAX,
  SANDBOX_FILES_OPEN_MAX,
  SANDBOX_PROCESSES_MAX,
  SANDBOX_TMPFS_BYTES_MAX,
  VM_CPUS_MAX,
  VM_HOST_TASKS_MAX,
  VM_MEMORY_BYTES_MAX,
} from "./limits.ts";

/** gVisor's runtime, from Debian's `runsc` package. */
export const RUNSC = "/usr/bin/runsc";
/** How long `runsc delete --force` may take to remove a finished sandbox's state and cgroups. */
const VM_DELETE_TIMEOUT_MS = 10_000;
/** A killed sandbox's host tasks take a moment to exit; its cgroups can go only after them. */
const VM_CGROUP_REMOVE_TRIES = 50;
const VM_CGROUP_REMOVE_WAIT_MS = 100;
/** The uid and gid the tool runs as inside the sandbox (nobody: it owns nothing there). */
const VM_TOOL_UID = 65_534;
/** The CPU cgroup's accounting period; the quota is VM_CPUS_MAX of it. */
const VM_CPU_PERIOD_US = 100_000;

/** One sandbox's bundle: its directory (config.json, the root, runsc's state) and the command to run. */
export interface VmBundle {
  readonly dir: string;
  /** runsc's container id, also the name of its cgroups. */
  readonly id: string;
  readonly command: string[];
}

export interface VmProcess {
  /** The interpreter and its arguments, as paths inside the sandbox (the host's, under /usr). */
  readonly argv: readonly string[];
  /** RLIMIT_AS of the tool's processes. */
  readonly addressSpaceBytes: number;
}

/** What vmPrecondition looks at: whether a path exists, and the server's uid. */
export interface VmHost {
  exists(path: string): boolean;
  readonly uid: number | undefined;
}
const REAL_HOST: VmHost = { exists: existsSync, uid: process.getuid?.() };

/** Why this server cannot offer the vm level before even trying it, or null. */
export function vmPrecondition(host: VmHost = REAL_HOST): string | null {
  if (!host.exists(RUNSC)) {
    return `gVisor (${RUNSC}) is not available on this server: install it (apt-get install runsc)`;
  }
  if (host.uid !== 0) {
    return "the vm level needs the server to run as root: runsc sets up the cgroups that bound the sandbox's memory and tasks, which rootless runsc cannot";
  }
  return null;
}

/** Writes a fresh bundle for one run of `process` and returns it; remove it with vmCleanup. */
export function vmBundle(process: VmProcess): VmBundle {
  // The pid in the name tells whose a bundle (and its cgroups) is, when several servers share /tmp.
  const dir = mkdtempSync(join(tmpdir(), `kelpie-vm-${globalThis.process.pid}-`));
  const id = basename(dir);
  try {
    const rootfs = join(dir, "rootfs");
    mkdirSync(rootfs, { mode: 0o755 });
    chmodSync(rootfs, 0o755); // the tool (nobody) must traverse its root; the umask may have narrowed it
    for (const mountPoint of ["usr", "proc", "dev", "sys", "tmp", "work"]) {
      mkdirSync(join(rootfs, mountPoint), { mode: 0o755 });
    }
    symlinkSync("usr/bin", join(rootfs, "bin"));
    symlinkSync("usr/lib", join(rootfs, "lib"));
    symlinkSync("usr/lib64", join(rootfs, "lib64"));
    writeFileSync(join(dir, "config.json"), JSON.stringify(vmConfig(process, id)), { mode: 0o600 });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const command = [
    RUNSC,
    `--root=${join(dir, "state")}`,
    // No /dev/kvm here; ptrace works in any Linux container that allows ptrace.
    "--platform=ptrace",
    "--network=none",
    "run",
    "--bundle",
    dir,
    id,
  ];
  return { dir, id, command };
}

/** The OCI runtime spec of one run. */
function vmConfig(process: VmProcess, id: string): unknown {
  const rlimit = (type: string, value: number) => ({ type, hard: value, soft: value });
  const tmpfs = (destination: string) => ({
    destination,
    type: "tmpfs",
    source: "tmpfs",
    options: ["nosuid", "nodev", `size=${SANDBOX_TMPFS_BYTES_MAX}`],
  });
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: false,
      user: { uid: VM_TOOL_UID, gid: VM_TOOL_UID },
      args: process.argv,
      env: ["PATH=/usr/bin:/bin", "HOME=/work"],
      cwd: "/work",
      capabilities: { bounding: [], effective: [], inheritable: [], permitted: [], ambient: [] },
      rlimits: [
        rlimit("RLIMIT_AS", process.addressSpaceBytes),
        rlimit("RLIMIT_CPU", SANDBOX_CPU_SECONDS_MAX),
        rlimit("RLIMIT_NPROC", SANDBOX_PROCESSES_MAX),
        rlimit("RLIMIT_FSIZE", SANDBOX_FILE_BYTES_MAX),
        rlimit("RLIMIT_NOFILE", SANDBOX_FILES_OPEN_MAX),
      ],
      noNewPrivileges: true,
    },
    root: { path: "rootfs", readonly: true },
    hostname: "kelpie-vm",
    mounts: [
      { destination: "/proc", type: "proc", source: "proc" },
      { destination: "/usr", type: "bind", source: "/usr", options: ["rbind", "ro", "nosuid", "nodev"] },
      tmpfs("/tmp"),
      tmpfs("/work"),
    ],
    linux: {
      namespaces: ["pid", "network", "ipc", "uts", "mount"].map((type) => ({ type })),
      // Relative: runsc nests it under the server's own cgroup in each hierarchy, so the sandbox is
      // still counted against whatever bounds the server.
      cgroupsPath: id,
      resources: {
        memory: { limit: VM_MEMORY_BYTES_MAX },
        pids: { limit: VM_HOST_TASKS_MAX },
        // gVisor on ptrace did not stop a busy loop at RLIMIT_CPU here (the wall clock did): the
        // quota keeps a sandbox's processes, together, to VM_CPUS_MAX cores meanwhile.
        cpu: { quota: VM_CPUS_MAX * VM_CPU_PERIOD_US, period: VM_CPU_PERIOD_US },
      },
    },
  };
}

function deleteArgs(bundle: VmBundle): string[] {
  return [`--root=${join(bundle.dir, "state")}`, "delete", "--force", bundle.id];
}

/** After the sandbox's runsc has exited: removes its state and cgroups (`runsc delete --force`;
 * harmless when runsc already removed them), whatever cgroups are still left, then its bundle. */
export async function vmCleanup(bundle: VmBundle): Promise<void> {
  await new Promise<void>((resolve) => {
    const remover = spawn(RUNSC, deleteArgs(bundle), { stdio: "ignore", timeout: VM_DELETE_TIMEOUT_MS });
    remover.once("error", () => resolve()); // could not start it: the cgroups are removed below
    remover.once("close", () => resolve());
  });
  for (let attempt = 1; ; attempt++) {
    const left = cgroupsRemove(bundle.id);
    if (left.length === 0 || attempt >= VM_CGROUP_REMOVE_TRIES) break;
    await new Promise((resolve) => setTimeout(resolve, VM_CGROUP_REMOVE_WAIT_MS)); // det-ok: host clean-up
  }
  rmSync(bundle.dir, { recursive: true, force: true });
}

/** vmCleanup for the synchronous start-up probe (its sandbox has exited: the cgroups are empty). */
export function vmCleanupSync(bundle: VmBundle): void {
  spawnSync(RUNSC, deleteArgs(bundle), { stdio: "ignore", timeout: VM_DELETE_TIMEOUT_MS });
  cgroupsRemove(bundle.id);
  rmSync(bundle.dir, { recursive: true, force: true });
}

/** The directories a sandbox's cgroups `id` get, one per cgroup hierarchy mounted here: the server's
 * own cgroup in that hierarchy (/proc/self/cgroup) under the hierarchy's mount point
 * (/proc/self/mountinfo), joined with `id`, as runsc joins a relative cgroupsPath. */
export function vmCgroupDirs(id: string, selfCgroup: string, mountInfo: string): string[] {
  const own = new Map<string, string>(); // "memory", "cpu,cpuacct", "name=systemd"; "" for cgroup2
  for (const line of selfCgroup.split("\n")) {
    const match = /^\d+:([^:]*):(.*)$/.exec(line);
    if (match !== null) own.set(match[1]!, match[2]!);
  }
  const dirs: string[] = [];
  for (const line of mountInfo.split("\n")) {
    const [left, right] = line.split(" - ");
    if (left === undefined || right === undefined) continue;
    const [, , , root, mountPoint] = left.split(" ");
    const [type, , options = ""] = right.split(" ");
    if (root === undefined || mountPoint === undefined) continue;
    let path: string | undefined;
    if (type === "cgroup2") {
      path = own.get("");
    } else if (type === "cgroup") {
      const mounted = new Set(options.split(","));
      for (const [controllers, ownPath] of own) {
        if (controllers !== "" && controllers.split(",").every((c) => mounted.has(c))) path = ownPath;
      }
    }
    if (path === undefined || !(path === root || path.startsWith(root === "/" ? "/" : `${root}/`))) continue;
    dirs.push(join(mountPoint, path.slice(root === "/" ? 0 : root.length), id));
  }
  return dirs;
}

/** Removes what is left of a sandbox's cgroups; returns those still there (tasks still exiting). A
 * sandbox killed before runsc saved its state keeps cgroups that `runsc delete` does not know of. */
function cgroupsRemove(id: string): string[] {
  let dirs: string[];
  try {
    dirs = vmCgroupDirs(
      id,
      readFileSync("/proc/self/cgroup", "utf8"),
      readFileSync("/proc/self/mountinfo", "utf8"),
    );
  } catch {
    return []; // no /proc to read: nothing this process can find to remove
  }
  const left: string[] = [];
  for (const dir of dirs) {
    if (!existsSync(dir)) continue;
    try {
      rmdirSync(dir); // a cgroup directory goes with rmdir once its tasks are gone
    } catch {
      left.push(dir);
    }
  }
  return left;
}
