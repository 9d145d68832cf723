// Linearizability checker for per-agent operation histories.
//
// The search is Wing & Gong's, with Lowe's memoisation (as in Porcupine, reimplemented here):
// walk the call/return events in time order, repeatedly pick an operation that may take effect
// next (one called before the earliest outstanding return), apply it to a sequential model,
// and backtrack when the earliest outstanding operation cannot be applied. A cache of
// (set of linearized ops, model state) pairs prunes branches already explored. Histories may
// be split into independent partitions (e.g. one per key of a map) because linearizability is
// local (Herlihy & Wing): a history is linearizable iff each per-object sub-history is.
//
// Pure and deterministic: no clocks, no randomness; the same input gives the same answer, and
// the search is bounded by a budget so it always terminates.
//
// Time convention: op `a` must take effect before op `b` only if `a.ret < b.call` (strictly).
// An op that returns at t and an op called at t are concurrent (call <= ret), so at equal
// times call events sort before return events. With logical clocks a shared tick says nothing
// about order, and treating it as concurrency can only hide a violation, never invent one.

/** Default search budget: model steps tried across all partitions before answering "unknown". */
export const LINEARIZABILITY_SEARCH_STATES_MAX = 1_000_000;

/** Ops listed in a failure reason as "could come next"; the rest are counted, not hidden. */
const FAILURE_CANDIDATES_DESCRIBED_MAX = 8;

/** Bits per bitset word: 16, so a word maps to one UTF-16 code unit of the cache key string. */
const BITSET_WORD_BITS = 16;

/** Words per String.fromCharCode call, far below engines' limit on argument count. */
const BITSET_KEY_CHUNK_WORDS = 4_096;

export interface Operation<I, O> {
  id: number;
  /** Client (process) that issued the op; a client's completed ops must not overlap. */
  client: number;
  /** Logical time of invocation. */
  call: number;
  /** Logical time of the response; null = never returned (it may or may not have taken effect). */
  ret: number | null;
  input: I;
  /**
   * Observed output. Required (not undefined; use null for "no value") when the op returned;
   * ignored for a pending op, whose output nobody observed.
   */
  output?: O;
}

export interface StepResult<S> {
  ok: boolean;
  state: S;
}

export interface Model<S, I, O> {
  init(): S;
  /**
   * Applies `input` to `state` and says whether `output` is what a sequential object would have
   * returned. `output` is undefined for a pending op: accept any output and return the state
   * after the op. Must be pure: the search keeps old states and revisits them.
   */
  step(state: S, input: I, output: O | undefined): StepResult<S>;
  /** Canonical key of a state, for memoisation. Without it the cache is off (slower, still exact). */
  key?(state: S): string;
  describe?(input: I, output: O | undefined): string;
}

export interface CheckOptions<I, O> {
  /** Splits the history into independently checked sub-histories (only if the model allows it). */
  partition?(op: Operation<I, O>): string;
  /** Model steps to try, across all partitions, before giving up with "unknown". */
  budget?: number;
}

export type CheckResult =
  | { ok: true; order: number[] }
  | { ok: false; reason: string; longestPrefix: number[] }
  | { ok: "unknown"; reason: string };

/** The history (or options) handed to the checker are malformed; the checker refuses to guess. */
export class MalformedHistoryError extends Error {
  override name = "MalformedHistoryError";
}

