// Chooses the sandbox level for a custom tool and runs it there. A tool may ask for a level in its
// metadata (`sandbox`); otherwise the server's default for its language applies (KELPIE_SANDBOX_JS,
// default isolate; KELPIE_SANDBOX_PYTHON, default wasm). `isolate` is a V8 isolate (JavaScript
// and TypeScript only); `wasm` is Python in WebAssembly inside a V8 isolate (no system package);
// `namespace` is python3 or node under bubblewrap; `vm` is python3 or node inside gVisor (runsc, a
// kernel in user space), offered where runsc is installed and works; `process` is a plain limited
// process, used only when the operator opts in with KELPIE_SANDBOX_ALLOW_PROCESS=1 (logged loudly at
// start). A level this server cannot provide is an error naming what is missing: never a silent
// fallback to a weaker level.
//
// Whatever the level, at most SANDBOX_CONCURRENT_MAX runs are in flight at once and at most
// SANDBOX_QUEUED_MAX wait for a slot; a run beyond that fails at once, saying so. Every result's
// value and printed output are capped at SANDBOX_OUTPUT_BYTES_MAX on the way out.
import { assert } from "../../core/assert.ts";
import { closeIsolatePool, runIsolate } from "./isolate.ts";
import {
  defaultsKey,
  levelProblem,
  SANDBOX_CONCURRENT_MAX,
  SANDBOX_DEFAULT_ENV,
  SANDBOX_DEFAULTS,
  SANDBOX_QUEUED_MAX,
  type SandboxDefaults,
  type SandboxLanguage,
  type SandboxLevel,
  type SandboxRequest,
  type SandboxResult,
} from "./limits.ts";
import { closeSandboxPool, runSandboxed, runtimeOf, sandboxProblem, seccompSupported } from "./namespace.ts";
import { capResult } from "./output.ts";
import { Slots } from "./slots.ts";
import { closeWasmPool, runWasm, warmWasmPool } from "./wasm.ts";

/** How many runs may be in flight and wait, across levels. */
export interface SandboxBounds {
  concurrentMax: number;
  queuedMax: number;
}
export const SANDBOX_BOUNDS: SandboxBounds = {
  concurrentMax: SANDBOX_CONCURRENT_MAX,
  queuedMax: SANDBOX_QUEUED_MAX,
};

export interface SandboxStatus {
  /** Levels this server provides (namespace: for Python tools; see namespaceNode for Node tools). */
  levels: SandboxLevel[];
  namespace: boolean;
  /** Whether JavaScript/TypeScript tools can run under node in the namespace level. */
  namespaceNode: boolean;
  /** Whether Python tools can run inside gVisor (the vm level); see vmNode for Node tools. */
  vm: boolean;
  vmNode: boolean;
  /** Why not, when either is false (runsc missing, not root, or its start-up check failed); else null. */
  vmProblem: string | null;
  processAllowed: boolean;
  defaults: SandboxDefaults;
  /** One line per configured level this server cannot provide, and why (logged at start). */
  problems: string[];
  /** Runs in flight and waiting now, and their bounds. */
  runs: { running: number; queued: number; running_max: number; queued_max: number };
}

export class Sandbox {
  private readonly defaults: SandboxDefaults;
  private readonly slots: Slots;

  constructor(
    private readonly processAllowed: boolean,
    defaults: SandboxDefaults = SANDBOX_DEFAULTS,
    bounds: SandboxBounds = SANDBOX_BOUNDS,
  ) {
    this.slots = new Slots(bounds.concurrentMax, bounds.queuedMax);
    for (const language of ["javascript", "python"] as const) {
      const problem = levelProblem(defaults[language], language);
      assert(problem === null, `default sandbox level for ${language} ${problem}`);
    }
    this.defaults = { ...defaults };
  }

