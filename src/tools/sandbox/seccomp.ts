// The seccomp filter bubblewrap loads (`--seccomp FD`) right before it starts a sandbox's
// interpreter: a classic-BPF program, assembled here, that refuses the system calls a tool has no
// use for and that widen the kernel's attack surface — mounts, namespaces (no nested user
// namespace), keyrings, BPF, perf, ptrace and cross-process memory, kernel modules and kexec,
// userfaultfd, io_uring, clock and host settings — or that hold memory no other limit counts
// (memfd, System V shared memory and message queues). A refused call fails with EPERM, as it would
// for a process without the privilege, so interpreters handle it as an ordinary error. clone3
// answers ENOSYS instead: its flags sit in memory a filter cannot read, and glibc falls back to
// clone, whose flags the filter checks. A call made under another ABI (x86's 32-bit int 0x80 or x32) would bypass
// the numbers below, so it kills the process.

/** The architectures the filter is written for, by Node's `process.arch`. */
export type SeccompArch = "x64" | "arm64";

// <linux/audit.h>
const AUDIT_ARCH: Record<SeccompArch, number> = { x64: 0xc000003e, arm64: 0xc00000b7 };
/** Syscall numbers at or above this on x86_64 are the x32 ABI (<asm/unistd.h>, __X32_SYSCALL_BIT). */
const X32_SYSCALL_BIT = 0x40000000;

// <linux/seccomp.h>
const SECCOMP_RET_KILL_PROCESS = 0x80000000;
const SECCOMP_RET_ERRNO = 0x00050000;
const SECCOMP_RET_ALLOW = 0x7fff0000;
const EPERM = 1;
const ENOSYS = 38;

// struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6] (little-endian).
const DATA_NR = 0;
const DATA_ARCH = 4;
const DATA_ARG0_LOW = 16;

// <linux/sched.h>: the namespace flags of clone(2). CLONE_NEWTIME (0x80) is not among them: in
// clone's flags those bits are the exit signal, and clone3/unshare (both refused) are its only way in.
const CLONE_NEWNS = 0x00020000;
const CLONE_NEWCGROUP = 0x02000000;
const CLONE_NEWUTS = 0x04000000;
const CLONE_NEWIPC = 0x08000000;
const CLONE_NEWUSER = 0x10000000;
const CLONE_NEWPID = 0x20000000;
const CLONE_NEWNET = 0x40000000;
const CLONE_NAMESPACE_FLAGS =
  CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET;
/** personality(2) arguments that change nothing: a query, and the default persona. */
const PERSONALITY_QUERY = 0xffffffff;
const PER_LINUX = 0;

/** Refused with EPERM. Names as in the kernel's syscall tables; numbers per architecture below. */
const DENIED = [
  // Mounts and namespaces: the sandbox's file system view and isolation stay as bubblewrap built them.
  "mount",
  "umount2",
  "pivot_root",
  "chroot",
  "unshare",
  "setns",
  "fsopen",
  "fsconfig",
  "fsmount",
  "fspick",
  "move_mount",
  "open_tree",
  "mount_setattr",
  "open_by_handle_at",
  "name_to_handle_at",
  // Kernel keyrings, BPF, performance counters: shared kernel state and frequent exploit vectors.
  "keyctl",
  "add_key",
  "request_key",
  "bpf",
  "perf_event_open",
  // Other processes' memory.
  "ptrace",
  "process_vm_readv",
  "process_vm_writev",
  "pidfd_getfd",
  // The kernel itself.
  "kexec_load",
  "kexec_file_load",
  "init_module",
  "finit_module",
  "delete_module",
  "userfaultfd",
  "io_uring_setup",
  "io_uring_enter",
  "io_uring_register",
  "fanotify_init",
  // Memory outside every other bound: no size limit on the total (tmpfs, address space) covers it.
  "memfd_create",
  "memfd_secret",
  "shmget",
  "msgget",
  // Host settings.
  "swapon",
  "swapoff",
  "reboot",
  "sethostname",
  "setdomainname",
  "acct",
  "quotactl",
  "quotactl_fd",
  "lookup_dcookie",
  "syslog",
  "vhangup",
  "settimeofday",
  "clock_settime",
  "clock_adjtime",
  "adjtimex",
  // x86 only: port I/O and long-gone calls.
  "iopl",
  "ioperm",
  "uselib",
  "_sysctl",
  "nfsservctl",
] as const;
type Syscall = (typeof DENIED)[number] | "clone" | "clone3" | "personality";

