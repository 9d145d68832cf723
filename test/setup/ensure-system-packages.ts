// Before any test runs: the system packages the selected tests need are installed (as root, with
// apt-get; `apt-get update` and a retry if the first try fails), or the run stops at once with one
// line naming the package and the command that installs it. Never a pile of failures, never a
// silent skip. Runs three ways, all through ensureSystemPackages():
//   - `npm test` runs this file first (node --import tsx), for every test, before the type check;
//   - vitest's globalSetup (vitest.config.ts), for the test files of that run only;
//   - .ci/run, through `npm test`.
// KELPIE_TEST_SYSTEM_ROOT (default /) is where the binaries are looked for, so a test can run this
// against a machine without them; apt-get is whichever is first on PATH.
import { spawnSync } from "node:child_process";
import { accessSync, constants, existsSync } from "node:fs";
import { delimiter, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { TestProject } from "vitest/node";
import {
  brokenLine,
  type Decision,
  decide,
  decideAfterInstall,
  installCommand,
  oneLine,
  type Probes,
  packagesFor,
  SYSTEM_PACKAGES,
  type SystemPackage,
} from "./system-packages.ts";

const PROJECT_ROOT = resolve(import.meta.dirname, "../..");
/** How long one apt-get command may take (a slow mirror, a big package). */
const APT_TIMEOUT_MS = 10 * 60_000;
/** How long apt-get waits for another apt or dpkg to release its lock before failing. */
const APT_LOCK_TIMEOUT_S = 120;
/** Most of apt-get's last line quoted in the stop line. */
const APT_MESSAGE_CHARS_MAX = 300;

/** With the binary present, why the package still cannot work here (the server's own start-up
 * check, run exactly as the server runs it), or null. */
const WORKS: Record<string, () => Promise<string | null>> = {
  bubblewrap: async () => {
    const { sandboxProblem } = await import("../../src/tools/sandbox/namespace.ts");
    return sandboxProblem("python", "namespace");
  },
  runsc: async () => {
    const { sandboxProblem } = await import("../../src/tools/sandbox/namespace.ts");
    return sandboxProblem("python", "vm") ?? sandboxProblem("node", "vm");
  },
};

function systemRoot(): string {
  return process.env.KELPIE_TEST_SYSTEM_ROOT || "/";
}

function realProbes(): Probes {
  const root = systemRoot();
  return {
    exists: (path) => existsSync(join(root, path)),
    root: process.getuid?.() === 0,
    aptGet: onPath("apt-get"),
  };
}

function onPath(command: string): boolean {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (dir === "") continue;
    try {
      accessSync(join(dir, command), constants.X_OK);
      return true;
    } catch {}
  }
  return false;
}

/** Runs apt-get; undefined when it succeeded, else its last words. */
function aptGet(args: string[]): string | undefined {
  const run = spawnSync("apt-get", ["-o", `DPkg::Lock::Timeout=${APT_LOCK_TIMEOUT_S}`, ...args], {
    encoding: "utf8",
    timeout: APT_TIMEOUT_MS,
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (run.error === undefined && run.status === 0) return undefined;
  const said = lastLine(run.stderr ?? "") || lastLine(run.stdout ?? "");
  const how = run.error?.message ?? (run.signal ? `killed by ${run.signal}` : `exit ${run.status}`);
  return said ? `${how}: ${said}` : how;
}

function lastLine(text: string): string {
  const line = text.trim().split("\n").at(-1)?.trim() ?? "";
  return line.length <= APT_MESSAGE_CHARS_MAX
    ? line
    : `${line.slice(0, APT_MESSAGE_CHARS_MAX)}… (cut at ${APT_MESSAGE_CHARS_MAX} characters)`;
}

function install(packages: readonly SystemPackage[]): string | undefined {
  const names = packages.map((pkg) => pkg.name);
  process.stderr.write(`Installing ${names.join(", ")} for the tests: ${installCommand(packages, true)}\n`);
  // --reinstall also brings back a binary deleted from a package dpkg still counts as installed.
  const args = ["install", "-y", "--reinstall", "--no-install-recommends", ...names];
  const first = aptGet(args);
  if (first === undefined) return undefined;
  // The package lists may be missing or stale (a fresh container has none): refresh, then retry.
  const update = aptGet(["update"]);
  const second = aptGet(args);
  return second === undefined
    ? undefined
    : update === undefined
      ? second
      : `${second}; apt-get update: ${update}`;
}

/** Makes sure the packages these test files need are there and work. Returns null when the run can
 * go on, else the one line to stop it with. `testFiles` undefined or empty: every test. */
export async function ensureSystemPackages(testFiles?: readonly string[]): Promise<string | null> {
  const needed = packagesFor(SYSTEM_PACKAGES, PROJECT_ROOT, testFiles);
  const probes = realProbes();
  let decision: Decision = decide(needed, probes);
  if (decision.action === "install") {
    const failure = install(decision.packages);
    decision = decideAfterInstall(needed, probes, failure);
  }
  if (decision.action === "stop") return decision.line;
  // Another root than / is a pretend machine: the server's checks would look at the real one.
  if (systemRoot() !== "/") return null;
  for (const pkg of needed) {
    const problem = (await WORKS[pkg.name]?.()) ?? null;
    if (problem !== null) return brokenLine(pkg, problem);
  }
  return null;
}

function stop(line: string): never {
  process.stderr.write(`${oneLine(line)}\n`);
  process.exit(1);
}

/** vitest globalSetup: only the packages this run's test files need. */
export default async function setup(project: TestProject): Promise<void> {
  // The files of this run (vitest's state API); empty means unknown, and then every package counts.
  const files = project.vitest.state.getPaths();
  const line = await ensureSystemPackages(files);
  if (line !== null) stop(line);
}

// `node --import tsx test/setup/ensure-system-packages.ts`: every package, as `npm test` needs.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const line = await ensureSystemPackages();
  if (line !== null) stop(line);
}
