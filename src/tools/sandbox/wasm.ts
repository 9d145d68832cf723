// The `wasm` level: Python tools in Pyodide (CPython compiled to WebAssembly, from its npm package:
// interpreter and standard library ship inside it, nothing is downloaded) running inside a bare V8
// isolate (isolated-vm). No system package is needed. What a tool can reach:
// - files: only Pyodide's private in-memory file system (nothing of the host);
// - network: none (the isolate has no sockets, fetch or Node APIs; Python's socket module fails);
// - processes: none (fork and subprocess are not implemented in WebAssembly);
// - Python's `js` module and `run_js` reach only the isolate's own shims (wasm-boot.ts).
// Bounds: the interpreter's linear memory may grow to WASM_MEMORY_BYTES_MAX (its maximum is
// rewritten in the module before compiling), the isolate's JS heap to WASM_JS_HEAP_MB_MAX, a run
// to SANDBOX_WALL_TIMEOUT_MS (the isolate is terminated, then disposed), and what a tool prints or
// returns to SANDBOX_OUTPUT_BYTES_MAX (cut with a marker).
//
// Booting an interpreter costs seconds of CPU (compiling 10 MB of WebAssembly, starting CPython),
// spent on isolated-vm's threads, never the event loop. A small warm pool holds booted
// interpreters; each serves exactly one run and is then disposed, so nothing carries over.
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import ivm from "isolated-vm";
import { assert } from "../../core/assert.ts";
import {
  SANDBOX_OUTPUT_BYTES_MAX,
  SANDBOX_WALL_TIMEOUT_MS,
  type SandboxRequest,
  type SandboxResult,
} from "./limits.ts";
import { ISOLATE_SHIMS, PY_RUNNER } from "./wasm-boot.ts";

/** Linear memory a tool's interpreter may grow to (CPython itself takes ~30 MiB of it). */
export const WASM_MEMORY_BYTES_MAX = 512 * 1024 * 1024;
/** The isolate's own JavaScript heap (Pyodide's loader and FFI objects; the interpreter's memory is
 * WebAssembly memory, bounded above). */
export const WASM_JS_HEAP_MB_MAX = 256;
/** Booted interpreters kept ready: each holds ~100 MB and took seconds of CPU to boot. */
export const WASM_POOL_SIZE = 1;
/** How long booting one interpreter may take before it is abandoned. */
export const WASM_BOOT_TIMEOUT_MS = 60_000;
/** A request's JSON (source, arguments, env) handed into the interpreter. */
export const WASM_REQUEST_BYTES_MAX = 4 * 1024 * 1024;

const WASM_PAGE_BYTES = 64 * 1024;
const PYODIDE_VERSION = "314.0.8";

interface Assets {
  dir: string;
  asmSource: string;
  loaderSource: string;
  lock: string;
  files: ivm.ExternalCopy<Record<string, Uint8Array | Uint8Array[]>>;
}

let assets: Promise<Assets> | null = null;

/** Pyodide's files, read once; the module is patched where its shell mode needs a host facility.
 * Read asynchronously and handed to isolated-vm by transfer, not copy: the event loop never spends
 * more than a memcpy of the interpreter's module on them (a copying ExternalCopy of these 12 MB
 * held it ~30 ms, ~200 ms under load). */
function loadAssets(): Promise<Assets> {
  assets ??= readAssets();
  assets.catch(() => {
    assets = null; // The next boot tries again.
  });
  return assets;
}

