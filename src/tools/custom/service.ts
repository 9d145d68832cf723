// Custom tools (Letta's POST/PUT/PATCH/DELETE /v1/tools): source code whose JSON schema is derived
// from the function signature and docstring (Python) or JSDoc (JS/TS), run in a sandbox.
import { envVarsOf } from "../../agent/env-vars.ts";
import type { ToolCallContext, ToolOutput, ToolRunner } from "../../agent/tool-calls.ts";
import type { Env } from "../../core/env.ts";
import { invalidField, KelpieError, notFound } from "../../core/errors.ts";
import { checkMetadata, checkName, checkTags } from "../../core/field-limits.ts";
import { newId } from "../../core/ids.ts";
import type { ToolRecord } from "../../storage/types.ts";
import { builtinTool, FUNCTION_RETURN_CHARS_MAX } from "../builtins.ts";
import { levelProblem, type SandboxLevel, type SandboxResult } from "../sandbox/limits.ts";
import type { Sandbox } from "../sandbox/sandbox.ts";
import { jsSchema } from "./js-schema.ts";
import { type DerivedSchema, pythonSchema } from "./python-schema.ts";

export const SOURCE_TYPES = ["python", "javascript", "typescript"] as const;
export type SourceType = (typeof SOURCE_TYPES)[number];
export const TOOL_SOURCE_CHARS_MAX = 1_000_000;

export interface ToolInput {
  source_code?: unknown;
  source_type?: unknown;
  json_schema?: unknown;
  args_json_schema?: unknown;
  description?: unknown;
  tags?: unknown;
  return_char_limit?: unknown;
  pip_requirements?: unknown;
  npm_requirements?: unknown;
  default_requires_approval?: unknown;
  metadata_?: unknown;
}

function sourceTypeOf(value: unknown): SourceType {
  const type = value ?? "python";
  if (!SOURCE_TYPES.includes(type as SourceType)) {
    throw invalidField(["body", "source_type"], `must be one of ${SOURCE_TYPES.join(", ")}`, "enum");
  }
  return type as SourceType;
}

/** The schema a source declares: JS/TS read in one linear scan here, Python by python3 off the event
 * loop. Called when a tool is stored (the schema is kept with it) and for POST /v1/tools/run. */
export async function deriveSchema(source: string, type: SourceType): Promise<DerivedSchema> {
  return type === "python" ? pythonSchema(source) : jsSchema(source);
}

/** A request's source code: present, not blank, at most TOOL_SOURCE_CHARS_MAX (checked before any
 * parsing, on every path a source arrives by: create, upsert, update, run, and the .af import). */
export function sourceOf(value: unknown, loc: (string | number)[] = ["body", "source_code"]): string {
  if (typeof value !== "string" || value.trim() === "") throw invalidField(loc, "field required", "missing");
  if (value.length > TOOL_SOURCE_CHARS_MAX)
    throw invalidField(loc, `must be at most ${TOOL_SOURCE_CHARS_MAX} characters (it has ${value.length})`);
  return value;
}

/** The sandbox level a tool asks for in its metadata (`{"sandbox": "namespace"}`), undefined when none;
 * a level that is unknown or wrong for the language is a 422 naming the field at `loc`. */
function requestedLevel(
  metadata: Record<string, unknown>,
  type: SourceType,
  loc: (string | number)[],
): SandboxLevel | undefined {
  const requested = metadata.sandbox;
  if (requested === undefined || requested === null) return undefined;
  const problem = levelProblem(requested, type);
  if (problem !== null) throw invalidField(loc, problem);
  return requested as SandboxLevel;
}

function metadataOf(value: unknown, loc: (string | number)[]): Record<string, unknown> {
  if (value === undefined || value === null) return {};
  if (typeof value !== "object" || Array.isArray(value)) throw invalidField(loc, "must be an object");
  return value as Record<string, unknown>;
}

const METADATA_SANDBOX_LOC = ["body", "metadata_", "sandbox"];

