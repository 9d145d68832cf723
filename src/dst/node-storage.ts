// One simulated node's view of the disk: the Storage its Kelpie instance is given. Faults are
// injected here, on schedule: writes and reads fail, calls stall, reads come back corrupt (and
// the checksums kept at write time catch it: the read fails instead of serving bad bytes), and the
// node crashes just before a write, just after one, or in the middle of a multi-row transaction
// (applied or not, as the seed decides). A dead node's calls never complete, as a killed
// process's would not. The node's membership and lease calls (the ClusterStore) go through the
// same faults. While the node is cut off from the database, each call either fails after a
// connect timeout or hangs until the partition heals and then reaches the database late (a
// retransmitted request): a late commit meets a lease that lapsed meanwhile.
import { KelpieError } from "../core/errors.ts";
import type { Rng } from "../core/rng.ts";
import type {
  BlockRecord,
  ClusterStore,
  CommitOptions,
  MemoryTierStorage,
  MessageRecord,
  Mutation,
  Storage,
  WorkingMemoryEntry,
} from "../storage/types.ts";
import { type ChecksumKind, checksum, type Origin, originOf, type SimDisk, workingKey } from "./disk.ts";
import type { ActiveFaults, FaultCounters, FaultType } from "./faults.ts";
import type { NodeClock } from "./scheduler.ts";

export const STORAGE_WRITE_FAIL_PROBABILITY = 0.3;
export const STORAGE_READ_FAIL_PROBABILITY = 0.2;
export const STORAGE_CORRUPTION_PROBABILITY = 0.3;
export const STORAGE_LATENCY_PROBABILITY = 0.5;
export const STORAGE_LATENCY_MS_MAX = 400;
/** Planted bug ack_before_commit: how long after its acknowledgement a commit really happens. */
export const WRITE_BEHIND_MS = 300;
/** How late the planted outbox bug writes a step's entries (the model was told "sent" long before). */
export const OUTBOX_WRITE_BEHIND_MS = 3_000;
/** Cut off from the database: the share of calls that fail (the rest hang until it heals). */
export const DB_PARTITION_FAIL_PROBABILITY = 0.5;
/** How long a call to an unreachable database takes to fail (a connect timeout). */
export const DB_CONNECT_TIMEOUT_MS_MAX = 500;

const CORE_WRITES = new Set(["commit", "acquireFence"]);
const CLUSTER_WRITES = new Set(["registerNode", "heartbeat", "acquireLease", "releaseLease", "leave"]);
const LIFECYCLE = new Set(["migrate", "close"]);

export type CrashKind = "crash_before_write" | "crash_after_write" | "crash_during_txn";

const UNLIMITED = { keys_max: Number.MAX_SAFE_INTEGER, bytes_max: Number.MAX_SAFE_INTEGER };

export interface NodeStorageDeps {
  disk: SimDisk;
  clock: NodeClock;
  rng: Rng;
  faults: ActiveFaults;
  counters: FaultCounters;
  nowMs: () => number;
  trace: (line: string) => void;
  /** Whether faults apply yet (a node boots without them, and the final checks read without them). */
  faultsEnabled: () => boolean;
  isDead: () => boolean;
  /** The crash armed for this node's next write, if any (taken by the call that injects it). */
  takeArmedCrash: (isMultiRowCommit: boolean) => CrashKind | null;
  /** Kills this node now. */
  crash: (kind: CrashKind) => void;
  /** While the node is cut off from the database: resolves when it heals; else null. */
  dbPartition: () => Promise<void> | null;
  /** Planted bugs that live in this layer. */
  ackBeforeCommit: boolean;
  outboxWriteBehind: boolean;
  /** Planted (limit_checked_outside_txn): working-memory puts commit without their in-transaction limit check. */
  uncheckedWorkingLimits: boolean;
  skipChecksumVerify: boolean;
}

const never = <T>(): Promise<T> => new Promise<T>(() => {});

function flipChar(s: string, at: number): string {
  const i = Math.min(Math.max(0, at), s.length - 1);
  return s.slice(0, i) + String.fromCharCode(s.charCodeAt(i) ^ 1) + s.slice(i + 1);
}

/** Which records a read returns, and of what kind, for checksum verification. */
function recordsOf(method: string, result: unknown): { kind: ChecksumKind; records: object[] } | null {
  const list = (r: unknown): object[] => (Array.isArray(r) ? r : r === null || r === undefined ? [] : [r]);
  switch (method) {
    case "getBlock":
    case "getBlocks":
    case "listBlocks":
      return { kind: "block", records: list(result) };
    case "getMessage":
    case "getMessages":
    case "listMessages":
    case "listRunMessages":
      return { kind: "message", records: list(result) };
    case "getWorking":
    case "listWorking":
      return { kind: "working", records: list(result) };
    default:
      return null;
  }
}

