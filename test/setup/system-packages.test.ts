// The test set-up's system packages: the decisions with fake probes, and the real set-up script in
// child processes on a pretend machine without bubblewrap (KELPIE_TEST_SYSTEM_ROOT, an empty
// directory) with a PATH that has no apt-get, or a fake one.
import { spawn } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  decide,
  decideAfterInstall,
  type Probes,
  packagesFor,
  SYSTEM_PACKAGES,
  type SystemPackage,
} from "./system-packages.ts";

const ROOT = resolve(import.meta.dirname, "../..");
const SETUP = join(ROOT, "test/setup/ensure-system-packages.ts");
const RUNNING_AS_ROOT = process.getuid?.() === 0;
const CHILD_TIMEOUT_MS = 60_000;

const BWRAP: SystemPackage = {
  name: "bubblewrap",
  binary: "/usr/bin/bwrap",
  purpose: "the namespace sandbox level",
  tests: ["test/tools/a.test.ts", "test/tools/b.test.ts"],
};
const RUNSC: SystemPackage = {
  name: "runsc",
  binary: "/usr/bin/runsc",
  purpose: "the vm sandbox level",
  tests: ["test/tools/c.test.ts"],
};

function probes(present: string[], root: boolean, aptGet: boolean): Probes {
  return { exists: (path) => present.includes(path), root, aptGet };
}

describe("system packages: decisions", () => {
  it("needs only what the run's test files need, or everything when the files are unknown", () => {
    const table = [BWRAP, RUNSC];
    expect(packagesFor(table, "/p", ["/p/test/tools/b.test.ts"])).toEqual([BWRAP]);
    expect(packagesFor(table, "/p", ["test/tools/c.test.ts", "/p/test/tools/a.test.ts"])).toEqual([
      BWRAP,
      RUNSC,
    ]);
    expect(packagesFor(table, "/p", ["/p/test/llm/openai.test.ts"])).toEqual([]);
    expect(packagesFor(table, "/p", [])).toEqual(table);
    expect(packagesFor(table, "/p", undefined)).toEqual(table);
  });

  it("does nothing when the binaries are there", () => {
    expect(decide([BWRAP, RUNSC], probes(["/usr/bin/bwrap", "/usr/bin/runsc"], false, false))).toEqual({
      action: "none",
    });
  });

  it("installs what is missing as root with apt-get", () => {
    expect(decide([BWRAP, RUNSC], probes(["/usr/bin/runsc"], true, true))).toEqual({
      action: "install",
      packages: [BWRAP],
    });
  });

  it("stops with one line naming the package and the command when it cannot install", () => {
    const notRoot = decide([BWRAP, RUNSC], probes([], false, true));
    expect(notRoot.action).toBe("stop");
    const line = notRoot.action === "stop" ? notRoot.line : "";
    expect(line).not.toContain("\n");
    expect(line).toContain("bubblewrap (/usr/bin/bwrap, for the namespace sandbox level");
    expect(line).toContain("runsc (/usr/bin/runsc");
    expect(line).toContain("test/tools/a.test.ts and 1 more test files");
    expect(line).toMatch(/install them with: sudo apt-get install -y bubblewrap runsc$/);

    const noApt = decide([BWRAP], probes([], true, false));
    expect(noApt.action === "stop" && noApt.line).toMatch(
      /with the system's package manager \(Debian, Ubuntu: apt-get install -y bubblewrap\)$/,
    );
  });

  it("after an install: stops with apt-get's words if the binary is still missing", () => {
    const failed = decideAfterInstall(
      [BWRAP],
      probes([], true, true),
      "exit 100: E: Unable to locate\npackage",
    );
    expect(failed.action).toBe("stop");
    expect(failed.action === "stop" && failed.line).toContain(
      "apt-get install -y bubblewrap failed (exit 100: E: Unable to locate package); install it with: apt-get install -y bubblewrap",
    );
    const silent = decideAfterInstall([BWRAP], probes([], true, true), undefined);
    expect(silent.action === "stop" && silent.line).toContain("succeeded but left /usr/bin/bwrap missing");
    expect(decideAfterInstall([BWRAP], probes(["/usr/bin/bwrap"], true, true), undefined)).toEqual({
      action: "none",
    });
  });

  it("names only test files that exist, and binaries by absolute path", () => {
    for (const pkg of SYSTEM_PACKAGES) {
      expect(pkg.binary.startsWith("/"), pkg.binary).toBe(true);
      expect(pkg.tests.length, pkg.name).toBeGreaterThan(0);
      for (const test of pkg.tests) expect(existsSync(join(ROOT, test)), test).toBe(true);
    }
  });
});

/** Runs a command with only `env` (plus HOME), returns its exit code and output lines. */
function run(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number | null; lines: string[]; ms: number }> {
  const started = Date.now();
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, args, {
      cwd: ROOT,
      env: { HOME: process.env.HOME ?? "/tmp", NO_COLOR: "1", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (c: Buffer) => {
      out += c.toString();
    });
    child.stderr.on("data", (c: Buffer) => {
      out += c.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), CHILD_TIMEOUT_MS);
    child.on("error", fail);
    child.on("close", (code) => {
      clearTimeout(timer);
      done({ code, lines: out.split("\n").filter((l) => l.trim() !== ""), ms: Date.now() - started });
    });
  });
}

