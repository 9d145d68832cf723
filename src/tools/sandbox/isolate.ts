// JavaScript and TypeScript tools in a V8 isolate (isolated-vm): its own heap with a memory limit,
// a CPU-time limit, and no Node APIs at all — no file system, network or process.
import ivm from "isolated-vm";
import { toScript } from "./compile.ts";
import {
  ISOLATE_MEMORY_MB_MAX,
  ISOLATE_TIMEOUT_MS,
  type SandboxRequest,
  type SandboxResult,
} from "./limits.ts";

export async function runIsolate(request: SandboxRequest): Promise<SandboxResult> {
  const isolate = new ivm.Isolate({ memoryLimit: ISOLATE_MEMORY_MB_MAX });
  try {
    const context = await isolate.createContext();
    const logs: string[] = [];
    await context.global.set(
      "__log",
      new ivm.Callback((...parts: unknown[]) => void logs.push(parts.map(String).join(" "))),
    );
    const source = await toScript(request.language, request.source);
    const argsJson = JSON.stringify(request.parameterNames.map((name) => request.args[name]));
    const code = `const console = { log: (...a) => __log(...a), error: (...a) => __log(...a) };
${source}
;(async () => { const __value = await ${request.functionName}(...${argsJson});
  return typeof __value === "string" ? __value : JSON.stringify(__value); })()`;
    const value = (await context.eval(code, {
      timeout: ISOLATE_TIMEOUT_MS,
      promise: true,
      copy: true,
    })) as string;
    return { ok: true, value: String(value), stdout: logs, stderr: [], level: "isolate" };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    const reason = /timed out/i.test(message)
      ? `Timeout: the tool ran past its ${ISOLATE_TIMEOUT_MS} ms limit`
      : /memory limit/i.test(message) || isolate.isDisposed
        ? `The tool exceeded its ${ISOLATE_MEMORY_MB_MAX} MB memory limit`
        : message;
    return { ok: false, value: reason, stdout: [], stderr: [], level: "isolate" };
  } finally {
    if (!isolate.isDisposed) isolate.dispose();
  }
}