async function readAssets(): Promise<Assets> {
  const require = createRequire(import.meta.url);
  const dir = `${dirname(require.resolve("pyodide/package.json"))}/`;
  const version = JSON.parse(await readFile(join(dir, "package.json"), "utf8")).version;
  assert(
    version === PYODIDE_VERSION,
    `pyodide ${PYODIDE_VERSION} expected (its shell-mode patch), got ${version}`,
  );
  const asm = await readFile(join(dir, "pyodide.asm.mjs"), "utf8");
  // In shell mode Emscripten draws random bytes from `os.system("head -c N /dev/urandom")`; use
  // crypto.getRandomValues (the isolate's shim) as it does in browsers.
  const shellRandom = "if(ENVIRONMENT_IS_SHELL){return view=>{if(!os.system)";
  assert(asm.split(shellRandom).length === 2, "pyodide.asm.mjs: the shell random source was not found");
  const module = own(await readFile(join(dir, "pyodide.asm.wasm")));
  const wasm = memoryMaximumParts(module, WASM_MEMORY_BYTES_MAX / WASM_PAGE_BYTES);
  const stdlib = own(await readFile(join(dir, "python_stdlib.zip")));
  const files: Record<string, Uint8Array | Uint8Array[]> = {
    [`${dir}pyodide.asm.wasm`]: wasm,
    [`${dir}python_stdlib.zip`]: stdlib,
  };
  return {
    dir,
    asmSource: asm.replace(shellRandom, "if(false){return view=>{if(!os.system)"),
    loaderSource: await readFile(join(dir, "pyodide.mjs"), "utf8"),
    lock: await readFile(join(dir, "pyodide-lock.json"), "utf8"),
    files: new ivm.ExternalCopy(files, {
      transferList: [module.buffer, wasm[1]!.buffer as ArrayBuffer, stdlib.buffer],
    }),
  };
}

/** The bytes in an ArrayBuffer of their own, which can be transferred (a fresh read of a large file
 * already is one; a read from Node's shared pool is copied). */
function own(b: Uint8Array): Uint8Array<ArrayBuffer> {
  if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer)
    return b as Uint8Array<ArrayBuffer>;
  return new Uint8Array(toArrayBuffer(b));
}