describe("system packages: the set-up script on a machine without bubblewrap", () => {
  const dir = mkdtempSync(join(tmpdir(), "kelpie-syspkg-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** A pretend machine: an empty system root, a bin dir for PATH, and a log of apt-get calls. */
  function machine(name: string, fakeAptGet?: "fails" | "works-after-update") {
    const root = join(dir, name, "root");
    const bin = join(dir, name, "bin");
    const log = join(dir, name, "apt.log");
    mkdirSync(root, { recursive: true });
    mkdirSync(bin, { recursive: true });
    if (fakeAptGet !== undefined) {
      // install fails until an update ran (and always, for "fails"); an install that works puts
      // the binary where the set-up looks for it.
      writeFileSync(
        join(bin, "apt-get"),
        `#!/bin/sh
PATH=/usr/bin:/bin
echo "$*" >> '${log}'
case "$*" in
  *update*) ${fakeAptGet === "fails" ? "echo 'E: could not reach the mirror' >&2; exit 100" : `touch '${root}/updated'; exit 0`} ;;
esac
if [ -f '${root}/updated' ]; then
  mkdir -p '${root}/usr/bin'
  for p in "$@"; do
    case "$p" in bubblewrap) touch '${root}/usr/bin/bwrap' ;; runsc) touch '${root}/usr/bin/runsc' ;; esac
  done
  exit 0
fi
echo 'E: Unable to locate package bubblewrap' >&2
exit 100
`,
      );
      chmodSync(join(bin, "apt-get"), 0o755);
    }
    const aptCalls = () =>
      existsSync(log)
        ? readFileSync(log, "utf8")
            .trim()
            .split("\n")
            .map((l) => l.replace(/^-o DPkg::Lock::Timeout=\d+ /, "").split(" ")[0])
        : [];
    return { env: { KELPIE_TEST_SYSTEM_ROOT: root, PATH: bin }, root, aptCalls };
  }

  it("without apt-get: stops at once with one line naming bubblewrap and the command", async () => {
    const m = machine("no-apt");
    const result = await run(["--import", "tsx", SETUP], m.env);
    expect(result.code, result.lines.join("\n")).toBe(1);
    expect(result.lines).toHaveLength(1);
    expect(result.lines[0]).toMatch(/^Tests stopped: missing system package bubblewrap \(\/usr\/bin\/bwrap/);
    expect(result.lines[0]).toContain("apt-get install -y bubblewrap");
  });

  it("apt-get failing: tries install, update, install, then stops with one line and apt-get's words", async () => {
    const m = machine("apt-fails", "fails");
    const result = await run(["--import", "tsx", SETUP], m.env);
    expect(result.code, result.lines.join("\n")).toBe(1);
    const stops = result.lines.filter((l) => l.startsWith("Tests stopped:"));
    expect(stops).toHaveLength(1);
    if (RUNNING_AS_ROOT) {
      // One progress line, then the stop.
      expect(result.lines).toHaveLength(2);
      expect(m.aptCalls()).toEqual(["install", "update", "install"]);
      expect(stops[0]).toContain("failed (exit 100: E: Unable to locate package bubblewrap; apt-get update");
      expect(stops[0]).toMatch(/install them with: apt-get install -y bubblewrap runsc$/);
    } else {
      // Not root: apt-get cannot install, so the set-up does not try and says to use sudo.
      expect(result.lines).toHaveLength(1);
      expect(m.aptCalls()).toEqual([]);
      expect(stops[0]).toMatch(/install them with: sudo apt-get install -y bubblewrap runsc$/);
    }
  });

  it.runIf(RUNNING_AS_ROOT)(
    "as root: a first install that fails is retried after apt-get update, and the run goes on",
    async () => {
      const m = machine("apt-works", "works-after-update");
      const result = await run(["--import", "tsx", SETUP], m.env);
      expect(result.code, result.lines.join("\n")).toBe(0);
      expect(m.aptCalls()).toEqual(["install", "update", "install"]);
      expect(existsSync(join(m.root, "usr/bin/bwrap"))).toBe(true);
      expect(existsSync(join(m.root, "usr/bin/runsc"))).toBe(true);
      expect(result.lines).toEqual([
        "Installing bubblewrap, runsc for the tests: apt-get install -y bubblewrap runsc",
      ]);
    },
  );

  it("vitest's globalSetup stops a run that needs bubblewrap before any test, with the one line", async () => {
    const m = machine("vitest");
    const vitest = join(ROOT, "node_modules/vitest/vitest.mjs");
    const result = await run([vitest, "run", "test/tools/sandbox-pool.test.ts"], m.env);
    expect(result.code, result.lines.join("\n")).toBe(1);
    const stops = result.lines.filter((l) => l.startsWith("Tests stopped:"));
    expect(stops, result.lines.join("\n")).toHaveLength(1);
    expect(stops[0]).toContain("missing system package bubblewrap");
    // vitest's own header is all else it printed: no test ran, nothing failed.
    expect(result.lines.filter((l) => !l.startsWith("Tests stopped:")).map((l) => l.trim())).toEqual([
      expect.stringMatching(/^RUN\s+v\d/),
    ]);
  });
});
