// Real `kelpie serve` processes for the cluster benchmarks: a throwaway PostgreSQL database, nodes
// spawned (and re-spawned after kill -9) on fixed loopback ports, an OpenAI-compatible model that
// answers at once from a worker thread, and bare node:http processes for the primitives. Everything
// started here is tracked, so `cleanup()` ends it all even when a measurement fails.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Worker } from "node:worker_threads";
import postgres from "postgres";

const ROOT = resolve(import.meta.dirname, "..");
const NODE_STARTUP_TIMEOUT_MS = 60_000;
const OUTPUT_TAIL_CHARS = 20_000;
const ADMIN_URL = process.env.KELPIE_BENCH_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

const children = new Set<ChildProcess>();
const cleanups: (() => Promise<void>)[] = [];

/** Ends every process, worker and database this module started (in reverse order). */
export async function cleanup(): Promise<void> {
  await Promise.all([...children].map((c) => killChild(c, "SIGKILL")));
  for (const fn of cleanups.splice(0).reverse()) {
    try {
      await fn();
    } catch (err) {
      console.error(`cleanup: ${(err as Error).message}`);
    }
  }
}

// Last resort: a bench that dies without reaching its `finally` leaves no node behind.
process.once("exit", () => {
  for (const c of children) c.kill("SIGKILL");
});

function killChild(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  return new Promise<void>((done) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      children.delete(child);
      return done();
    }
    child.once("exit", () => {
      children.delete(child);
      done();
    });
    child.kill(signal);
  });
}

export async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() =>
        typeof address === "object" && address ? ok(address.port) : fail(new Error("no port")),
      );
    });
  });
}

/** A fresh database on the local server, dropped (WITH (FORCE)) by `cleanup()`. */
export async function createDatabase(): Promise<{ url: string; sql: postgres.Sql }> {
  const name = `kelpie_bench_${process.pid}_${Math.floor(Math.random() * 1e9)}`;
  const admin = postgres(ADMIN_URL, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  const sql = postgres(url.toString(), { max: 2, onnotice: () => {} });
  cleanups.push(async () => {
    await sql.end({ timeout: 1 });
    const drop = postgres(ADMIN_URL, { max: 1, onnotice: () => {} });
    try {
      await drop.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    } finally {
      await drop.end();
    }
  });
  return { url: url.toString(), sql };
}

/** A temporary directory removed by `cleanup()`. */
export function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "kelpie-bench-cluster-"));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** One cluster node: a `kelpie serve` process that can be killed and started again (same id, port). */
export interface KelpieNode {
  readonly nodeId: string;
  readonly url: string;
  /** Spawns the process and waits until /health answers 200 (joined, serving). */
  start(): Promise<void>;
  /** Sends `signal` (default SIGKILL) and waits for the process to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  output(): string;
  /** Whether the process is up (started, and neither killed nor dead). */
  running(): boolean;
  /**
   * How often this node said its leases lapsed (no heartbeat landed for a lease TTL) once serving,
   * over all its starts. A loaded machine can stall a starting node past a TTL before it serves.
   */
  lapses(): number;
}

const LAPSE_LOG = "this node's leases lapsed";