export function checkLinearizable<S, I, O>(
  history: readonly Operation<I, O>[],
  model: Model<S, I, O>,
  opts: CheckOptions<I, O> = {},
): CheckResult {
  validateHistory(history);
  const budget = opts.budget ?? LINEARIZABILITY_SEARCH_STATES_MAX;
  if (!Number.isSafeInteger(budget) || budget < 1) {
    throw new MalformedHistoryError(`linearizability: budget must be a positive integer, got ${budget}`);
  }
  const partitions = partitionHistory(history, opts.partition);

  let statesExplored = 0;
  const orders: { ops: readonly Operation<I, O>[]; order: number[] }[] = [];
  for (const [partitionIndex, partition] of partitions.entries()) {
    const label = opts.partition === undefined ? "" : ` in partition ${JSON.stringify(partition.key)}`;
    const outcome = searchPartition(partition.ops, model, budget - statesExplored, label);
    statesExplored += outcome.statesExplored;
    if (outcome.kind === "fail") {
      return { ok: false, reason: outcome.reason, longestPrefix: outcome.longestPrefix };
    }
    if (outcome.kind === "budget") {
      return {
        ok: "unknown",
        reason:
          `search budget of ${budget} model steps exhausted${label} ` +
          `(${partition.ops.length} ops); ${partitionIndex} of ${partitions.length} partitions were ` +
          "checked and linearizable",
      };
    }
    orders.push({ ops: partition.ops, order: outcome.order });
  }
  return { ok: true, order: mergeOrders(orders) };
}

function validateHistory<I, O>(history: readonly Operation<I, O>[]): void {
  if (!Array.isArray(history)) throw new MalformedHistoryError("linearizability: history must be an array");
  const ids = new Set<number>();
  const byClient = new Map<number, Operation<I, O>[]>();
  for (const [index, op] of history.entries()) {
    if (typeof op !== "object" || op === null) {
      throw new MalformedHistoryError(`linearizability: history[${index}] is not an operation object`);
    }
    const where = `linearizability: history[${index}] (id ${String(op.id)})`;
    if (!Number.isSafeInteger(op.id)) throw new MalformedHistoryError(`${where}: id must be a safe integer`);
    if (ids.has(op.id)) throw new MalformedHistoryError(`${where}: duplicate id`);
    ids.add(op.id);
    if (!Number.isSafeInteger(op.client)) {
      throw new MalformedHistoryError(`${where}: client must be a safe integer`);
    }
    if (typeof op.call !== "number" || !Number.isFinite(op.call)) {
      throw new MalformedHistoryError(`${where}: call must be a finite number, got ${String(op.call)}`);
    }
    if (op.ret !== null) {
      if (typeof op.ret !== "number" || !Number.isFinite(op.ret)) {
        throw new MalformedHistoryError(
          `${where}: ret must be a finite number or null, got ${String(op.ret)}`,
        );
      }
      if (op.ret < op.call) {
        throw new MalformedHistoryError(`${where}: returns at ${op.ret}, before its call at ${op.call}`);
      }
      if (op.output === undefined) {
        throw new MalformedHistoryError(`${where}: returned but has no output (record null for "no value")`);
      }
    }
    const clientOps = byClient.get(op.client);
    if (clientOps === undefined) byClient.set(op.client, [op]);
    else clientOps.push(op);
  }
  // A client is sequential: an op it issues while one of its ops is outstanding means the
  // harness mixed up clients or timestamps. A client that gave up on an op (ret null) may go on.
  for (const [client, clientOps] of byClient) {
    clientOps.sort((a, b) => a.call - b.call || a.id - b.id);
    let busyUntil = Number.NEGATIVE_INFINITY;
    let busyWith: number | null = null;
    for (const op of clientOps) {
      if (op.call < busyUntil) {
        throw new MalformedHistoryError(
          `linearizability: client ${client} calls op ${op.id} at ${op.call} while its op ${busyWith} ` +
            `is outstanding until ${busyUntil}`,
        );
      }
      if (op.ret !== null) {
        busyUntil = op.ret;
        busyWith = op.id;
      }
    }
  }
}

interface Partition<I, O> {
  key: string;
  ops: Operation<I, O>[];
}