function toArrayBuffer(b: Uint8Array): ArrayBuffer {
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

function readLeb(bytes: Uint8Array, at: number): { value: number; next: number } {
  let value = 0;
  let shift = 0;
  let next = at;
  for (;;) {
    const byte = bytes[next++];
    assert(byte !== undefined && shift < 35, "wasm: bad LEB128");
    value += (byte & 0x7f) * 2 ** shift;
    shift += 7;
    if ((byte & 0x80) === 0) return { value, next };
  }
}

function leb(value: number): number[] {
  const out: number[] = [];
  let v = value;
  do {
    const byte = v & 0x7f;
    v = Math.floor(v / 128);
    out.push(v === 0 ? byte : byte | 0x80);
  } while (v !== 0);
  return out;
}

/**
 * The module with its one defined memory's maximum set to `maxPages`: the interpreter cannot grow
 * past it (MemoryError in Python). V8 does not count WebAssembly memory against an isolate's heap
 * limit, so this is the memory bound. Returned in three parts (views of the module around a new
 * memory section) that the isolate joins: copying the 10 MB module here held the event loop 60 ms.
 */
export function memoryMaximumParts(module: Uint8Array, maxPages: number): Uint8Array[] {
  let at = 8;
  while (at < module.length) {
    const id = module[at] as number;
    const size = readLeb(module, at + 1);
    const body = size.next;
    const end = body + size.value;
    if (id === 5) {
      const count = readLeb(module, body);
      assert(count.value === 1, "wasm: one memory expected");
      const flags = module[count.next] as number;
      assert(flags === 0 || flags === 1, `wasm: unexpected memory flags ${flags}`);
      const min = readLeb(module, count.next + 1);
      assert(min.value <= maxPages, "wasm: the memory bound is below the module's initial memory");
      const section = [1, 1, ...leb(min.value), ...leb(maxPages)];
      return [
        module.subarray(0, at + 1),
        Uint8Array.from([...leb(section.length), ...section]),
        module.subarray(end),
      ];
    }
    at = end;
  }
  throw new Error("wasm: no memory section");
}

/** The module with its memory maximum set, in one piece (see memoryMaximumParts). */
export function withMemoryMaximum(module: Uint8Array, maxPages: number): Uint8Array<ArrayBuffer> {
  const parts = memoryMaximumParts(module, maxPages);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let w = 0;
  for (const p of parts) {
    out.set(p, w);
    w += p.length;
  }
  return out;
}

interface Interpreter {
  isolate: ivm.Isolate;
  context: ivm.Context;
}

/** A fresh isolate with Pyodide's loader and module evaluated, ready for `__loadPyodide`. */
async function prepare(
  isolate: ivm.Isolate,
  snapshot: ivm.ExternalCopy<ArrayBuffer> | null,
): Promise<ivm.Context> {
  const a = await loadAssets();
  const context = await isolate.createContext();
  const g = context.global;
  await g.set("globalThis", g.derefInto());
  await g.set("__files", a.files.copyInto({ release: false }));
  await g.set("__lock", a.lock);
  await g.set(
    "__random",
    new ivm.Callback((n: number) => {
      const b = randomBytes(Math.min(Math.max(0, n | 0), 65_536));
      return new ivm.ExternalCopy(toArrayBuffer(b)).copyInto();
    }),
  );
  await g.set("__print", new ivm.Callback(() => undefined));
  if (snapshot !== null) await g.set("__snapshot", snapshot.copyInto({ release: false }));
  await context.eval(ISOLATE_SHIMS);
  const noImports = () => {
    throw new Error("the wasm sandbox loads no modules");
  };
  const asm = await isolate.compileModule(a.asmSource, { filename: `file://${a.dir}pyodide.asm.mjs` });
  await asm.instantiate(context, noImports);
  await asm.evaluate();
  const loader = await isolate.compileModule(a.loaderSource, { filename: `file://${a.dir}pyodide.mjs` });
  await loader.instantiate(context, noImports);
  await loader.evaluate();
  await g.set("__createPyodideModule", (await asm.namespace.get("default", { reference: true })).derefInto());
  await g.set("__loadPyodide", (await loader.namespace.get("loadPyodide", { reference: true })).derefInto());
  return context;
}

function loadCall(dir: string, extra: string): string {
  return `__loadPyodide({ indexURL: ${JSON.stringify(dir)}, createPyodideModule: __createPyodideModule,
    lockFileContents: JSON.parse(__lock), stdout: () => {}, stderr: () => {}, env: { HOME: "/home/pyodide" }, ${extra} })`;
}

let snapshotting: Promise<ivm.ExternalCopy<ArrayBuffer>> | null = null;

/**
 * The memory of an interpreter that has started CPython and imported the runner's modules, taken
 * once per process: an interpreter restored from it boots in a fraction of the time.
 */
function snapshot(): Promise<ivm.ExternalCopy<ArrayBuffer>> {
  snapshotting ??= (async () => {
    const isolate = new ivm.Isolate({ memoryLimit: WASM_JS_HEAP_MB_MAX });
    try {
      const context = await prepare(isolate, null);
      await context.global.set("__runnerSource", runnerSource());
      // Wrapped in an ExternalCopy on the isolate's thread: copying these tens of megabytes here
      // held the event loop ~200 ms.
      return (await context.eval(
        `(async () => {
          const py = await ${loadCall((await loadAssets()).dir, "_makeSnapshot: true")};
          py.runPython(__runnerSource);
          const s = py.makeMemorySnapshot();
          return new Uint8Array(s).buffer;
        })()`,
        { promise: true, timeout: WASM_BOOT_TIMEOUT_MS, externalCopy: true },
      )) as ivm.ExternalCopy<ArrayBuffer>;
    } finally {
      if (!isolate.isDisposed) isolate.dispose();
    }
  })();
  snapshotting.catch(() => {
    snapshotting = null; // The next boot tries again.
  });
  return snapshotting;
}

function runnerSource(): string {
  return PY_RUNNER.replaceAll("{OUTPUT_MAX}", String(SANDBOX_OUTPUT_BYTES_MAX));
}

/** Boots one interpreter in a fresh isolate, restored from the snapshot, with the tool runner. */
export async function boot(): Promise<Interpreter> {
  const saved = await snapshot();
  const isolate = new ivm.Isolate({ memoryLimit: WASM_JS_HEAP_MB_MAX });
  try {
    const context = await prepare(isolate, saved);
    await context.eval(
      `(async () => {
        const py = await ${loadCall((await loadAssets()).dir, "_loadSnapshot: __snapshot")};
        globalThis.__run = py.globals.get("__kelpie_run");
        for (const name of ["__snapshot", "__lock", "__loadPyodide", "__createPyodideModule"]) delete globalThis[name];
      })()`,
      { promise: true, timeout: WASM_BOOT_TIMEOUT_MS },
    );
    return { isolate, context };
  } catch (err) {
    if (!isolate.isDisposed) isolate.dispose();
    throw err;
  }
}

const pool: Promise<Interpreter>[] = [];
let closed = false;

export interface WasmRunOptions {
  /** Booted interpreters to keep ready (default WASM_POOL_SIZE); 0 boots one for every run. */
  poolSize?: number;
}

function refill(size: number): void {
  while (!closed && pool.length < size) {
    const booting = boot();
    booting.catch(() => {}); // Seen by the run that takes it.
    pool.push(booting);
  }
}

async function take(poolSize: number): Promise<Interpreter> {
  closed = false;
  const ready = pool.shift();
  refill(poolSize);
  return ready ?? boot();
}

/** Interpreters booted or booting in the pool, not yet taken by a run (tests). */
export function wasmPoolCount(): number {
  return pool.length;
}

/** Starts booting the pool ahead of the first run (Sandbox.prepare calls it when a Python tool is
 * stored, so the run that follows finds an interpreter ready). */
export function warmWasmPool(): void {
  closed = false;
  refill(WASM_POOL_SIZE);
}

export async function closeWasmPool(): Promise<void> {
  closed = true;
  const booting = pool.splice(0);
  for (const b of booting) {
    b.then(
      (i) => i.isolate.isDisposed || i.isolate.dispose(),
      () => {},
    );
  }
}

function failure(value: string): SandboxResult {
  return { ok: false, value, stdout: [], stderr: [], level: "wasm" };
}

function capped(text: string): string {
  return text.length > SANDBOX_OUTPUT_BYTES_MAX
    ? `${text.slice(0, SANDBOX_OUTPUT_BYTES_MAX)}\n[cut by Kelpie: the tool returned more than ${SANDBOX_OUTPUT_BYTES_MAX} characters]`
    : text;
}

export async function runWasm(request: SandboxRequest, options: WasmRunOptions = {}): Promise<SandboxResult> {
  assert(request.language === "python", "the wasm level runs Python tools");
  const payload = JSON.stringify({
    source: request.source,
    function: request.functionName,
    args: request.args,
    env: request.env,
  });
  if (payload.length > WASM_REQUEST_BYTES_MAX)
    return failure(
      `The tool's request (${payload.length} bytes) is over the ${WASM_REQUEST_BYTES_MAX} byte limit`,
    );
  let interpreter: Interpreter;
  try {
    interpreter = await take(options.poolSize ?? WASM_POOL_SIZE);
  } catch (err) {
    return failure(`The wasm sandbox could not start: ${err instanceof Error ? err.message : String(err)}`);
  }
  const { isolate, context } = interpreter;
  let wall: NodeJS.Timeout | undefined;
  try {
    await context.global.set("__request", payload);
    // The run is synchronous inside the isolate: its `timeout` terminates it. The wall timer covers
    // anything else (it disposes the isolate, which ends every pending call).
    const answer = await Promise.race([
      context.eval("__run(__request)", { timeout: SANDBOX_WALL_TIMEOUT_MS, copy: true }) as Promise<unknown>,
      new Promise<never>((_, reject) => {
        wall = setTimeout(
          () => reject(new Error("Script execution timed out.")),
          SANDBOX_WALL_TIMEOUT_MS + 1_000,
        );
      }),
    ]);
    const result = JSON.parse(String(answer)) as {
      ok: boolean;
      value: string;
      stdout: string;
      stderr: string;
    };
    return {
      ok: result.ok,
      value: capped(String(result.value)),
      stdout: result.stdout === "" ? [] : [result.stdout],
      stderr: result.stderr === "" ? [] : [result.stderr],
      level: "wasm",
    };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    if (/timed out/i.test(message))
      return failure(`Timeout: the tool ran past its ${SANDBOX_WALL_TIMEOUT_MS} ms limit`);
    if (/memory limit|disposed/i.test(message) || isolate.isDisposed)
      return failure(`The tool exceeded its memory limit (${WASM_MEMORY_BYTES_MAX / (1024 * 1024)} MB)`);
    return failure(message);
  } finally {
    clearTimeout(wall);
    if (!isolate.isDisposed) isolate.dispose();
  }
}
