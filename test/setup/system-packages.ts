// The system packages the tests need, and what to do about a missing one: install it (as root with
// apt-get), else stop the run with one line naming the package and the command that installs it.
// Pure: the probes (does a file exist, are we root, is there apt-get) come from the caller, so the
// decisions are tested without touching the machine. ensure-system-packages.ts runs them for real.

export interface SystemPackage {
  /** The Debian/Ubuntu package (`apt-get install -y <name>`). */
  readonly name: string;
  /** Absolute path of the binary the server runs: the package counts as installed when it exists. */
  readonly binary: string;
  /** What it is for, as the stop line says it. */
  readonly purpose: string;
  /** Test files (paths from the project root) that cannot pass without it. */
  readonly tests: readonly string[];
}

// One row per package. A row for chromium (the web UI's tests) goes here with the first test that
// needs it.
export const SYSTEM_PACKAGES: readonly SystemPackage[] = [
  {
    name: "bubblewrap",
    binary: "/usr/bin/bwrap",
    purpose: "the namespace sandbox level and stdio MCP servers",
    tests: [
      "test/tools/custom-tools.test.ts",
      "test/tools/node-namespace.test.ts",
      "test/tools/sandbox-pool.test.ts",
      "test/mcp/mcp.test.ts",
      "test/mcp/stdio-sandbox.test.ts",
      "test/e2e/letta-sdk.test.ts",
    ],
  },
  {
    name: "runsc",
    binary: "/usr/bin/runsc",
    purpose: "the vm sandbox level (gVisor)",
    tests: ["test/tools/vm-sandbox.test.ts"],
  },
];

/** The packages a run of these test files needs (absolute paths or paths from `root`); every
 * package when the files are not known. */
export function packagesFor(
  table: readonly SystemPackage[],
  root: string,
  testFiles: readonly string[] | undefined,
): SystemPackage[] {
  if (testFiles === undefined || testFiles.length === 0) return [...table];
  const relative = new Set(testFiles.map((file) => toRelative(root, file)));
  return table.filter((pkg) => pkg.tests.some((test) => relative.has(test)));
}

function toRelative(root: string, file: string): string {
  const prefix = root.endsWith("/") ? root : `${root}/`;
  return file.startsWith(prefix) ? file.slice(prefix.length) : file;
}

export interface Probes {
  /** Whether this absolute path exists on the machine the tests run on. */
  exists(path: string): boolean;
  /** Whether the tests run as root, so apt-get may install. */
  readonly root: boolean;
  /** Whether apt-get is on PATH. */
  readonly aptGet: boolean;
}

export type Decision =
  | { readonly action: "none" }
  | { readonly action: "install"; readonly packages: SystemPackage[] }
  | { readonly action: "stop"; readonly line: string };

/** What to do before the run: nothing, install the missing packages, or stop. */
export function decide(needed: readonly SystemPackage[], probes: Probes): Decision {
  const missing = needed.filter((pkg) => !probes.exists(pkg.binary));
  if (missing.length === 0) return { action: "none" };
  if (probes.root && probes.aptGet) return { action: "install", packages: missing };
  return { action: "stop", line: stopLine(missing, probes) };
}

/** After an install attempt: nothing more to do, or stop (`failure` is apt-get's last words, if it
 * failed). */
export function decideAfterInstall(
  needed: readonly SystemPackage[],
  probes: Probes,
  failure: string | undefined,
): Decision {
  const missing = needed.filter((pkg) => !probes.exists(pkg.binary));
  if (missing.length === 0) return { action: "none" };
  const why =
    failure === undefined
      ? `${installCommand(missing, true)} succeeded but left ${missing.map((pkg) => pkg.binary).join(", ")} missing`
      : `${installCommand(missing, true)} failed (${failure})`;
  return { action: "stop", line: stopLine(missing, probes, why) };
}

/** The command that installs these packages, with sudo unless already root. */
export function installCommand(packages: readonly SystemPackage[], root: boolean): string {
  return `${root ? "" : "sudo "}apt-get install -y ${packages.map((pkg) => pkg.name).join(" ")}`;
}

/** The one line the run stops with: the packages, what needs them, and how to install them. */
export function stopLine(missing: readonly SystemPackage[], probes: Probes, why?: string): string {
  const what = missing
    .map((pkg) => `${pkg.name} (${pkg.binary}, for ${pkg.purpose}: ${testList(pkg.tests)})`)
    .join(" and ");
  const command = installCommand(missing, probes.root);
  const how = probes.aptGet
    ? `install ${missing.length === 1 ? "it" : "them"} with: ${command}`
    : `install ${missing.length === 1 ? "it" : "them"} with the system's package manager (Debian, Ubuntu: ${command})`;
  return oneLine(`Tests stopped: missing system package ${what}${why ? `; ${why}` : ""}; ${how}`);
}

/** The line the run stops with when a package is installed but cannot work on this machine. */
export function brokenLine(pkg: SystemPackage, problem: string): string {
  return oneLine(
    `Tests stopped: ${pkg.name} is installed but ${pkg.purpose} cannot run here (${problem}); ` +
      `needed by ${testList(pkg.tests)}`,
  );
}

function testList(tests: readonly string[]): string {
  return tests.length <= 1 ? (tests[0] ?? "") : `${tests[0]} and ${tests.length - 1} more test files`;
}

/** Whatever a probe or apt-get said, the stop is one line. */
export function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, " ").trim();
}
