// The simulated disk: the in-memory engine (the reference semantics of the Storage contract), which
// outlives every simulated node, so a crash is "drop the node, keep the disk". Around it, what a
// careful engine (and the checker) needs: a checksum of every block, message and working-memory
// entry as written, so a read can tell corrupt bytes from real ones; and a log of fence
// acquisitions and fenced commits in the order the engine applied them, checked as it grows:
// every fenced commit the engine accepts must carry the newest token of its agent (single
// activation: a stale owner never writes).
import { createHash } from "node:crypto";
import { assert } from "../core/assert.ts";
import { MemoryStorage } from "../storage/memory.ts";
import type {
  BlockRecord,
  CommitOptions,
  MemoryTierStorage,
  MessageRecord,
  Mutation,
  Storage,
  WorkingMemoryEntry,
} from "../storage/types.ts";

export type ChecksumKind = "block" | "message" | "working";

export function checksum(value: unknown): string {
  return createHash("sha256").update(JSON.stringify(value)).digest("hex");
}

export function workingKey(entry: { agent_id: string; key: string }): string {
  return `${entry.agent_id}\u0000${entry.key}`;
}

type FenceEvent =
  | { kind: "acquire"; agentId: string; token: number | null }
  | { kind: "commit"; agentId: string; token: number; applied: boolean | null; deletes: string[] };

export interface DiskOptions {
  /** Planted bug: the engine applies fenced commits without comparing the token. */
  skipFencingCheck: boolean;
  /** Planted bug: a crash loses the last commit even though it was acknowledged. */
  loseLastCommitOnCrash: boolean;
}

/** What the engine keeps private: its tables swap whole on each commit (copy on write). */
interface MemoryStorageTables {
  tables: unknown;
}

export class SimDisk {
  readonly raw = new MemoryStorage();
  readonly storage: Storage;
  private readonly checksums = new Map<string, string>();
  private readonly fenceLog: FenceEvent[] = [];
  private fenceChecked = 0;
  private readonly fenceLatest = new Map<string, number>();
  /** Single-activation violations found so far (each a sentence). */
  readonly violations: string[] = [];
  fencedCommitsCount = 0;
  fencedCommitsRejectedCount = 0;
  private tablesBeforeLastCommit: unknown = null;

  constructor(private readonly options: DiskOptions) {
    const raw = this.raw;
    const tiers = new Proxy(raw.tiers, {
      get: (target, prop, receiver) => {
        if (prop === "putWorking") return (entry: WorkingMemoryEntry) => this.putWorking(entry);
        if (prop === "deleteWorking") return (a: string, k: string) => this.deleteWorking(a, k);
        const value = Reflect.get(target, prop, receiver);
        return typeof value === "function" ? value.bind(target) : value;
      },
    }) as MemoryTierStorage;
    this.storage = new Proxy(raw, {
      get: (target, prop, receiver) => {
        if (prop === "commit") return (m: Mutation[], o?: CommitOptions) => this.commit(m, o);
        if (prop === "acquireFence") return (agentId: string) => this.acquireFence(agentId);
        if (prop === "tiers") return tiers;
        const value = Reflect.get(target, prop, receiver);
        return typeof value === "function" ? value.bind(target) : value;
      },
    }) as Storage;
  }

  checksumOf(kind: ChecksumKind, id: string): string | undefined {
    return this.checksums.get(`${kind}:${id}`);
  }