function idOf(kind: ChecksumKind, record: object): string {
  if (kind === "working") return workingKey(record as WorkingMemoryEntry);
  return (record as { id: string }).id;
}

export class NodeStorage {
  readonly storage: Storage;
  /** This node's incarnation once it registered (its commits carry it to the checker). */
  origin: Origin = null;

  constructor(private readonly deps: NodeStorageDeps) {
    const disk = deps.disk.storage;
    const diskCluster = deps.disk.cluster;
    const cluster = new Proxy(diskCluster, {
      get: (target, prop) => {
        const value = Reflect.get(target, prop);
        if (typeof value !== "function") return value;
        const name = String(prop);
        if (name === "registerNode") {
          return (nodeId: string, url: string) =>
            this.call(name, true, false, async () => {
              const identity = await target.registerNode(nodeId, url);
              this.origin = originOf(identity);
              return identity;
            });
        }
        return (...args: unknown[]) =>
          this.call(name, CLUSTER_WRITES.has(name), false, () => value.apply(target, args));
      },
    }) as ClusterStore;
    const tiers = new Proxy(disk.tiers, {
      get: (target, prop) => {
        const value = Reflect.get(target, prop);
        if (typeof value !== "function") return value;
        const name = String(prop);
        return (...args: unknown[]) =>
          // Reads only: archival and working memory are written through commit.
          this.call(name, false, false, () => value.apply(target, args));
      },
    }) as MemoryTierStorage;
    this.storage = new Proxy(disk, {
      get: (target, prop) => {
        if (prop === "tiers") return tiers;
        if (prop === "cluster") return cluster;
        const value = Reflect.get(target, prop);
        if (typeof value !== "function") return value;
        const name = String(prop);
        if (LIFECYCLE.has(name)) return async () => {};
        if (name === "commit") {
          return (mutations: Mutation[], options?: CommitOptions) =>
            this.call(name, true, mutations.length > 1, () => this.commitBelow(mutations, options));
        }
        return (...args: unknown[]) =>
          this.call(name, CORE_WRITES.has(name), false, () => value.apply(target, args));
      },
    }) as Storage;
  }

  private commitBelow(given: Mutation[], options?: CommitOptions): Promise<void> {
    const disk = this.deps.disk;
    // Planted bug: the engine is told no limits, so only the request layer's earlier read checks them.
    const mutations = this.deps.uncheckedWorkingLimits
      ? given.map((m): Mutation => (m.op === "put_working" ? { ...m, limits: UNLIMITED } : m))
      : given;
    const origin = this.origin;
    if (this.deps.outboxWriteBehind && mutations.some((m) => m.op === "put_outbox")) {
      // Planted bug: the step commits without its outbox entries, which are written a moment
      // later (and forgotten if that write fails or the node dies first).
      const entries = mutations.filter((m) => m.op === "put_outbox");
      this.deps.clock.setTimer(OUTBOX_WRITE_BEHIND_MS, () => {
        disk.commitAs(origin, entries).catch(() => {});
      });
      return disk.commitAs(
        origin,
        mutations.filter((m) => m.op !== "put_outbox"),
        options,
      );
    }
    if (!this.deps.ackBeforeCommit || options?.fence === undefined)
      return disk.commitAs(origin, mutations, options);
    // Planted bug: an agent's commit is acknowledged now and written later (and forgotten if that
    // write fails or the node dies first).
    this.deps.clock.setTimer(WRITE_BEHIND_MS, () => {
      disk.commitAs(origin, mutations, options).catch(() => {});
    });
    return Promise.resolve();
  }

  private chance(p: number): boolean {
    return this.deps.rng.next() < p;
  }

  private inject(type: FaultType, detail: string): void {
    this.deps.counters.count(type);
    this.deps.trace(`fault ${type} ${detail}`);
  }

  private open(type: FaultType): boolean {
    return this.deps.faults.isOpen(type, this.deps.nowMs());
  }