export async function kelpieNode(options: {
  nodeId: string;
  databaseUrl: string;
  llmUrl: string;
  leaseTtlMs: number;
  env?: Record<string, string>;
}): Promise<KelpieNode> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const dataDir = tempDir();
  let child: ChildProcess | null = null;
  let log = "";
  let lapses = 0;
  return {
    nodeId: options.nodeId,
    url,
    output: () => log,
    running: () => child !== null && child.exitCode === null && child.signalCode === null,
    lapses: () => lapses,
    async start() {
      log = "";
      let serving = false;
      const proc = spawn(process.execPath, [join(ROOT, "bin/kelpie.mjs"), "serve"], {
        cwd: ROOT,
        env: {
          ...process.env,
          KELPIE_HOST: "127.0.0.1",
          KELPIE_PORT: String(port),
          KELPIE_DATA_DIR: dataDir,
          KELPIE_LOG_LEVEL: "warn",
          KELPIE_LOG_FORMAT: "json",
          KELPIE_STORAGE: "postgres",
          KELPIE_DATABASE_URL: options.databaseUrl,
          KELPIE_NODE_ID: options.nodeId,
          KELPIE_LEASE_TTL_MS: String(options.leaseTtlMs),
          OPENAI_API_KEY: "sk-test",
          OPENAI_BASE_URL: `${options.llmUrl}/v1`,
          ...options.env,
        },
        stdio: ["ignore", "pipe", "pipe"],
      });
      child = proc;
      children.add(proc);
      // Log lines are counted whole: a chunk may end inside one.
      let partial = "";
      const keep = (d: Buffer) => {
        const text = d.toString();
        log = (log + text).slice(-OUTPUT_TAIL_CHARS);
        const lines = (partial + text).split("\n");
        partial = lines.pop() ?? "";
        for (const line of lines) {
          if (!serving || !line.includes(LAPSE_LOG)) continue;
          lapses++;
          console.error(`${options.nodeId}: its leases lapsed (no heartbeat landed for a lease TTL)`);
        }
      };
      proc.stdout?.on("data", keep);
      proc.stderr?.on("data", keep);
      const deadline = performance.now() + NODE_STARTUP_TIMEOUT_MS;
      for (;;) {
        if (proc.exitCode !== null)
          throw new Error(`node ${options.nodeId} exited with ${proc.exitCode}:\n${log}`);
        try {
          const res = await fetch(`${url}/health`);
          await res.arrayBuffer();
          if (res.ok) {
            serving = true;
            return;
          }
        } catch {}
        if (performance.now() > deadline) {
          throw new Error(
            `node ${options.nodeId} did not answer /health in ${NODE_STARTUP_TIMEOUT_MS} ms:\n${log}`,
          );
        }
        await sleep(50);
      }
    },
    async kill(signal = "SIGKILL") {
      if (child !== null) await killChild(child, signal);
      child = null;
    },
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// OpenAI chat completions answering at once with one send_message call (the turn ends after one
// step), as JSON or SSE. Plain JS, run in a worker thread so the load generator keeps its own loop.
const INSTANT_LLM = `
const http = require("node:http");
const { parentPort } = require("node:worker_threads");
let n = 0;
const created = 1700000000;
const usage = { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 };
const server = http.createServer((req, res) => {
  let raw = "";
  req.on("data", (d) => (raw += d));
  req.on("end", () => {
    const path = (req.url || "").split("?")[0].replace(/\\/+$/, "");
    if (!path.endsWith("/chat/completions")) {
      res.writeHead(404, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { message: "no route " + path, type: "not_found_error" } }));
      return;
    }
    const body = JSON.parse(raw || "{}");
    const id = "chatcmpl-" + ++n;
    const call = { id: "call_" + n, type: "function", function: { name: "send_message", arguments: JSON.stringify({ message: "ok" }) } };
    if (!body.stream) {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ id, object: "chat.completion", created, model: body.model,
        choices: [{ index: 0, message: { role: "assistant", content: null, refusal: null, tool_calls: [call] },
          finish_reason: "tool_calls", logprobs: null }], usage }));
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    const chunk = (choices, extra) => res.write("data: " + JSON.stringify(Object.assign(
      { id, object: "chat.completion.chunk", created, model: body.model, choices }, extra || {})) + "\\n\\n");
    chunk([{ index: 0, delta: { role: "assistant", content: "", tool_calls: [Object.assign({ index: 0 }, call)] }, finish_reason: null }]);
    chunk([{ index: 0, delta: {}, finish_reason: "tool_calls" }]);
    if (body.stream_options && body.stream_options.include_usage) chunk([], { usage });
    res.end("data: [DONE]\\n\\n");
  });
});
server.keepAliveTimeout = 600000;
server.listen(0, "127.0.0.1", () => parentPort.postMessage(server.address().port));
`;

/** The instant model, in a worker thread; returns its base URL (without /v1). */
export async function startInstantLlm(): Promise<string> {
  const worker = new Worker(INSTANT_LLM, { eval: true });
  cleanups.push(async () => {
    await worker.terminate();
  });
  const port = await new Promise<number>((ok, fail) => {
    worker.once("message", ok);
    worker.once("error", fail);
  });
  return `http://127.0.0.1:${port}`;
}

// The primitive under forwarding: a bare node:http server answering a small JSON write, and a bare
// node:http proxy (keep-alive agent, as the nodes' forwarder) in front of it, each its own process.
const BARE_SERVER = `
const http = require("node:http");
const server = http.createServer((req, res) => {
  let raw = "";
  req.on("data", (d) => (raw += d));
  req.on("end", () => {
    const body = JSON.stringify({ ok: true, echo: raw.length });
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
  });
});
server.keepAliveTimeout = 600000;
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
`;

const BARE_PROXY = `
const http = require("node:http");
const target = new URL(process.env.TARGET);
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const server = http.createServer((req, res) => {
  const headers = Object.assign({}, req.headers);
  delete headers.host; delete headers.connection;
  const up = http.request({ agent, hostname: target.hostname, port: target.port, method: req.method,
    path: req.url, headers }, (r) => {
    res.writeHead(r.statusCode, r.headers);
    r.pipe(res);
  });
  up.on("error", () => { res.writeHead(502); res.end(); });
  req.pipe(up);
});
server.keepAliveTimeout = 600000;
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
`;

async function spawnBare(code: string, env: Record<string, string> = {}): Promise<string> {
  const proc = spawn(process.execPath, ["-e", code], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  children.add(proc);
  const port = await new Promise<number>((ok, fail) => {
    proc.stdout?.once("data", (d: Buffer) => ok(Number(d.toString().trim())));
    proc.once("exit", (code) => fail(new Error(`bare process exited with ${code}`)));
  });
  return `http://127.0.0.1:${port}`;
}

/** Starts the bare server and the bare proxy in front of it; returns both URLs. */
export async function startBareProxyPair(): Promise<{ direct: string; proxied: string }> {
  const direct = await spawnBare(BARE_SERVER);
  const proxied = await spawnBare(BARE_PROXY, { TARGET: direct });
  return { direct, proxied };
}
