// JavaScript and TypeScript tools in a V8 isolate (isolated-vm): its own heap with a memory limit,
// a CPU-time limit, and no Node APIs at all — no file system, network or process.
//
// Every run is bounded in time and output and leaves nothing behind: the whole run (awaited promises
// included) races a wall-clock timer, and the isolate is disposed on every path — which is also what
// ends a run still waiting on a promise that never settles. What the tool prints and what it returns
// are cut at SANDBOX_OUTPUT_BYTES_MAX inside the isolate, before they are copied out.
//
// Making an isolate and its context is most of a run's cost, so a small pool holds fresh ones made
// ahead of need (off the run's path). Each serves exactly one run and is then disposed: nothing a
// tool leaves in its heap, globals or prototypes reaches the next run.
import ivm from "isolated-vm";
import { toScript } from "./compile.ts";
import {
  ISOLATE_MEMORY_MB_MAX,
  ISOLATE_TIMEOUT_MS,
  ISOLATE_WALL_TIMEOUT_MS,
  SANDBOX_OUTPUT_BYTES_MAX,
  type SandboxRequest,
  type SandboxResult,
} from "./limits.ts";
import { capText, OutputCap } from "./output.ts";

export interface IsolateRunOptions {
  /** Wall-clock limit for this run (default ISOLATE_WALL_TIMEOUT_MS); tests shorten it. */
  wallTimeoutMs?: number;
}

/** Fresh isolates kept ready; each idle one holds a few MB of heap. */
export const ISOLATE_POOL_SIZE = 2;

/** Isolates taken by a run and not yet disposed: zero whenever no run is in flight. */
let isolatesLive = 0;

/** How many isolates serve (or served and still hold) a run right now (tests and metrics): each run
 * disposes its own. Idle pooled isolates never ran anything and are not counted. */
export function isolateLiveCount(): number {
  return isolatesLive;
}

/** A fresh isolate and context, with the print callback already in place: it writes to whatever
 * sink the run that takes it sets. */
interface Fresh {
  isolate: ivm.Isolate;
  context: ivm.Context;
  sink: { output: OutputCap | null };
}

const pool: Promise<Fresh>[] = [];
let refilling = false;

async function fresh(): Promise<Fresh> {
  const isolate = new ivm.Isolate({ memoryLimit: ISOLATE_MEMORY_MB_MAX });
  try {
    const context = await isolate.createContext();
    const sink: Fresh["sink"] = { output: null };
    await context.global.set(
      LOG_GLOBAL,
      new ivm.Callback((line: unknown) => sink.output?.push(String(line))),
    );
    return { isolate, context, sink };
  } catch (err) {
    if (!isolate.isDisposed) isolate.dispose();
    throw err;
  }
}

/** Tops the pool up after the current run has returned its result (a macrotask later). */
function refill(): void {
  if (refilling) return;
  refilling = true;
  setImmediate(() => {
    refilling = false;
    while (pool.length < ISOLATE_POOL_SIZE) {
      const next = fresh();
      next.catch(() => {}); // Seen by the run that takes it.
      pool.push(next);
    }
  });
}

/** A pooled isolate, or a new one. The pool is topped up when the run ends (runIsolate), not here:
 * making an isolate blocks the event loop for milliseconds, which would land inside this run. */
async function take(): Promise<Fresh> {
  return pool.shift() ?? fresh();
}

/** Disposes the idle isolates (the server calls this when it closes). */
export async function closeIsolatePool(): Promise<void> {
  for (const idle of pool.splice(0)) {
    idle.then(
      (f) => f.isolate.isDisposed || f.isolate.dispose(),
      () => {},
    );
  }
}

class WallTimeout extends Error {}

/** The global the host's print callback is set under; the prelude takes it and deletes it. */
const LOG_GLOBAL = "__kelpieLog";

/** Runs before the tool's source: a console whose lines reach the host through one callback the tool
 * cannot reach, and that stops calling out once the output limit is passed (the host cuts exactly). */
function prelude(outputMax: number): string {
  // One line, so the tool's own line numbers in errors are off by one only, as before.
  return [
    "const console = (() => {",
    `const emit = globalThis.${LOG_GLOBAL}; delete globalThis.${LOG_GLOBAL}; let left = ${outputMax + 1};`,
    "const print = (...parts) => { if (left <= 0) return; let line = parts.map(String).join(' ');",
    "if (line.length > left) line = line.slice(0, left); left -= line.length + 1; emit(line); };",
    "return { log: print, info: print, debug: print, warn: print, error: print }; })();\n",
  ].join(" ");
}

export async function runIsolate(
  request: SandboxRequest,
  options: IsolateRunOptions = {},
): Promise<SandboxResult> {
  const wallTimeoutMs = options.wallTimeoutMs ?? ISOLATE_WALL_TIMEOUT_MS;
  let taken: Fresh;
  try {
    taken = await take();
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    return {
      ok: false,
      value: capText(`The isolate could not start: ${message}`),
      stdout: [],
      stderr: [],
      level: "isolate",
    };
  }
  const { isolate, context } = taken;
  isolatesLive++;
  const output = new OutputCap(SANDBOX_OUTPUT_BYTES_MAX);
  taken.sink.output = output;
  let timer: NodeJS.Timeout | undefined;
  const wall = new Promise<never>((_, reject) => {
    // det-ok: a real isolate needs a real timer to be disposed on time
    timer = setTimeout(() => reject(new WallTimeout()), wallTimeoutMs);
  });
  try {
    const value = await Promise.race([evaluate(context, request), wall]);
    return { ok: true, value: capText(value), stdout: output.lines, stderr: [], level: "isolate" };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    const reason =
      err instanceof WallTimeout
        ? `Timeout: the tool ran past its ${wallTimeoutMs} ms wall-clock limit (pending promises included) and was ended`
        : /timed out/i.test(message)
          ? `Timeout: the tool ran past its ${ISOLATE_TIMEOUT_MS} ms limit`
          : /memory limit/i.test(message) || isolate.isDisposed
            ? `The tool exceeded its ${ISOLATE_MEMORY_MB_MAX} MB memory limit`
            : message;
    return { ok: false, value: capText(reason), stdout: output.lines, stderr: [], level: "isolate" };
  } finally {
    clearTimeout(timer);
    // Disposing ends whatever still runs or waits in the isolate and frees its heap.
    if (!isolate.isDisposed) isolate.dispose();
    isolatesLive--;
    refill();
  }
}

/** The tool's value as a string, at most SANDBOX_OUTPUT_BYTES_MAX + 1 characters (the host cuts it exactly). */
async function evaluate(context: ivm.Context, request: SandboxRequest): Promise<string> {
  const source = await toScript(request.language, request.source);
  const argsJson = JSON.stringify(request.parameterNames.map((name) => request.args[name]));
  const code = `${prelude(SANDBOX_OUTPUT_BYTES_MAX)}${source}
;(async () => { const __value = await ${request.functionName}(...${argsJson});
  const text = typeof __value === "string" ? __value : JSON.stringify(__value);
  return typeof text === "string" && text.length > ${SANDBOX_OUTPUT_BYTES_MAX} ? text.slice(0, ${SANDBOX_OUTPUT_BYTES_MAX + 1}) : text; })()`;
  const value = await context.eval(code, { timeout: ISOLATE_TIMEOUT_MS, promise: true, copy: true });
  return String(value);
}
