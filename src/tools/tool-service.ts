// Tools as a resource. Letta's built-in tools are rows like any other, with ids derived from
// their names, written (or refreshed) at start so every node agrees on them.
import type { Env } from "../core/env.ts";
import { isKelpieError, notFound } from "../core/errors.ts";
import { canonicalJson } from "../core/json.ts";
import type { Mutation, ToolListQuery, ToolRecord } from "../storage/types.ts";
import { BUILTIN_TOOLS, builtinToolId } from "./builtins.ts";

/** Another node inserting the same built-in rows conflicts at most once per node in practice. */
const BUILTINS_WRITE_ATTEMPTS_MAX = 3;

export class ToolService {
  constructor(private readonly env: Env) {}

  /**
   * Writes any built-in tool that is missing or differs from this version's definition. Nodes of a
   * cluster starting together race to insert the same rows: the losers read them back and retry.
   */
  async ensureBuiltins(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.writeBuiltins();
      } catch (err) {
        if (!isKelpieError(err) || err.code !== "CONFLICT" || attempt >= BUILTINS_WRITE_ATTEMPTS_MAX)
          throw err;
      }
    }
  }

  private async writeBuiltins(): Promise<void> {
    const { storage, clock } = this.env;
    const nowMs = clock.nowMs();
    const mutations: Mutation[] = [];
    for (const def of BUILTIN_TOOLS) {
      const id = builtinToolId(def.name);
      const existing = await storage.getTool(id);
      const tool: ToolRecord = {
        id,
        name: def.name,
        tool_type: def.tool_type,
        description: def.description,
        source_type: "python",
        source_code: def.source_code,
        json_schema: def.json_schema as unknown as Record<string, unknown>,
        args_json_schema: null,
        tags: [def.tool_type],
        return_char_limit: def.return_char_limit,
        pip_requirements: null,
        npm_requirements: null,
        default_requires_approval: null,
        enable_parallel_execution: false,
        metadata: {},
        created_at_ms: existing?.created_at_ms ?? nowMs,
        updated_at_ms: existing?.updated_at_ms ?? nowMs,
      };
      if (existing !== null && canonicalJson(existing) === canonicalJson(tool)) continue;
      if (existing !== null) tool.updated_at_ms = nowMs;
      mutations.push({ op: "put_tool", tool, create: existing === null });
    }
    if (mutations.length > 0) await storage.commit(mutations);
  }

  async get(toolId: string): Promise<ToolRecord> {
    const tool = await this.env.storage.getTool(toolId);
    if (tool === null) throw notFound("tool", toolId);
    return tool;
  }

  list(query: ToolListQuery): Promise<ToolRecord[]> {
    return this.env.storage.listTools(query);
  }

  count(): Promise<number> {
    return this.env.storage.countTools();
  }
}