  status(): SandboxStatus {
    const namespace = this.unavailable("namespace", "python") === null;
    const nodeProblem = this.unavailable("namespace", "javascript");
    const vmPython = this.unavailable("vm", "python");
    const vmNode = this.unavailable("vm", "javascript");
    const problems: string[] = [];
    for (const language of ["javascript", "python"] as const) {
      const level = this.defaults[language];
      const problem = this.unavailable(level, language);
      if (problem !== null) problems.push(`${SANDBOX_DEFAULT_ENV[language]}=${level}: ${problem}`);
    }
    if ((namespace || nodeProblem === null) && !seccompSupported()) {
      problems.push(
        `the namespace level runs without its seccomp filter: there is none for ${process.arch} (only x64 and arm64)`,
      );
    }
    if (nodeProblem !== null && this.defaults.javascript !== "namespace") {
      problems.push(`JavaScript/TypeScript tools cannot ask for the namespace level: ${nodeProblem}`);
    }
    return {
      levels: [
        "isolate",
        "wasm",
        ...(namespace ? (["namespace"] as const) : []),
        ...(vmPython === null ? (["vm"] as const) : []),
        ...(this.processAllowed ? (["process"] as const) : []),
      ],
      namespace,
      namespaceNode: nodeProblem === null,
      vm: vmPython === null,
      vmNode: vmNode === null,
      vmProblem: vmPython ?? vmNode,
      processAllowed: this.processAllowed,
      defaults: { ...this.defaults },
      problems,
      runs: {
        running: this.slots.load().running,
        queued: this.slots.load().waiting,
        running_max: this.slots.runningMax,
        queued_max: this.slots.waitingMax,
      },
    };
  }

  /** The level a tool runs at when it asks for none. */
  defaultLevel(language: SandboxLanguage): SandboxLevel {
    return this.defaults[defaultsKey(language)];
  }

  /** Why this server cannot run a `language` tool at `level`, or null when it can. */
  unavailable(level: SandboxLevel, language: SandboxLanguage): string | null {
    const invalid = levelProblem(level, language);
    if (invalid !== null) return `the level ${invalid}`;
    if (level === "isolate" || level === "wasm") return null;
    if (level === "process" && !this.processAllowed) {
      return "the process level is off on this server (the operator turns it on with KELPIE_SANDBOX_ALLOW_PROCESS=1)";
    }
    return sandboxProblem(runtimeOf(language), level);
  }

  async run(request: SandboxRequest): Promise<SandboxResult> {
    const level = request.level ?? this.defaultLevel(request.language);
    const missing = this.unavailable(level, request.language);
    if (missing !== null) {
      const chosenBy =
        request.level === undefined
          ? `the server default ${SANDBOX_DEFAULT_ENV[defaultsKey(request.language)]}`
          : "the tool's metadata";
      return failure(
        `This ${request.language} tool needs the ${level} sandbox level (chosen by ${chosenBy}), but ${missing}. Kelpie does not fall back to a weaker level.`,
        level,
      );
    }
    const slot = this.slots.acquire();
    if (slot === null) {
      return failure(
        `Too many sandboxed tool runs at once: ${this.slots.runningMax} are running and ${this.slots.waitingMax} are waiting (the server's limits SANDBOX_CONCURRENT_MAX and SANDBOX_QUEUED_MAX). Try again shortly.`,
        level,
      );
    }
    const release = await slot;
    try {
      return capResult(await runAt(level, request));
    } finally {
      release();
    }
  }

  /**
   * A tool that runs at `level` (null: the server default for its language) was just stored: start
   * that level's warm pool now, so its first run does not pay for booting an interpreter (the first
   * wasm run also builds the interpreter snapshot: seconds). Levels without a lazy pool ignore it.
   */
  prepare(language: SandboxLanguage, level: SandboxLevel | undefined): void {
    if ((level ?? this.defaultLevel(language)) === "wasm") warmWasmPool();
  }

  /** Kills the pre-started sandboxes; the server calls this when it closes. */
  close(): Promise<void> {
    return Promise.all([closeSandboxPool(), closeWasmPool(), closeIsolatePool()]).then(() => undefined);
  }
}

/** Runs a request at a level this server provides (checked by the caller). */
function runAt(level: SandboxLevel, request: SandboxRequest): Promise<SandboxResult> {
  switch (level) {
    case "isolate":
      return runIsolate(request);
    case "wasm":
      return runWasm(request);
    case "namespace":
    case "vm":
    case "process":
      return runSandboxed(request, level);
  }
}

function failure(value: string, level: SandboxLevel): SandboxResult {
  return { ok: false, value, stdout: [], stderr: [], level };
}