/** An agent's stored tool variables (the list form, or the request's object of older rows). */
function envList(value: unknown): Record<string, string> {
  return Object.fromEntries(envVarsOf(value));
}

export class CustomTools implements ToolRunner {
  constructor(
    private readonly env: Env,
    readonly sandbox: Sandbox,
  ) {}

  private async build(input: ToolInput, existing: ToolRecord | undefined): Promise<ToolRecord> {
    const source = sourceOf(input.source_code ?? existing?.source_code);
    const type = sourceTypeOf(input.source_type ?? existing?.source_type);
    const derived = await deriveSchema(source, type);
    const given = input.json_schema as DerivedSchema | undefined | null;
    if (
      given !== undefined &&
      given !== null &&
      (typeof given !== "object" || typeof given.name !== "string")
    ) {
      throw invalidField(["body", "json_schema"], "must be an object with a name");
    }
    const schema = given ?? derived;
    if (builtinTool(schema.name) !== undefined) {
      throw invalidField(["body", "source_code"], `'${schema.name}' is the name of a built-in Letta tool`);
    }
    const limit = input.return_char_limit ?? existing?.return_char_limit ?? FUNCTION_RETURN_CHARS_MAX;
    if (typeof limit !== "number" || !Number.isInteger(limit) || limit < 1) {
      throw invalidField(["body", "return_char_limit"], "must be a positive integer");
    }
    const metadata =
      input.metadata_ === undefined || input.metadata_ === null
        ? (existing?.metadata ?? {})
        : metadataOf(input.metadata_, ["body", "metadata_"]);
    requestedLevel(metadata, type, METADATA_SANDBOX_LOC);
    checkMetadata(metadata, ["body", "metadata_"]);
    checkName(schema.name, given ? ["body", "json_schema", "name"] : ["body", "source_code"]);
    if (Array.isArray(input.tags)) checkTags(input.tags, ["body", "tags"]);
    const nowMs = this.env.clock.nowMs();
    return {
      id: existing?.id ?? newId("tool", this.env.rng),
      name: schema.name,
      tool_type: "custom",
      description: typeof input.description === "string" ? input.description : (schema.description ?? null),
      source_type: type,
      source_code: source,
      json_schema: schema as unknown as Record<string, unknown>,
      args_json_schema:
        (input.args_json_schema as Record<string, unknown> | null | undefined) ??
        existing?.args_json_schema ??
        null,
      tags: Array.isArray(input.tags) ? input.tags.map(String) : (existing?.tags ?? []),
      return_char_limit: limit,
      pip_requirements: Array.isArray(input.pip_requirements)
        ? input.pip_requirements
        : (existing?.pip_requirements ?? null),
      npm_requirements: Array.isArray(input.npm_requirements)
        ? input.npm_requirements
        : (existing?.npm_requirements ?? null),
      default_requires_approval:
        typeof input.default_requires_approval === "boolean"
          ? input.default_requires_approval
          : (existing?.default_requires_approval ?? null),
      enable_parallel_execution: false,
      metadata,
      created_at_ms: existing?.created_at_ms ?? nowMs,
      updated_at_ms: nowMs,
      source_function_name: derived.name,
    };
  }

  async create(input: ToolInput): Promise<ToolRecord> {
    const tool = await this.build(input, undefined);
    await this.env.storage.commit([{ op: "put_tool", tool, create: true }]);
    this.prepare(tool);
    return tool;
  }

  /** Warms the sandbox level a stored tool will run at (its first run comes soon after). */
  private prepare(tool: ToolRecord): void {
    const language = sourceTypeOf(tool.source_type);
    this.sandbox.prepare(language, requestedLevel(tool.metadata, language, METADATA_SANDBOX_LOC));
  }