function partitionHistory<I, O>(
  history: readonly Operation<I, O>[],
  partition: ((op: Operation<I, O>) => string) | undefined,
): Partition<I, O>[] {
  if (partition === undefined) return [{ key: "", ops: [...history] }];
  const byKey = new Map<string, Operation<I, O>[]>();
  for (const op of history) {
    const key = partition(op);
    if (typeof key !== "string") {
      throw new MalformedHistoryError(`linearizability: partition(op ${op.id}) must return a string`);
    }
    const ops = byKey.get(key);
    if (ops === undefined) byKey.set(key, [op]);
    else ops.push(op);
  }
  // Small partitions first: they are cheap, so a definite failure there is found before a large
  // partition can spend the whole budget. Keys break ties, so the order is deterministic.
  return [...byKey]
    .map(([key, ops]) => ({ key, ops }))
    .sort((a, b) => a.ops.length - b.ops.length || compareStrings(a.key, b.key));
}

function compareStrings(a: string, b: string): number {
  if (a < b) return -1;
  return a > b ? 1 : 0;
}

/** A call or return event in a doubly linked list, so ops can be lifted out and put back in O(1). */
interface Entry {
  /** Index into the partition's ops; -1 for the list head. */
  readonly index: number;
  readonly isCall: boolean;
  /** For a call: its return entry, or null when the op is pending. Null for return entries. */
  match: Entry | null;
  prev: Entry | null;
  next: Entry | null;
}

function buildEntries<I, O>(ops: readonly Operation<I, O>[]): Entry {
  const events: { time: number; isCall: boolean; index: number }[] = [];
  for (const [index, op] of ops.entries()) {
    events.push({ time: op.call, isCall: true, index });
    // A pending op has no return event: it never forces anything to be linearized before it.
    if (op.ret !== null) events.push({ time: op.ret, isCall: false, index });
  }
  events.sort(
    (a, b) => a.time - b.time || Number(b.isCall) - Number(a.isCall) || ops[a.index]!.id - ops[b.index]!.id,
  );
  const head: Entry = { index: -1, isCall: false, match: null, prev: null, next: null };
  const callEntries = new Map<number, Entry>();
  let last = head;
  for (const event of events) {
    const entry: Entry = { index: event.index, isCall: event.isCall, match: null, prev: last, next: null };
    last.next = entry;
    last = entry;
    if (event.isCall) callEntries.set(event.index, entry);
    else callEntries.get(event.index)!.match = entry;
  }
  return head;
}

function unlink(entry: Entry): void {
  entry.prev!.next = entry.next;
  if (entry.next !== null) entry.next.prev = entry.prev;
}

function relink(entry: Entry): void {
  entry.prev!.next = entry;
  if (entry.next !== null) entry.next.prev = entry;
}

function lift(call: Entry): void {
  unlink(call);
  if (call.match !== null) unlink(call.match);
}

/** Exact inverse of lift: relinks in reverse order (dancing links). */
function unlift(call: Entry): void {
  if (call.match !== null) relink(call.match);
  relink(call);
}

class Bitset {
  private readonly words: Uint16Array;

  constructor(bits: number) {
    this.words = new Uint16Array(Math.ceil(bits / BITSET_WORD_BITS));
  }

  set(bit: number): void {
    this.words[bit >>> 4]! |= 1 << (bit & 15);
  }

  clear(bit: number): void {
    this.words[bit >>> 4]! &= ~(1 << (bit & 15));
  }

  /** Fixed length for a given size, so it can be concatenated with a state key unambiguously. */
  key(): string {
    let key = "";
    for (let start = 0; start < this.words.length; start += BITSET_KEY_CHUNK_WORDS) {
      key += String.fromCharCode(...this.words.subarray(start, start + BITSET_KEY_CHUNK_WORDS));
    }
    return key;
  }
}

type SearchOutcome =
  | { kind: "ok"; order: number[]; statesExplored: number }
  | { kind: "fail"; reason: string; longestPrefix: number[]; statesExplored: number }
  | { kind: "budget"; statesExplored: number };

interface Frame<S> {
  entry: Entry;
  /** Model state before this op was applied, restored on backtrack. */
  state: S;
}

