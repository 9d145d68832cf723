// The simulated sandbox: runs the one custom tool the simulation attaches to every agent. It takes
// a seeded time on the node's clock and, inside a fault window, crashes or hangs until its time
// limit, as a real sandboxed process can. Its result goes back to the model like any tool's.
import type { ToolCallContext, ToolOutput, ToolRunner } from "../agent/tool-calls.ts";
import type { Rng } from "../core/rng.ts";
import type { ToolRecord } from "../storage/types.ts";
import type { ActiveFaults, FaultCounters } from "./faults.ts";
import type { NodeClock } from "./scheduler.ts";
import { SANDBOX_TOOL_NAME } from "./sim-llm.ts";

export const SANDBOX_RUN_MS_MAX = 200;
export const SANDBOX_TIME_LIMIT_MS = 1_000;
export const SANDBOX_FAULT_PROBABILITY = 0.4;

export interface SimSandboxDeps {
  clock: NodeClock;
  rng: Rng;
  faults: ActiveFaults;
  counters: FaultCounters;
  nowMs: () => number;
  trace: (line: string) => void;
}

export class SimSandbox implements ToolRunner {
  constructor(private readonly deps: SimSandboxDeps) {}

  async run(name: string, args: Record<string, unknown>, ctx: ToolCallContext): Promise<ToolOutput> {
    const { deps } = this;
    const faulty =
      deps.faults.isOpen("sandbox_fail", deps.nowMs()) && deps.rng.next() < SANDBOX_FAULT_PROBABILITY;
    if (faulty) {
      deps.counters.count("sandbox_fail");
      const hang = deps.rng.next() < 0.5;
      deps.trace(`fault sandbox_fail ${name} ${hang ? "hung" : "crashed"}`);
      await deps.clock.sleepMs(
        hang ? SANDBOX_TIME_LIMIT_MS : 1 + deps.rng.int(SANDBOX_RUN_MS_MAX),
        ctx.signal,
      );
      return {
        ok: false,
        value: hang
          ? `${name} was stopped after its time limit of ${SANDBOX_TIME_LIMIT_MS} ms`
          : `${name} crashed: the sandbox process exited with signal SIGSEGV`,
        stderr: ["simulated sandbox failure"],
      };
    }
    await deps.clock.sleepMs(1 + deps.rng.int(SANDBOX_RUN_MS_MAX), ctx.signal);
    return { ok: true, value: `echo ${String(args.input)}`, stdout: [`echo ${String(args.input)}`] };
  }
}

/** The custom tool's row, made once on the simulated disk before any node boots. */
export function sandboxToolRecord(nowMs: number): ToolRecord {
  return {
    id: "tool-00000000-0000-4000-8000-00000000d57d",
    name: SANDBOX_TOOL_NAME,
    tool_type: "custom",
    description: "Echoes its input from inside the (simulated) sandbox.",
    source_type: "javascript",
    source_code: 'export function dst_sandbox_echo(input) { return "echo " + input; }',
    json_schema: {
      name: SANDBOX_TOOL_NAME,
      description: "Echoes its input from inside the sandbox.",
      parameters: {
        type: "object",
        properties: { input: { type: "string", description: "what to echo" } },
        required: ["input"],
      },
    },
    args_json_schema: null,
    tags: ["dst"],
    return_char_limit: 10_000,
    pip_requirements: null,
    npm_requirements: null,
    default_requires_approval: null,
    enable_parallel_execution: false,
    metadata: {},
    created_at_ms: nowMs,
    updated_at_ms: nowMs,
  };
}
