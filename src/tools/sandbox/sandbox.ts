// Chooses the sandbox level for a custom tool and runs it there. A tool may ask for a level in its
// metadata (`sandbox`); otherwise the server's default for its language applies (KELPIE_SANDBOX_JS,
// default isolate; KELPIE_SANDBOX_PYTHON, default namespace). `isolate` is a V8 isolate (JavaScript
// and TypeScript only); `namespace` is python3 or node under bubblewrap; `process` is a plain limited
// process, used only when the operator opts in with KELPIE_SANDBOX_ALLOW_PROCESS=1 (logged loudly at
// start). A level this server cannot provide is an error naming what is missing: never a silent
// fallback to a weaker level.
import { assert } from "../../core/assert.ts";
import { runIsolate } from "./isolate.ts";
import {
  defaultsKey,
  levelProblem,
  SANDBOX_DEFAULT_ENV,
  SANDBOX_DEFAULTS,
  type SandboxDefaults,
  type SandboxLanguage,
  type SandboxLevel,
  type SandboxRequest,
  type SandboxResult,
} from "./limits.ts";
import { closeSandboxPool, runSandboxed, runtimeOf, sandboxProblem } from "./namespace.ts";

export interface SandboxStatus {
  /** Levels this server provides (namespace: for Python tools; see namespaceNode for Node tools). */
  levels: SandboxLevel[];
  namespace: boolean;
  /** Whether JavaScript/TypeScript tools can run under node in the namespace level. */
  namespaceNode: boolean;
  processAllowed: boolean;
  defaults: SandboxDefaults;
  /** One line per configured level this server cannot provide, and why (logged at start). */
  problems: string[];
}

export class Sandbox {
  private readonly defaults: SandboxDefaults;

  constructor(
    private readonly processAllowed: boolean,
    defaults: SandboxDefaults = SANDBOX_DEFAULTS,
  ) {
    for (const language of ["javascript", "python"] as const) {
      const problem = levelProblem(defaults[language], language);
      assert(problem === null, `default sandbox level for ${language} ${problem}`);
    }
    this.defaults = { ...defaults };
  }

  status(): SandboxStatus {
    const namespace = this.unavailable("namespace", "python") === null;
    const nodeProblem = this.unavailable("namespace", "javascript");
    const problems: string[] = [];
    for (const language of ["javascript", "python"] as const) {
      const level = this.defaults[language];
      const problem = this.unavailable(level, language);
      if (problem !== null) problems.push(`${SANDBOX_DEFAULT_ENV[language]}=${level}: ${problem}`);
    }
    if (nodeProblem !== null && this.defaults.javascript !== "namespace") {
      problems.push(`JavaScript/TypeScript tools cannot ask for the namespace level: ${nodeProblem}`);
    }
    return {
      levels: [
        "isolate",
        ...(namespace ? (["namespace"] as const) : []),
        ...(this.processAllowed ? (["process"] as const) : []),
      ],
      namespace,
      namespaceNode: nodeProblem === null,
      processAllowed: this.processAllowed,
      defaults: { ...this.defaults },
      problems,
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
    if (level === "isolate") return null;
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
      return {
        ok: false,
        value: `This ${request.language} tool needs the ${level} sandbox level (chosen by ${chosenBy}), but ${missing}. Kelpie does not fall back to a weaker level.`,
        stdout: [],
        stderr: [],
        level,
      };
    }
    return level === "isolate" ? runIsolate(request) : runSandboxed(request, level);
  }

  /** Kills the pre-started sandboxes; the server calls this when it closes. */
  close(): Promise<void> {
    return closeSandboxPool();
  }
}