  private async call<T>(
    method: string,
    isWrite: boolean,
    isMultiRowCommit: boolean,
    below: () => Promise<T>,
  ): Promise<T> {
    const { deps } = this;
    if (deps.isDead()) return never<T>();
    if (deps.dbPartition() !== null) return this.cutOff(method, below);
    if (!deps.faultsEnabled()) return this.verified(method, await below(), false);
    if (this.open("storage_latency") && this.chance(STORAGE_LATENCY_PROBABILITY)) {
      const ms = 1 + deps.rng.int(STORAGE_LATENCY_MS_MAX);
      this.inject("storage_latency", `${method} +${ms}ms`);
      await deps.clock.sleepMs(ms);
      if (deps.isDead()) return never<T>();
      if (deps.dbPartition() !== null) return this.cutOff(method, below);
    }
    if (isWrite) {
      const crash =
        method === "acquireFence" || CLUSTER_WRITES.has(method)
          ? null
          : deps.takeArmedCrash(isMultiRowCommit);
      if (crash !== null) return this.crashAround(crash, method, below);
      if (this.open("storage_write_fail") && this.chance(STORAGE_WRITE_FAIL_PROBABILITY)) {
        this.inject("storage_write_fail", method);
        throw new KelpieError("STORAGE_UNAVAILABLE", `simulated write failure in ${method}`);
      }
    } else if (this.open("storage_read_fail") && this.chance(STORAGE_READ_FAIL_PROBABILITY)) {
      this.inject("storage_read_fail", method);
      throw new KelpieError("STORAGE_UNAVAILABLE", `simulated read failure in ${method}`);
    }
    const result = await below();
    if (deps.isDead()) return never<T>();
    return this.verified(method, result, this.open("storage_corruption"));
  }

  /** A call while the database is unreachable: fails after a connect timeout, or reaches it late. */
  private async cutOff<T>(method: string, below: () => Promise<T>): Promise<T> {
    const { deps } = this;
    if (this.chance(DB_PARTITION_FAIL_PROBABILITY)) {
      await deps.clock.sleepMs(1 + deps.rng.int(DB_CONNECT_TIMEOUT_MS_MAX));
      if (deps.isDead()) return never<T>();
      deps.trace(`db unreachable: ${method} fails`);
      throw new KelpieError("STORAGE_UNAVAILABLE", `simulated: the database is unreachable (${method})`);
    }
    deps.trace(`db unreachable: ${method} hangs`);
    for (let healed = deps.dbPartition(); healed !== null; healed = deps.dbPartition()) await healed;
    if (deps.isDead()) return never<T>();
    deps.trace(`db reachable: ${method} arrives late`);
    const result = await below();
    if (deps.isDead()) return never<T>();
    return this.verified(method, result, false);
  }

  private async crashAround<T>(kind: CrashKind, method: string, below: () => Promise<T>): Promise<T> {
    const { deps } = this;
    const applied = kind === "crash_after_write" || (kind === "crash_during_txn" && deps.rng.next() < 0.5);
    if (applied) await below().catch(() => {});
    this.inject(kind, `${method} ${applied ? "applied" : "not applied"}`);
    deps.crash(kind);
    return never<T>();
  }

  /**
   * Checks every checksummed record a read returns against the checksum kept when it was written.
   * With a corruption window open, one record may come back with a flipped byte first.
   */
  private verified<T>(method: string, result: T, mayCorrupt: boolean): T {
    const found = recordsOf(method, result);
    if (found === null || found.records.length === 0) return result;
    const { kind } = found;
    let records = found.records;
    if (mayCorrupt && this.chance(STORAGE_CORRUPTION_PROBABILITY)) {
      const at = this.deps.rng.int(records.length);
      const corrupt = this.corrupt(kind, records[at]!);
      if (corrupt !== null) {
        this.inject("storage_corruption", `${kind} ${idOf(kind, corrupt)} on ${method}`);
        records = records.map((r, i) => (i === at ? corrupt : r));
        result = (Array.isArray(result) ? records : records[0]) as T;
      }
    }
    if (this.deps.skipChecksumVerify) return result;
    for (const record of records) {
      const expected = this.deps.disk.checksumOf(kind, idOf(kind, record));
      if (expected !== undefined && checksum(record) !== expected) {
        this.deps.trace(`checksum mismatch ${kind} ${idOf(kind, record)} on ${method}: read fails`);
        throw new KelpieError(
          "STORAGE_UNAVAILABLE",
          `checksum mismatch reading ${kind} ${idOf(kind, record)}: the stored copy is corrupt`,
        );
      }
    }
    return result;
  }

  /** A copy with one character of its payload flipped, or null when it has none to flip. */
  private corrupt(kind: ChecksumKind, record: object): object | null {
    const rng = this.deps.rng;
    if (kind === "block") {
      const block = record as BlockRecord;
      if (block.value.length === 0) return null;
      return { ...block, value: flipChar(block.value, rng.int(block.value.length)) };
    }
    if (kind === "working") {
      const entry = record as WorkingMemoryEntry;
      if (typeof entry.value !== "string" || entry.value.length === 0) return null;
      return { ...entry, value: flipChar(entry.value, rng.int(entry.value.length)) };
    }
    const message = record as MessageRecord;
    const at = message.content.findIndex((p) => p.type === "text" && typeof p.text === "string");
    if (at < 0) return null;
    const part = message.content[at] as { type: "text"; text: string };
    if (part.text.length === 0) return null;
    const content = message.content.map((p, i) =>
      i === at ? { type: "text", text: flipChar(part.text, rng.int(part.text.length)) } : p,
    );
    return { ...message, content };
  }
}