  private commit(mutations: Mutation[], options?: CommitOptions): Promise<void> {
    const fence = options?.fence;
    const entry: FenceEvent | null =
      fence === undefined
        ? null
        : {
            kind: "commit",
            agentId: fence.agent_id,
            token: fence.token,
            applied: null,
            deletes: mutations.flatMap((m) => (m.op === "delete_agent" ? [m.agent_id] : [])),
          };
    if (entry !== null) this.fenceLog.push(entry);
    if (this.options.loseLastCommitOnCrash)
      this.tablesBeforeLastCommit = (this.raw as unknown as MemoryStorageTables).tables;
    // The engine applies a commit synchronously inside this call, so the checksums written just
    // after it describe exactly what it stored (or nothing, when it threw).
    const engineOptions = this.options.skipFencingCheck ? undefined : options;
    const done = this.raw.commit(mutations, engineOptions);
    return done.then(
      () => {
        this.recordChecksums(mutations);
        if (entry !== null && entry.kind === "commit") entry.applied = true;
        this.advanceFenceCheck();
      },
      (err: unknown) => {
        if (entry !== null && entry.kind === "commit") entry.applied = false;
        this.advanceFenceCheck();
        throw err;
      },
    );
  }

  private recordChecksums(mutations: Mutation[]): void {
    for (const m of mutations) {
      if (m.op === "put_block") this.setChecksum("block", m.block.id, m.block);
      else if (m.op === "delete_block") this.checksums.delete(`block:${m.block_id}`);
      else if (m.op === "put_message") this.setChecksum("message", m.message.id, m.message);
    }
  }

  private setChecksum(
    kind: ChecksumKind,
    id: string,
    value: BlockRecord | MessageRecord | WorkingMemoryEntry,
  ) {
    this.checksums.set(`${kind}:${id}`, checksum(value));
  }

  private acquireFence(agentId: string): Promise<number> {
    const entry: FenceEvent = { kind: "acquire", agentId, token: null };
    this.fenceLog.push(entry);
    return this.raw.acquireFence(agentId).then((token) => {
      if (entry.kind === "acquire") entry.token = token;
      this.advanceFenceCheck();
      return token;
    });
  }

  private async putWorking(entry: WorkingMemoryEntry): Promise<void> {
    await this.raw.tiers.putWorking(entry);
    this.setChecksum("working", workingKey(entry), entry);
  }

  private async deleteWorking(agentId: string, key: string): Promise<boolean> {
    const had = await this.raw.tiers.deleteWorking(agentId, key);
    this.checksums.delete(`working:${workingKey({ agent_id: agentId, key })}`);
    return had;
  }

  /** Replays the fence log in engine order, as far as every entry has resolved. */
  private advanceFenceCheck(): void {
    while (this.fenceChecked < this.fenceLog.length) {
      const e = this.fenceLog[this.fenceChecked]!;
      if (e.kind === "acquire") {
        if (e.token === null) return;
        const before = this.fenceLatest.get(e.agentId) ?? 0;
        if (e.token <= before) {
          this.violations.push(
            `fencing token of agent ${e.agentId} did not increase: ${e.token} after ${before}`,
          );
        }
        this.fenceLatest.set(e.agentId, e.token);
      } else {
        if (e.applied === null) return;
        this.fencedCommitsCount++;
        if (!e.applied) this.fencedCommitsRejectedCount++;
        const latest = this.fenceLatest.get(e.agentId) ?? 0;
        if (e.applied && e.token !== latest) {
          this.violations.push(
            `single activation: a commit for agent ${e.agentId} with stale fencing token ${e.token} was applied (newest token ${latest})`,
          );
        }
        // A deleted agent's fence goes with it; a later activation would start again at 1.
        if (e.applied) for (const id of e.deletes) this.fenceLatest.delete(id);
      }
      this.fenceChecked++;
    }
  }

  /** Fence log entries not yet resolved (a commit still in the engine's hands). */
  fenceBacklog(): number {
    return this.fenceLog.length - this.fenceChecked;
  }

  /** A crash happened: with the planted bug, the last commit was never really made durable. */
  onCrash(): boolean {
    if (!this.options.loseLastCommitOnCrash || this.tablesBeforeLastCommit === null) return false;
    (this.raw as unknown as MemoryStorageTables).tables = this.tablesBeforeLastCommit;
    this.tablesBeforeLastCommit = null;
    return true;
  }

  assertQuiet(): void {
    assert(this.fenceBacklog() === 0, "fence log has unresolved entries after the run");
  }
}