/** Syscall numbers from <asm/unistd_64.h> (x86_64) and <asm-generic/unistd.h> (aarch64); a call an
 * architecture does not have is absent. */
const NUMBERS: Record<SeccompArch, Partial<Record<Syscall, number>>> = {
  x64: {
    mount: 165,
    umount2: 166,
    pivot_root: 155,
    chroot: 161,
    unshare: 272,
    setns: 308,
    fsopen: 430,
    fsconfig: 431,
    fsmount: 432,
    fspick: 433,
    move_mount: 429,
    open_tree: 428,
    mount_setattr: 442,
    open_by_handle_at: 304,
    name_to_handle_at: 303,
    keyctl: 250,
    add_key: 248,
    request_key: 249,
    bpf: 321,
    perf_event_open: 298,
    ptrace: 101,
    process_vm_readv: 310,
    process_vm_writev: 311,
    pidfd_getfd: 438,
    kexec_load: 246,
    kexec_file_load: 320,
    init_module: 175,
    finit_module: 313,
    delete_module: 176,
    userfaultfd: 323,
    io_uring_setup: 425,
    io_uring_enter: 426,
    io_uring_register: 427,
    fanotify_init: 300,
    memfd_create: 319,
    memfd_secret: 447,
    shmget: 29,
    msgget: 68,
    swapon: 167,
    swapoff: 168,
    reboot: 169,
    sethostname: 170,
    setdomainname: 171,
    acct: 163,
    quotactl: 179,
    quotactl_fd: 443,
    lookup_dcookie: 212,
    syslog: 103,
    vhangup: 153,
    settimeofday: 164,
    clock_settime: 227,
    clock_adjtime: 305,
    adjtimex: 159,
    iopl: 172,
    ioperm: 173,
    uselib: 134,
    _sysctl: 156,
    nfsservctl: 180,
    clone: 56,
    clone3: 435,
    personality: 135,
  },
  arm64: {
    mount: 40,
    umount2: 39,
    pivot_root: 41,
    chroot: 51,
    unshare: 97,
    setns: 268,
    fsopen: 430,
    fsconfig: 431,
    fsmount: 432,
    fspick: 433,
    move_mount: 429,
    open_tree: 428,
    mount_setattr: 442,
    open_by_handle_at: 265,
    name_to_handle_at: 264,
    keyctl: 219,
    add_key: 217,
    request_key: 218,
    bpf: 280,
    perf_event_open: 241,
    ptrace: 117,
    process_vm_readv: 270,
    process_vm_writev: 271,
    pidfd_getfd: 438,
    kexec_load: 104,
    kexec_file_load: 294,
    init_module: 105,
    finit_module: 273,
    delete_module: 106,
    userfaultfd: 282,
    io_uring_setup: 425,
    io_uring_enter: 426,
    io_uring_register: 427,
    fanotify_init: 262,
    memfd_create: 279,
    memfd_secret: 447,
    shmget: 194,
    msgget: 186,
    swapon: 224,
    swapoff: 225,
    reboot: 142,
    sethostname: 161,
    setdomainname: 162,
    acct: 89,
    quotactl: 60,
    quotactl_fd: 443,
    lookup_dcookie: 18,
    syslog: 116,
    vhangup: 58,
    settimeofday: 170,
    clock_settime: 112,
    clock_adjtime: 266,
    adjtimex: 171,
    nfsservctl: 42,
    clone: 220,
    clone3: 435,
    personality: 92,
  },
};

// Classic BPF (<linux/filter.h>, <linux/bpf_common.h>).
const BPF_LD_W_ABS = 0x20;
const BPF_JMP_JEQ_K = 0x15;
const BPF_JMP_JGE_K = 0x35;
const BPF_JMP_JSET_K = 0x45;
const BPF_RET_K = 0x06;
/** A conditional jump skips at most this many instructions (its offsets are 8-bit). */
const BPF_JUMP_MAX = 255;
/** The kernel's bound on a filter's length (BPF_MAXINSNS). */
const BPF_INSTRUCTIONS_MAX = 4096;
const SOCK_FILTER_BYTES = 8;

type Label = "allow" | "eperm" | "enosys" | "kill" | "clone" | "personality";
/** A jump target: the next instruction, or a label. */
type Target = Label | "next";
type Instruction =
  | { op: "load"; offset: number }
  | { op: "jeq" | "jge" | "jset"; k: number; yes: Target; no: Target }
  | { op: "ret"; k: number }
  | { op: "label"; name: Label };