function searchPartition<S, I, O>(
  ops: readonly Operation<I, O>[],
  model: Model<S, I, O>,
  budget: number,
  label: string,
): SearchOutcome {
  const completedCount = ops.filter((op) => op.ret !== null).length;
  // Pending ops may be left out, so with nothing completed the empty linearization will do.
  if (completedCount === 0) return { kind: "ok", order: [], statesExplored: 0 };

  const head = buildEntries(ops);
  const linearized = new Bitset(ops.length);
  const cache = new Set<string>();
  const stack: Frame<S>[] = [];
  let state = model.init();
  let completedLinearized = 0;
  let statesExplored = 0;
  let longestPrefix: number[] = [];
  // Set once the search gets stuck right after the longest prefix: the ops that could come next.
  let stuckCandidates: number[] | null = null;

  let entry = head.next;
  for (;;) {
    if (entry === null || !entry.isCall) {
      // Every op that may take effect next failed (or led only to explored states), and the op
      // whose return this is cannot be put off any longer: backtrack.
      if (stuckCandidates === null && stack.length === longestPrefix.length && entry !== null) {
        stuckCandidates = candidatesBefore(head, entry);
      }
      const frame = stack.pop();
      if (frame === undefined) {
        const reason = failureReason(ops, model, label, longestPrefix, stuckCandidates ?? []);
        return { kind: "fail", reason, longestPrefix, statesExplored };
      }
      const op = ops[frame.entry.index]!;
      linearized.clear(frame.entry.index);
      if (op.ret !== null) completedLinearized -= 1;
      state = frame.state;
      unlift(frame.entry);
      entry = frame.entry.next;
      continue;
    }

    if (statesExplored >= budget) return { kind: "budget", statesExplored };
    statesExplored += 1;
    const op = ops[entry.index]!;
    const result = model.step(state, op.input, op.ret === null ? undefined : op.output);
    if (result.ok) {
      linearized.set(entry.index);
      const key = model.key === undefined ? null : linearized.key() + model.key(result.state);
      if (key === null || !cache.has(key)) {
        if (key !== null) cache.add(key);
        stack.push({ entry, state });
        state = result.state;
        if (op.ret !== null) completedLinearized += 1;
        lift(entry);
        if (completedLinearized === completedCount) {
          // Pending ops not linearized yet are left out: they never took effect.
          return { kind: "ok", order: stack.map((frame) => ops[frame.entry.index]!.id), statesExplored };
        }
        if (stack.length > longestPrefix.length) {
          longestPrefix = stack.map((frame) => ops[frame.entry.index]!.id);
          stuckCandidates = null;
        }
        entry = head.next;
        continue;
      }
      linearized.clear(entry.index);
    }
    entry = entry.next;
  }
}

/** Indices of the ops that may take effect next: the calls before the earliest outstanding return. */
function candidatesBefore(head: Entry, stop: Entry): number[] {
  const indices: number[] = [];
  for (let entry = head.next; entry !== null && entry !== stop; entry = entry.next) {
    if (entry.isCall) indices.push(entry.index);
  }
  return indices;
}

function failureReason<S, I, O>(
  ops: readonly Operation<I, O>[],
  model: Model<S, I, O>,
  label: string,
  longestPrefix: number[],
  candidates: number[],
): string {
  const described = candidates
    .slice(0, FAILURE_CANDIDATES_DESCRIBED_MAX)
    .map((index) => describeOperation(ops[index]!, model));
  const hidden = candidates.length - described.length;
  if (hidden > 0) described.push(`and ${hidden} more`);
  return (
    `not linearizable${label}: at most ${longestPrefix.length} of ${ops.length} ops linearize ` +
    `(longest prefix: ${longestPrefix.length === 0 ? "empty" : longestPrefix.join(", ")}); ` +
    `after it none of the ops that may come next leads to a linearization: ${described.join("; ")}`
  );
}