  /** PUT /v1/tools/: create, or replace the tool with the same name. */
  async upsert(input: ToolInput): Promise<ToolRecord> {
    const draft = await this.build(input, undefined);
    const existing = await this.env.storage.getToolByName(draft.name);
    if (existing === null || existing.tool_type === "external_mcp") return this.create(input);
    if (existing.tool_type !== "custom")
      throw new KelpieError("CONFLICT", `'${draft.name}' is a built-in tool`);
    const tool = await this.build(input, existing);
    await this.env.storage.commit([{ op: "put_tool", tool, create: false }]);
    this.prepare(tool);
    return tool;
  }

  async update(toolId: string, input: ToolInput): Promise<ToolRecord> {
    const existing = await this.env.storage.getTool(toolId);
    if (existing === null) throw notFound("tool", toolId);
    if (existing.tool_type !== "custom")
      throw new KelpieError("BAD_REQUEST", `tool ${toolId} is ${existing.tool_type}, not a custom tool`);
    const tool = await this.build(input, existing);
    await this.env.storage.commit([{ op: "put_tool", tool, create: false }]);
    this.prepare(tool);
    return tool;
  }

  async delete(toolId: string): Promise<void> {
    await this.env.storage.commit([{ op: "delete_tool", tool_id: toolId }]);
  }

  /** Runs source with args without saving it (POST /v1/tools/run); `metadata_.sandbox` picks the level. */
  async runSource(input: ToolInput & { args?: unknown; env_vars?: unknown }): Promise<SandboxResult> {
    const source = sourceOf(input.source_code);
    const type = sourceTypeOf(input.source_type);
    const schema = await deriveSchema(source, type);
    const args = (input.args ?? {}) as Record<string, unknown>;
    if (typeof args !== "object" || Array.isArray(args))
      throw invalidField(["body", "args"], "must be an object");
    const env =
      input.env_vars && typeof input.env_vars === "object" ? (input.env_vars as Record<string, string>) : {};
    const metadata = metadataOf(input.metadata_, ["body", "metadata_"]);
    return this.sandbox.run({
      language: type,
      source,
      functionName: schema.name,
      args,
      parameterNames: Object.keys(schema.parameters.properties),
      env,
      level: requestedLevel(metadata, type, METADATA_SANDBOX_LOC),
    });
  }

  /** Runs a stored tool with the agent's tool environment variables. */
  async runTool(
    tool: ToolRecord,
    args: Record<string, unknown>,
    agentId: string | undefined,
  ): Promise<SandboxResult> {
    const schema = (tool.json_schema ?? {}) as Partial<DerivedSchema>;
    const language = sourceTypeOf(tool.source_type);
    // Derived once when stored; only a row from before that is read again here.
    let functionName = tool.source_function_name;
    const stored = schema.parameters?.properties;
    let parameterNames = stored === undefined ? undefined : Object.keys(stored);
    if (functionName === undefined || parameterNames === undefined) {
      const derived = await deriveSchema(tool.source_code ?? "", language);
      functionName ??= derived.name;
      parameterNames ??= Object.keys(derived.parameters.properties);
    }
    // Validated when stored; a row from before that check still gets a clear error, not a default.
    const level = requestedLevel(tool.metadata, language, ["tool", "metadata_", "sandbox"]);
    let env: Record<string, string> = {};
    if (agentId !== undefined) {
      const agent = await this.env.storage.getAgent(agentId);
      env = { ...envList(agent?.extra.tool_exec_environment_variables), ...envList(agent?.extra.secrets) };
    }
    return this.sandbox.run({
      language,
      source: tool.source_code ?? "",
      functionName,
      args,
      parameterNames,
      env,
      level,
    });
  }

  /** The agent loop's runner for tool_type custom; the sandbox level is named in the result. */
  async run(_name: string, args: Record<string, unknown>, ctx: ToolCallContext): Promise<ToolOutput> {
    if (ctx.tool === undefined) return { ok: false, value: "unknown tool" };
    const result = await this.runTool(ctx.tool, args, ctx.agentId);
    return {
      ok: result.ok,
      value: result.value,
      stdout: [`[sandbox: ${result.level}]`, ...result.stdout],
      stderr: result.stderr,
    };
  }
}