/** The filter for `arch` as bubblewrap reads it: struct sock_filter[] in native (little-endian) order. */
export function seccompProgram(arch: SeccompArch): Buffer {
  const numbers = NUMBERS[arch];
  const code: Instruction[] = [
    { op: "load", offset: DATA_ARCH },
    { op: "jeq", k: AUDIT_ARCH[arch], yes: "next", no: "kill" },
    { op: "load", offset: DATA_NR },
  ];
  if (arch === "x64") code.push({ op: "jge", k: X32_SYSCALL_BIT, yes: "kill", no: "next" });
  for (const name of DENIED) {
    const nr = numbers[name];
    if (nr !== undefined) code.push({ op: "jeq", k: nr, yes: "eperm", no: "next" });
  }
  code.push(
    { op: "jeq", k: numbers.clone!, yes: "clone", no: "next" },
    { op: "jeq", k: numbers.clone3!, yes: "enosys", no: "next" },
    { op: "jeq", k: numbers.personality!, yes: "personality", no: "next" },
    { op: "ret", k: SECCOMP_RET_ALLOW },
    // Classic BPF jumps only forward: the checks on arguments come after, then the verdicts.
    { op: "label", name: "clone" },
    { op: "load", offset: DATA_ARG0_LOW },
    { op: "jset", k: CLONE_NAMESPACE_FLAGS, yes: "eperm", no: "allow" },
    { op: "label", name: "personality" },
    { op: "load", offset: DATA_ARG0_LOW },
    { op: "jeq", k: PERSONALITY_QUERY, yes: "allow", no: "next" },
    { op: "jeq", k: PER_LINUX, yes: "allow", no: "eperm" },
    { op: "label", name: "allow" },
    { op: "ret", k: SECCOMP_RET_ALLOW },
    { op: "label", name: "eperm" },
    { op: "ret", k: SECCOMP_RET_ERRNO | EPERM },
    { op: "label", name: "enosys" },
    { op: "ret", k: SECCOMP_RET_ERRNO | ENOSYS },
    { op: "label", name: "kill" },
    { op: "ret", k: SECCOMP_RET_KILL_PROCESS },
  );
  return assemble(code);
}

function assemble(code: Instruction[]): Buffer {
  const at = new Map<Label, number>();
  const emitted: Exclude<Instruction, { op: "label" }>[] = [];
  for (const instruction of code) {
    if (instruction.op === "label") at.set(instruction.name, emitted.length);
    else emitted.push(instruction);
  }
  if (emitted.length > BPF_INSTRUCTIONS_MAX) throw new Error(`seccomp filter too long: ${emitted.length}`);
  const out = Buffer.alloc(emitted.length * SOCK_FILTER_BYTES);
  emitted.forEach((instruction, index) => {
    const jump = (target: Target): number => {
      if (target === "next") return 0;
      const distance = at.get(target)! - (index + 1);
      if (!(distance >= 0 && distance <= BPF_JUMP_MAX)) {
        throw new Error(`seccomp filter: a jump to ${target} spans ${distance} instructions`);
      }
      return distance;
    };
    const offset = index * SOCK_FILTER_BYTES;
    let opcode: number;
    let jt = 0;
    let jf = 0;
    let k: number;
    if (instruction.op === "load") {
      opcode = BPF_LD_W_ABS;
      k = instruction.offset;
    } else if (instruction.op === "ret") {
      opcode = BPF_RET_K;
      k = instruction.k;
    } else {
      opcode =
        instruction.op === "jeq" ? BPF_JMP_JEQ_K : instruction.op === "jge" ? BPF_JMP_JGE_K : BPF_JMP_JSET_K;
      jt = jump(instruction.yes);
      jf = jump(instruction.no);
      k = instruction.k;
    }
    out.writeUInt16LE(opcode, offset);
    out.writeUInt8(jt, offset + 2);
    out.writeUInt8(jf, offset + 3);
    out.writeUInt32LE(k >>> 0, offset + 4);
  });
  return out;
}

/** The filter for the architecture this server runs on, or null when there is none for it. */
export function hostSeccompProgram(): Buffer | null {
  const arch = process.arch;
  return arch === "x64" || arch === "arm64" ? seccompProgram(arch) : null;
}