function describeOperation<S, I, O>(op: Operation<I, O>, model: Model<S, I, O>): string {
  const output = op.ret === null ? undefined : op.output;
  const text =
    model.describe === undefined
      ? `${safeJson(op.input)} -> ${safeJson(output)}`
      : model.describe(op.input, output);
  return `op ${op.id} (client ${op.client}, ${op.call}..${op.ret ?? "pending"}) ${text}`;
}

function safeJson(value: unknown): string {
  if (value === undefined) return "?";
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/**
 * Merges per-partition linearizations into one for the whole history. Each op gets a point in
 * time: the latest call among it and the ops before it in its partition. That point lies within
 * [call, ret] (an op before it in a valid order was called no later than it returned) and is
 * nondecreasing along each partition's order, so sorting by it keeps every partition's order
 * and respects real time across partitions.
 */
function mergeOrders<I, O>(partitions: { ops: readonly Operation<I, O>[]; order: number[] }[]): number[] {
  const placed: { point: number; partition: number; position: number; id: number }[] = [];
  for (const [partition, { ops, order }] of partitions.entries()) {
    const byId = new Map(ops.map((op) => [op.id, op]));
    let point = Number.NEGATIVE_INFINITY;
    for (const [position, id] of order.entries()) {
      point = Math.max(point, byId.get(id)!.call);
      placed.push({ point, partition, position, id });
    }
  }
  placed.sort((a, b) => a.point - b.point || a.partition - b.partition || a.position - b.position);
  return placed.map((op) => op.id);
}

// ---------------------------------------------------------------------------------------------
// Models

export type Scalar = string | number | boolean | null;

/** Like ===, but NaN equals NaN, so a state key and an equality test never disagree. */
function sameScalar(a: Scalar, b: Scalar): boolean {
  return a === b || (Number.isNaN(a) && Number.isNaN(b));
}

/** Type-tagged, so 1 and "1" (or null and "null") have different keys. */
function scalarKey(value: Scalar): string {
  if (value === null) return "n";
  if (typeof value === "string") return `s${JSON.stringify(value)}`;
  return typeof value === "number" ? `d${String(value)}` : `b${String(value)}`;
}

function scalarText(value: Scalar): string {
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}

function mapKey(state: ReadonlyMap<string, Scalar>): string {
  return [...state.keys()]
    .sort(compareStrings)
    .map((field) => `${JSON.stringify(field)}=${scalarKey(state.get(field)!)}`)
    .join(",");
}

function outputMismatch(model: string, input: { kind: string }, output: { kind: string }): never {
  throw new MalformedHistoryError(
    `linearizability: ${model} model: a ${input.kind} op recorded a ${output.kind} output`,
  );
}

// Key-value map: put / get / delete. Keys are independent, so histories may be partitioned per
// key with kvPartitionByKey.

export type KvValue = string | number | boolean;
export type KvInput =
  | { kind: "put"; key: string; value: KvValue }
  | { kind: "get"; key: string }
  | { kind: "delete"; key: string };
/** A get returns null for an absent key. */
export type KvOutput = { kind: "put" } | { kind: "get"; value: KvValue | null } | { kind: "delete" };
export type KvState = ReadonlyMap<string, KvValue>;

export const kvMapModel: Model<KvState, KvInput, KvOutput> = {
  init: () => new Map(),
  step(state, input, output) {
    if (output !== undefined && output.kind !== input.kind) outputMismatch("kv map", input, output);
    switch (input.kind) {
      case "put": {
        const next = new Map(state);
        next.set(input.key, input.value);
        return { ok: true, state: next };
      }
      case "delete": {
        if (!state.has(input.key)) return { ok: true, state };
        const next = new Map(state);
        next.delete(input.key);
        return { ok: true, state: next };
      }
      case "get": {
        if (output === undefined) return { ok: true, state };
        if (output.kind !== "get") return outputMismatch("kv map", input, output);
        return { ok: sameScalar(output.value, state.get(input.key) ?? null), state };
      }
    }
  },
  key: mapKey,
  describe(input, output) {
    const key = JSON.stringify(input.key);
    if (input.kind === "put")
      return `put(${key}, ${scalarText(input.value)})${output === undefined ? " -> ?" : ""}`;
    if (input.kind === "delete") return `delete(${key})${output === undefined ? " -> ?" : ""}`;
    if (output === undefined || output.kind !== "get") return `get(${key}) -> ?`;
    return `get(${key}) -> ${scalarText(output.value)}`;
  },
};

export function kvPartitionByKey(op: Operation<KvInput, KvOutput>): string {
  return op.input.key;
}

// Agent state: acknowledged field writes, and reads returning a snapshot of every field written
// so far (a field never written is absent). A read spans all fields, so this model must not be
// partitioned by field.

export type AgentStateInput = { kind: "write"; field: string; value: Scalar } | { kind: "read" };
export type AgentStateOutput =
  | { kind: "write" }
  | { kind: "read"; snapshot: Readonly<Record<string, Scalar>> };
export type AgentState = ReadonlyMap<string, Scalar>;

export const agentStateModel: Model<AgentState, AgentStateInput, AgentStateOutput> = {
  init: () => new Map(),
  step(state, input, output) {
    if (output !== undefined && output.kind !== input.kind) outputMismatch("agent state", input, output);
    if (input.kind === "write") {
      const next = new Map(state);
      next.set(input.field, input.value);
      return { ok: true, state: next };
    }
    if (output === undefined) return { ok: true, state };
    if (output.kind !== "read") return outputMismatch("agent state", input, output);
    return { ok: snapshotMatches(state, output.snapshot), state };
  },
  key: mapKey,
  describe(input, output) {
    if (input.kind === "write") {
      return `write(${JSON.stringify(input.field)}, ${scalarText(input.value)})${output === undefined ? " -> ?" : ""}`;
    }
    if (output === undefined || output.kind !== "read") return "read() -> ?";
    return `read() -> ${safeJson(output.snapshot)}`;
  },
};

function snapshotMatches(state: AgentState, snapshot: Readonly<Record<string, Scalar>>): boolean {
  if (typeof snapshot !== "object" || snapshot === null) return false;
  if (Object.keys(snapshot).length !== state.size) return false;
  for (const [field, value] of state) {
    if (!Object.hasOwn(snapshot, field) || !sameScalar(snapshot[field]!, value)) return false;
  }
  return true;
}

// Single register, initially null: read, write, compare-and-set.

export type RegisterInput =
  | { kind: "read" }
  | { kind: "write"; value: Scalar }
  | { kind: "cas"; expected: Scalar; value: Scalar };
export type RegisterOutput =
  | { kind: "read"; value: Scalar }
  | { kind: "write" }
  | { kind: "cas"; swapped: boolean };

export const registerModel: Model<Scalar, RegisterInput, RegisterOutput> = {
  init: () => null,
  step(state, input, output) {
    if (output !== undefined && output.kind !== input.kind) outputMismatch("register", input, output);
    switch (input.kind) {
      case "write":
        return { ok: true, state: input.value };
      case "read": {
        if (output === undefined) return { ok: true, state };
        if (output.kind !== "read") return outputMismatch("register", input, output);
        return { ok: sameScalar(output.value, state), state };
      }
      case "cas": {
        // The outcome follows from the state, so a pending cas needs no guess.
        const swapped = sameScalar(state, input.expected);
        const next = swapped ? input.value : state;
        if (output === undefined) return { ok: true, state: next };
        if (output.kind !== "cas") return outputMismatch("register", input, output);
        return { ok: output.swapped === swapped, state: next };
      }
    }
  },
  key: scalarKey,
  describe(input, output) {
    const unknown = output === undefined ? " -> ?" : "";
    if (input.kind === "write") return `write(${scalarText(input.value)})${unknown}`;
    if (input.kind === "cas") {
      const text = `cas(${scalarText(input.expected)}, ${scalarText(input.value)})`;
      if (output === undefined || output.kind !== "cas") return `${text} -> ?`;
      return `${text} -> ${output.swapped ? "swapped" : "not swapped"}`;
    }
    if (output === undefined || output.kind !== "read") return "read() -> ?";
    return `read() -> ${scalarText(output.value)}`;
  },
};

// A map with limits on its keys and total bytes (an agent's working memory): a put is accepted
// when the map still fits its limits with it in, and rejected (taking no effect) otherwise. Only
// sizes matter here; values are checked per key by the kv map model.

export interface MapLimits {
  keysMax: number;
  bytesMax: number;
}
export type BoundedMapInput = { kind: "put"; key: string; sizeBytes: number };
export type BoundedMapOutput = { kind: "put"; accepted: boolean };
export type BoundedMapState = ReadonlyMap<string, number>;

export function boundedMapModel(
  limits: MapLimits,
): Model<BoundedMapState, BoundedMapInput, BoundedMapOutput> {
  const fits = (state: BoundedMapState, input: BoundedMapInput): boolean => {
    let keys = 0;
    let bytes = 0;
    for (const [key, size] of state) {
      if (key === input.key) continue;
      keys++;
      bytes += size;
    }
    return keys + 1 <= limits.keysMax && bytes + input.sizeBytes <= limits.bytesMax;
  };
  return {
    init: () => new Map(),
    step(state, input, output) {
      const accepted = fits(state, input);
      const next = accepted ? new Map(state).set(input.key, input.sizeBytes) : state;
      if (output === undefined) return { ok: true, state: next };
      return { ok: output.accepted === accepted, state: next };
    },
    key: (state) => JSON.stringify([...state].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
    describe(input, output) {
      const outcome = output === undefined ? "?" : output.accepted ? "accepted" : "rejected";
      return `put(${JSON.stringify(input.key)}, ${input.sizeBytes} bytes) -> ${outcome}`;
    },
  };
}

// A conversation: its summary (a register) and its in-context message ids, which turns only add
// to. PATCH writes the summary and answers the conversation; it must not lose an id (every id an
// append put there before it is still there); a read likewise.

export type ConversationInput =
  | { kind: "append"; ids: readonly string[] }
  | { kind: "write"; summary: Scalar }
  | { kind: "read" };
export type ConversationOutput =
  | { kind: "append" }
  | { kind: "write"; ids: readonly string[] }
  | { kind: "read"; summary: Scalar; ids: readonly string[] };
export interface ConversationState {
  summary: Scalar;
  ids: readonly string[];
}

export const conversationModel: Model<ConversationState, ConversationInput, ConversationOutput> = {
  init: () => ({ summary: null, ids: [] }),
  step(state, input, output) {
    if (output !== undefined && output.kind !== input.kind) outputMismatch("conversation", input, output);
    const keeps = (ids: readonly string[]) => state.ids.every((id) => ids.includes(id));
    switch (input.kind) {
      case "append": {
        const ids = [...new Set([...state.ids, ...input.ids])].sort();
        return { ok: true, state: { summary: state.summary, ids } };
      }
      case "write": {
        const next = { summary: input.summary, ids: state.ids };
        if (output === undefined || output.kind !== "write") return { ok: true, state: next };
        return { ok: keeps(output.ids), state: next };
      }
      case "read": {
        if (output === undefined || output.kind !== "read") return { ok: true, state };
        return { ok: sameScalar(output.summary, state.summary) && keeps(output.ids), state };
      }
    }
  },
  key: (state) => JSON.stringify([state.summary, state.ids]),
  describe(input, output) {
    const pending = output === undefined ? " -> ?" : "";
    if (input.kind === "append") return `append(${input.ids.length} ids)${pending}`;
    if (input.kind === "write") {
      const ids = output?.kind === "write" ? ` -> ${output.ids.length} ids` : pending;
      return `write(${scalarText(input.summary)})${ids}`;
    }
    if (output === undefined || output.kind !== "read") return "read() -> ?";
    return `read() -> ${scalarText(output.summary)}, ${output.ids.length} ids`;
  },
};
