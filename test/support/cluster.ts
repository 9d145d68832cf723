// Shared pieces of the multi-process cluster tests: the fake model's "remember" script, the nodes'
// environment, the lease table read straight from PostgreSQL, and a commit with a stale token.
import type postgres from "postgres";
import { isKelpieError } from "../../src/core/errors.ts";
import type { PostgresStorage } from "../../src/storage/postgres.ts";
import type { Script } from "./fake-llm/server.ts";

const REMEMBER = /^remember: (.+)$/s;

/**
 * "remember: X" makes the model call core_memory_append(label="human", content=X) asking for a
 * heartbeat, then send_message; anything else is answered with send_message at once. Only a
 * turn's first step ends its prompt with the user's message (its input is committed with that
 * step), so that is when the model appends: a turn resumed after a crash, or sharing the history
 * with other turns in flight, never appends twice, and a retry that ran the turn anew would.
 * `delayMs` spaces out the model's answers so that kills land in the middle of turns too.
 */
export function rememberScript(delayMs: () => number = () => 0): Script {
  return (req) => {
    const delay = { delayMs: delayMs() };
    const last = req.messages.at(-1);
    const item = last?.role === "user" ? REMEMBER.exec(last.text)?.[1] : undefined;
    if (item !== undefined) {
      return {
        ...delay,
        toolCalls: [
          { name: "core_memory_append", args: { label: "human", content: item, request_heartbeat: true } },
        ],
      };
    }
    const answer = last?.role === "user" ? `echo: ${last.text}` : "Noted.";
    return { ...delay, toolCalls: [{ name: "send_message", args: { message: answer } }] };
  };
}

export function clusterNodeEnv(options: {
  databaseUrl: string;
  llmUrl: string;
  nodeId: string;
  leaseTtlMs: number;
}): Record<string, string> {
  return {
    KELPIE_STORAGE: "postgres",
    KELPIE_DATABASE_URL: options.databaseUrl,
    KELPIE_NODE_ID: options.nodeId,
    KELPIE_LEASE_TTL_MS: String(options.leaseTtlMs),
    OPENAI_API_KEY: "sk-test",
    OPENAI_BASE_URL: `${options.llmUrl}/v1`,
    KELPIE_LOG_LEVEL: "error",
  };
}

export interface FenceRow {
  agent_id: string;
  token: number;
  node_id: string | null;
  incarnation: number | null;
  /** The lease is unexpired by the database's clock. */
  live: boolean;
}

/** The lease table as the database sees it now. */
export async function readFences(sql: postgres.Sql): Promise<Map<string, FenceRow>> {
  const rows = await sql`
    SELECT agent_id, token, node_id, incarnation,
      (lease_expires_at IS NOT NULL AND lease_expires_at > now()) AS live
    FROM agent_fences`;
  return new Map(
    rows.map((r) => [
      String(r.agent_id),
      {
        agent_id: String(r.agent_id),
        token: Number(r.token),
        node_id: r.node_id === null ? null : String(r.node_id),
        incarnation: r.incarnation === null ? null : Number(r.incarnation),
        live: r.live === true,
      },
    ]),
  );
}

export type ProbeOutcome = "fenced" | "accepted" | `error: ${string}`;

/**
 * Commits a block write under `token`, as a node still holding that token would. Anything but
 * FENCED is a failure; an accepted write also leaves `STALE-<token>` in the block for reads to see.
 */
export async function commitWithToken(
  storage: PostgresStorage,
  agentId: string,
  blockId: string,
  token: number,
): Promise<ProbeOutcome> {
  const block = await storage.getBlock(blockId);
  if (block === null) return `error: block ${blockId} is gone`;
  try {
    await storage.commit(
      [
        {
          op: "put_block",
          block: { ...block, value: `STALE-${token}`, version: block.version + 1 },
          create: false,
        },
      ],
      { fence: { agent_id: agentId, token } },
    );
    return "accepted";
  } catch (err) {
    if (isKelpieError(err) && err.code === "FENCED") return "fenced";
    return `error: ${(err as Error).message}`;
  }
}
