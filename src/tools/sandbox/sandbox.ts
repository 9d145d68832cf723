// Chooses the sandbox level for a custom tool and runs it there: JavaScript/TypeScript in a V8
// isolate, Python under bubblewrap (namespace). The plain `process` level is used only when the
// operator opts in with KELPIE_SANDBOX_ALLOW_PROCESS=1 (logged loudly at start).
import { runIsolate } from "./isolate.ts";
import type { SandboxLevel, SandboxRequest, SandboxResult } from "./limits.ts";
import { closeSandboxPool, namespaceAvailable, runPython } from "./namespace.ts";

export interface SandboxStatus {
  levels: SandboxLevel[];
  namespace: boolean;
  processAllowed: boolean;
}

export class Sandbox {
  constructor(private readonly processAllowed: boolean) {}

  status(): SandboxStatus {
    const namespace = namespaceAvailable();
    return {
      levels: [
        "isolate",
        ...(namespace ? (["namespace"] as const) : []),
        ...(this.processAllowed ? (["process"] as const) : []),
      ],
      namespace,
      processAllowed: this.processAllowed,
    };
  }

  async run(request: SandboxRequest): Promise<SandboxResult> {
    if (request.language !== "python") return runIsolate(request);
    if (namespaceAvailable()) return runPython(request, "namespace");
    if (this.processAllowed) return runPython(request, "process");
    return {
      ok: false,
      value:
        "Python tools need the namespace sandbox, but bubblewrap (bwrap) is not available on this server: install it (apt-get install bubblewrap), or set KELPIE_SANDBOX_ALLOW_PROCESS=1 to run tools as plain processes.",
      stdout: [],
      stderr: [],
      level: "namespace",
    };
  }

  /** Kills the pre-started Python sandboxes; the server calls this when it closes. */
  close(): Promise<void> {
    return closeSandboxPool();
  }
}
