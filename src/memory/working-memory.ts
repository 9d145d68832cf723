// Working memory: Kelpie's per-agent key-value tier between core blocks (always in the prompt)
// and archival memory (searched). String keys, JSON values, optional expiry by the injected clock,
// and size limits that reject (never truncate) what does not fit.
import {
  WORKING_MEMORY_AGENT_BYTES_MAX,
  WORKING_MEMORY_KEY_CHARS_MAX,
  WORKING_MEMORY_KEYS_PER_AGENT_MAX,
  WORKING_MEMORY_VALUE_BYTES_MAX,
} from "../core/constants.ts";
import type { Env } from "../core/env.ts";
import { invalidField, KelpieError, notFound } from "../core/errors.ts";
import type { Runtime } from "../runtime/runtime.ts";
import type { Fence, Mutation, WorkingMemoryEntry } from "../storage/types.ts";

export interface WorkingPut {
  value: unknown;
  /** Time to live; the entry reads as absent once it has passed. */
  ttl_ms?: number | null | undefined;
}

/** The limits put_working carries to the engine, which checks them inside the writing transaction. */
export const WORKING_MEMORY_LIMITS = {
  keys_max: WORKING_MEMORY_KEYS_PER_AGENT_MAX,
  bytes_max: WORKING_MEMORY_AGENT_BYTES_MAX,
} as const;

export class WorkingMemoryService {
  constructor(
    private readonly env: Env,
    private readonly runtime: Runtime,
  ) {}

  /**
   * Commits an agent's working-memory change: with `fence`, the caller already runs inside the
   * agent's mailbox (a turn); without, it is queued there. Either way the commit is fenced.
   */
  private write<T>(
    agentId: string,
    fence: Fence | undefined,
    change: () => Promise<{ m: Mutation; out: T }>,
  ) {
    const run = async (f: Fence): Promise<T> => {
      const { m, out } = await change();
      await this.env.storage.commit([m], { fence: f });
      return out;
    };
    if (fence !== undefined) return run(fence);
    return this.runtime.invoke(agentId, (ctx) => run(ctx.fence), "working_memory");
  }

  private checkKey(key: string, loc: (string | number)[]): void {
    if (typeof key !== "string" || key.length === 0 || key.length > WORKING_MEMORY_KEY_CHARS_MAX) {
      throw invalidField(loc, `must be a string of 1 to ${WORKING_MEMORY_KEY_CHARS_MAX} characters`);
    }
  }

  private live(entry: WorkingMemoryEntry | null): entry is WorkingMemoryEntry {
    return entry !== null && (entry.expires_at_ms === null || entry.expires_at_ms > this.env.clock.nowMs());
  }

  private async requireAgent(agentId: string): Promise<void> {
    if ((await this.env.storage.getAgent(agentId)) === null) throw notFound("agent", agentId);
  }

  async get(agentId: string, key: string): Promise<WorkingMemoryEntry> {
    this.checkKey(key, ["path", "key"]);
    await this.requireAgent(agentId);
    const entry = await this.env.storage.tiers.getWorking(agentId, key);
    if (!this.live(entry)) throw new KelpieError("NOT_FOUND", `Working memory key '${key}' not found`);
    return entry;
  }

  async list(agentId: string): Promise<WorkingMemoryEntry[]> {
    await this.requireAgent(agentId);
    return (await this.env.storage.tiers.listWorking(agentId)).filter((e) => this.live(e));
  }

  async put(
    agentId: string,
    key: string,
    input: WorkingPut,
    loc: (string | number)[] = ["body"],
    fence?: Fence,
  ): Promise<WorkingMemoryEntry> {
    this.checkKey(key, ["path", "key"]);
    if (input.value === undefined) throw invalidField([...loc, "value"], "field required", "missing");
    const ttl = input.ttl_ms;
    if (ttl != null && (!Number.isInteger(ttl) || ttl <= 0)) {
      throw invalidField([...loc, "ttl_ms"], "must be a positive integer number of milliseconds");
    }
    const text = JSON.stringify(input.value);
    const size = Buffer.byteLength(text, "utf8") + Buffer.byteLength(key, "utf8");
    if (size > WORKING_MEMORY_VALUE_BYTES_MAX) {
      throw invalidField(
        [...loc, "value"],
        `is ${size} bytes; a working-memory entry holds at most ${WORKING_MEMORY_VALUE_BYTES_MAX}`,
      );
    }
    return this.write(agentId, fence, async () => {
      const now = this.env.clock.nowMs();
      const entry: WorkingMemoryEntry = {
        agent_id: agentId,
        key,
        value: input.value,
        size_bytes: size,
        expires_at_ms: ttl == null ? null : now + ttl,
        updated_at_ms: now,
      };
      // The key and byte limits are checked by the engine, in the transaction that writes.
      return { m: { op: "put_working", entry, limits: WORKING_MEMORY_LIMITS }, out: entry };
    });
  }

  /** Whether a live entry was there. */
  async delete(agentId: string, key: string, fence?: Fence): Promise<boolean> {
    this.checkKey(key, ["path", "key"]);
    return this.write(agentId, fence, async () => {
      // Read inside the mailbox: no other write to this agent's working memory comes between.
      const entry = await this.env.storage.tiers.getWorking(agentId, key);
      return { m: { op: "delete_working", agent_id: agentId, key }, out: this.live(entry) };
    });
  }

  /** Bytes per agent, for the memory gauge. */
  async totalBytes(): Promise<number> {
    return this.env.storage.tiers.workingBytes();
  }
}
