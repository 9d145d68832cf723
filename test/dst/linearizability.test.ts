// The linearizability checker: known linearizable and non-linearizable histories for each model,
// pending ops, partitioning, the search budget, malformed input, and randomized histories drawn
// from a real in-memory map (with and without a corrupted output).
import { describe, expect, it } from "vitest";
import {
  type AgentStateInput,
  type AgentStateOutput,
  agentStateModel,
  type CheckResult,
  checkLinearizable,
  type KvInput,
  type KvOutput,
  type KvValue,
  kvMapModel,
  kvPartitionByKey,
  MalformedHistoryError,
  type Model,
  type Operation,
  type RegisterInput,
  type RegisterOutput,
  registerModel,
  type Scalar,
} from "../../src/dst/linearizability.ts";

type RegisterOp = Operation<RegisterInput, RegisterOutput>;
type KvOp = Operation<KvInput, KvOutput>;
type AgentOp = Operation<AgentStateInput, AgentStateOutput>;

// --- history builders: ret null makes the op pending (its output is then unobserved) -------------

function write(id: number, client: number, call: number, ret: number | null, value: Scalar): RegisterOp {
  return {
    id,
    client,
    call,
    ret,
    input: { kind: "write", value },
    output: ret === null ? undefined : { kind: "write" },
  };
}

function read(id: number, client: number, call: number, ret: number | null, value: Scalar): RegisterOp {
  return { id, client, call, ret, input: { kind: "read" }, output: { kind: "read", value } };
}

function cas(
  id: number,
  client: number,
  call: number,
  ret: number | null,
  expected: Scalar,
  value: Scalar,
  swapped: boolean | null,
): RegisterOp {
  const output: RegisterOutput | undefined = swapped === null ? undefined : { kind: "cas", swapped };
  return { id, client, call, ret, input: { kind: "cas", expected, value }, output };
}

function put(
  id: number,
  client: number,
  call: number,
  ret: number | null,
  key: string,
  value: KvValue,
): KvOp {
  return {
    id,
    client,
    call,
    ret,
    input: { kind: "put", key, value },
    output: ret === null ? undefined : { kind: "put" },
  };
}

function get(
  id: number,
  client: number,
  call: number,
  ret: number | null,
  key: string,
  value: KvValue | null,
): KvOp {
  return { id, client, call, ret, input: { kind: "get", key }, output: { kind: "get", value } };
}

function del(id: number, client: number, call: number, ret: number | null, key: string): KvOp {
  return {
    id,
    client,
    call,
    ret,
    input: { kind: "delete", key },
    output: ret === null ? undefined : { kind: "delete" },
  };
}

function setField(
  id: number,
  client: number,
  call: number,
  ret: number | null,
  field: string,
  value: Scalar,
): AgentOp {
  return {
    id,
    client,
    call,
    ret,
    input: { kind: "write", field, value },
    output: ret === null ? undefined : { kind: "write" },
  };
}

function snapshot(
  id: number,
  client: number,
  call: number,
  ret: number | null,
  fields: Record<string, Scalar>,
): AgentOp {
  return { id, client, call, ret, input: { kind: "read" }, output: { kind: "read", snapshot: fields } };
}

/**
 * Checks an order returned by the checker independently of it: every returned op appears once,
 * no op appears ahead of one that returned before it was called, and replaying the order
 * through the model accepts every output.
 */
function expectValidLinearization<S, I, O>(
  history: readonly Operation<I, O>[],
  model: Model<S, I, O>,
  result: CheckResult,
): void {
  expect(result.ok).toBe(true);
  if (result.ok !== true) return;
  const byId = new Map(history.map((op) => [op.id, op]));
  expect(result.order.filter((id) => !byId.has(id))).toEqual([]);
  expect(new Set(result.order).size).toBe(result.order.length);
  const returned = history.filter((op) => op.ret !== null).map((op) => op.id);
  expect(returned.filter((id) => !result.order.includes(id))).toEqual([]);
  const order = result.order.map((id) => byId.get(id)!);
  const problems: string[] = [];
  for (let i = 0; i < order.length; i += 1) {
    for (let j = i + 1; j < order.length; j += 1) {
      const [earlier, later] = [order[i]!, order[j]!];
      if (later.ret !== null && later.ret < earlier.call) {
        problems.push(`op ${later.id} returned before op ${earlier.id} was called, yet is ordered after it`);
      }
    }
  }
  let state = model.init();
  for (const op of order) {
    const step = model.step(state, op.input, op.ret === null ? undefined : op.output);
    if (!step.ok) problems.push(`op ${op.id} does not fit the model at its place in the order`);
    state = step.state;
  }
  expect(problems).toEqual([]);
}

function expectNotLinearizable(result: CheckResult): { reason: string; longestPrefix: number[] } {
  expect(result.ok).toBe(false);
  if (result.ok !== false) throw new Error("unreachable");
  return result;
}

// --- seeded randomness and a real map to draw histories from ------------------------------------

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

interface GeneratorOptions {
  seed: number;
  opCount: number;
  keyCount: number;
  /** Logical time between consecutive real linearization points. */
  spacing: number;
  /** Each op's call is up to this much before its linearization point, and its return after. */
  jitterMax: number;
  /** Probability that an op is pending (never returns); half of those take effect. */
  pendingProbability: number;
}

/**
 * Runs ops one after another against a real Map, each at its own linearization point, then widens
 * each op into an interval around its point. The real order stays a valid linearization, so the
 * history is linearizable by construction. Clients are assigned greedily: an op goes to a client
 * whose previous op has returned, and a client whose op stays pending is retired.
 */
function generateKvHistory(options: GeneratorOptions): KvOp[] {
  const random = mulberry32(options.seed);
  const randomInt = (bound: number) => Math.floor(random() * bound);
  const real = new Map<string, KvValue>();
  const history: KvOp[] = [];
  for (let i = 0; i < options.opCount; i += 1) {
    const point = (i + 1) * options.spacing;
    const call = point - randomInt(options.jitterMax + 1);
    const pending = random() < options.pendingProbability;
    const ret = pending ? null : point + randomInt(options.jitterMax + 1);
    const key = `k${randomInt(options.keyCount)}`;
    const roll = random();
    if (roll < 0.4) {
      // A pending put may or may not have happened; both must be accepted.
      if (!pending || random() < 0.5) real.set(key, `v${i}`);
      history.push(put(i, 0, call, ret, key, `v${i}`));
    } else if (roll < 0.55) {
      if (!pending || random() < 0.5) real.delete(key);
      history.push(del(i, 0, call, ret, key));
    } else {
      history.push(get(i, 0, call, ret, key, real.get(key) ?? null));
    }
  }
  const clientFreeAt: number[] = [];
  for (const op of [...history].sort((a, b) => a.call - b.call || a.id - b.id)) {
    let client = clientFreeAt.findIndex((freeAt) => freeAt < op.call);
    if (client === -1) client = clientFreeAt.push(0) - 1;
    op.client = client;
    clientFreeAt[client] = op.ret ?? Number.POSITIVE_INFINITY;
  }
  return history;
}

function clientCount(history: readonly Operation<unknown, unknown>[]): number {
  return new Set(history.map((op) => op.client)).size;
}

/** Replaces a returned get's output with a value no put ever wrote. */
function corruptOneGet(history: KvOp[], seed: number): number {
  const gets = history.filter((op) => op.input.kind === "get" && op.ret !== null);
  expect(gets.length).toBeGreaterThan(0);
  const victim = gets[Math.floor(mulberry32(seed)() * gets.length)]!;
  victim.output = { kind: "get", value: "never-written" };
  return victim.id;
}

// --- tests ---------------------------------------------------------------------------------------

describe("register model", () => {
  it("accepts a sequential history, in real-time order", () => {
    const history = [write(1, 0, 0, 1, 1), read(2, 0, 2, 3, 1), write(3, 1, 4, 5, 2), read(4, 1, 6, 7, 2)];
    const result = checkLinearizable(history, registerModel);
    expect(result).toEqual({ ok: true, order: [1, 2, 3, 4] });
  });

  it("accepts the empty history", () => {
    expect(checkLinearizable([], registerModel)).toEqual({ ok: true, order: [] });
  });

  it("accepts reads concurrent with overlapping writes seeing either value", () => {
    // Two writes overlap; reads during them may see either, reads after agree on the last one.
    const base = [write(1, 0, 0, 10, 1), write(2, 1, 0, 10, 2)];
    for (const [during, after] of [
      [1, 2],
      [2, 1],
      [null, 1],
      [2, 2],
    ] as const) {
      const history = [
        ...base,
        read(3, 2, 5, 8, during),
        read(4, 2, 20, 21, after),
        read(5, 3, 22, 23, after),
      ];
      expectValidLinearization(history, registerModel, checkLinearizable(history, registerModel));
    }
  });

  it("rejects a stale read after a completed write", () => {
    const history = [write(1, 0, 0, 10, 1), write(2, 0, 20, 30, 2), read(3, 1, 40, 50, 1)];
    const failure = expectNotLinearizable(checkLinearizable(history, registerModel));
    expect(failure.longestPrefix).toEqual([1, 2]);
    expect(failure.reason).toContain("op 3 (client 1, 40..50) read() -> 1");
  });

  it("rejects a read of a value never written", () => {
    const history = [write(1, 0, 0, 10, 1), read(2, 1, 5, 15, 7)];
    const failure = expectNotLinearizable(checkLinearizable(history, registerModel));
    expect(failure.longestPrefix).toEqual([1]);
  });

  it("rejects two readers seeing two concurrent writes in contradictory orders", () => {
    // Client 2 sees 1 then 2 (so write 1 came first); client 3 sees 2 then 1 (so write 2 did).
    const history = [
      write(1, 0, 0, 100, 1),
      write(2, 1, 0, 100, 2),
      read(3, 2, 10, 20, 1),
      read(4, 2, 30, 40, 2),
      read(5, 3, 10, 20, 2),
      read(6, 3, 30, 40, 1),
    ];
    expectNotLinearizable(checkLinearizable(history, registerModel));
    // Either reader alone is fine.
    const oneReader = history.filter((op) => op.client !== 3);
    expectValidLinearization(oneReader, registerModel, checkLinearizable(oneReader, registerModel));
  });

  it("treats an op returning at t and one called at t as concurrent", () => {
    const touching = [write(1, 0, 0, 10, 1), read(2, 1, 10, 20, null)];
    expect(checkLinearizable(touching, registerModel)).toEqual({ ok: true, order: [2, 1] });
    const apart = [write(1, 0, 0, 10, 1), read(2, 1, 11, 20, null)];
    expectNotLinearizable(checkLinearizable(apart, registerModel));
  });

  it("checks compare-and-set outcomes against the state", () => {
    const oneWins = [
      cas(1, 0, 0, 10, null, 1, true),
      cas(2, 1, 0, 10, null, 2, false),
      read(3, 2, 20, 30, 1),
    ];
    expectValidLinearization(oneWins, registerModel, checkLinearizable(oneWins, registerModel));
    const bothWin = [cas(1, 0, 0, 10, null, 1, true), cas(2, 1, 0, 10, null, 2, true)];
    expectNotLinearizable(checkLinearizable(bothWin, registerModel));
    const wrongWinner = [
      cas(1, 0, 0, 10, null, 1, true),
      cas(2, 1, 0, 10, null, 2, false),
      read(3, 2, 20, 30, 2),
    ];
    expectNotLinearizable(checkLinearizable(wrongWinner, registerModel));
  });

  it("accepts a pending write that took effect, and one that did not", () => {
    const tookEffect = [write(1, 0, 0, null, 1), read(2, 1, 10, 20, 1)];
    const result = checkLinearizable(tookEffect, registerModel);
    expect(result).toEqual({ ok: true, order: [1, 2] });
    const didNot = [write(1, 0, 0, null, 1), read(2, 1, 10, 20, null)];
    expect(checkLinearizable(didNot, registerModel)).toEqual({ ok: true, order: [2] });
    const later = [read(1, 1, 0, 10, null), write(2, 0, 5, null, 1), read(3, 1, 20, 30, 1)];
    expectValidLinearization(later, registerModel, checkLinearizable(later, registerModel));
  });

  it("rejects a pending write whose effect is undone, or seen before it was called", () => {
    const undone = [write(1, 0, 0, null, 1), read(2, 1, 10, 20, 1), read(3, 1, 30, 40, null)];
    expectNotLinearizable(checkLinearizable(undone, registerModel));
    const early = [read(1, 1, 0, 5, 1), write(2, 0, 10, null, 1)];
    expectNotLinearizable(checkLinearizable(early, registerModel));
  });

  it("applies a pending cas only as the state dictates", () => {
    const swapped = [cas(1, 0, 0, null, null, 1, null), read(2, 1, 10, 20, 1)];
    expectValidLinearization(swapped, registerModel, checkLinearizable(swapped, registerModel));
    // The register holds 5, so the pending cas(null, 1) cannot have swapped.
    const impossible = [write(1, 1, 0, 5, 5), cas(2, 0, 10, null, null, 1, null), read(3, 1, 20, 30, 1)];
    expectNotLinearizable(checkLinearizable(impossible, registerModel));
  });
});

describe("key-value map model", () => {
  it("accepts puts, gets and deletes on several keys", () => {
    const history = [
      put(1, 0, 0, 10, "a", 1),
      put(2, 1, 5, 15, "b", 2),
      get(3, 2, 12, 20, "a", 1),
      del(4, 0, 20, 30, "a"),
      get(5, 1, 25, 35, "a", null),
      get(6, 2, 40, 50, "b", 2),
    ];
    expectValidLinearization(history, kvMapModel, checkLinearizable(history, kvMapModel));
  });

  it("rejects a lost acknowledged put", () => {
    const history = [put(1, 0, 0, 10, "a", 1), put(2, 0, 20, 30, "b", 2), get(3, 1, 40, 50, "a", null)];
    expectNotLinearizable(checkLinearizable(history, kvMapModel));
  });

  it("partitions per key, merges the orders, and names the failing key", () => {
    const good = [
      put(1, 0, 0, 10, "a", 1),
      put(2, 1, 0, 10, "b", 1),
      put(3, 2, 5, 25, "a", 2),
      get(4, 1, 12, 20, "b", 1),
      get(5, 0, 12, 20, "a", 2),
      get(6, 1, 30, 40, "a", 2),
      del(7, 2, 30, 40, "b"),
      get(8, 0, 45, 50, "b", null),
    ];
    const partitioned = checkLinearizable(good, kvMapModel, { partition: kvPartitionByKey });
    expectValidLinearization(good, kvMapModel, partitioned);
    expectValidLinearization(good, kvMapModel, checkLinearizable(good, kvMapModel));

    const bad = [...good, put(9, 3, 60, 70, "b", 3), get(10, 3, 80, 90, "b", 1)];
    const failure = expectNotLinearizable(
      checkLinearizable(bad, kvMapModel, { partition: kvPartitionByKey }),
    );
    expect(failure.reason).toContain('in partition "b"');
    expect(failure.longestPrefix).toEqual([2, 4, 7, 8, 9]);
  });

  it("partitioning keeps a search that spans many keys small", () => {
    // Per key, six overlapping puts and a later get of the first one called: it must go last.
    const history: KvOp[] = [];
    for (let key = 0; key < 10; key += 1) {
      for (let i = 0; i < 6; i += 1) history.push(put(key * 10 + i, key * 10 + i, 0, 100, `k${key}`, i));
      history.push(get(key * 10 + 6, key * 10, 200, 210, `k${key}`, 0));
    }
    const budget = 10_000;
    const partitioned = checkLinearizable(history, kvMapModel, { partition: kvPartitionByKey, budget });
    expectValidLinearization(history, kvMapModel, partitioned);
    const whole = checkLinearizable(history, kvMapModel, { budget });
    expect(whole.ok).toBe("unknown");
  });
});

describe("agent state model", () => {
  it("accepts reads seeing concurrent field writes in either order", () => {
    const history = [
      setField(1, 0, 0, 10, "persona", "p1"),
      setField(2, 1, 0, 10, "human", "h1"),
      snapshot(3, 2, 5, 8, { human: "h1" }),
      snapshot(4, 2, 20, 30, { persona: "p1", human: "h1" }),
    ];
    expectValidLinearization(history, agentStateModel, checkLinearizable(history, agentStateModel));
  });

  it("rejects a snapshot that lost an acknowledged write", () => {
    const history = [
      setField(1, 0, 0, 10, "persona", "p1"),
      setField(2, 0, 20, 30, "human", "h1"),
      snapshot(3, 1, 40, 50, { human: "h1" }),
    ];
    const failure = expectNotLinearizable(checkLinearizable(history, agentStateModel));
    expect(failure.longestPrefix).toEqual([1, 2]);
    expect(failure.reason).toContain('read() -> {"human":"h1"}');
  });

  it("rejects snapshots with extra fields or fields torn between writes", () => {
    const extra = [
      setField(1, 0, 0, 10, "persona", "p1"),
      snapshot(2, 1, 20, 30, { persona: "p1", x: null }),
    ];
    expectNotLinearizable(checkLinearizable(extra, agentStateModel));
    // One writer sets persona then human; a reader seeing the second write must see the first.
    const torn = [
      setField(1, 0, 0, 10, "persona", "p1"),
      setField(2, 0, 11, 20, "human", "h1"),
      snapshot(3, 1, 0, 30, { human: "h1" }),
    ];
    expectNotLinearizable(checkLinearizable(torn, agentStateModel));
  });

  it("accepts a pending write seen or not seen", () => {
    const seen = [setField(1, 0, 0, null, "persona", "p1"), snapshot(2, 1, 10, 20, { persona: "p1" })];
    expectValidLinearization(seen, agentStateModel, checkLinearizable(seen, agentStateModel));
    const unseen = [setField(1, 0, 0, null, "persona", "p1"), snapshot(2, 1, 10, 20, {})];
    expectValidLinearization(unseen, agentStateModel, checkLinearizable(unseen, agentStateModel));
  });
});

describe("search budget", () => {
  it("answers unknown instead of searching without end", () => {
    // Sixteen overlapping writes and a read of a value none wrote: refuting it means trying
    // every subset of the writes, far beyond this budget.
    const history: RegisterOp[] = [];
    for (let i = 0; i < 16; i += 1) history.push(write(i, i, 0, 100, i));
    history.push(read(16, 16, 0, 200, "never"));
    const result = checkLinearizable(history, registerModel, { budget: 1_000 });
    expect(result.ok).toBe("unknown");
    if (result.ok === "unknown") expect(result.reason).toContain("budget of 1000 model steps exhausted");
  });

  it("counts model steps: an easy history needs a few, and gets unknown with fewer", () => {
    const history = [write(1, 0, 0, 1, 1), read(2, 0, 2, 3, 1), write(3, 0, 4, 5, 2)];
    expect(checkLinearizable(history, registerModel, { budget: 3 }).ok).toBe(true);
    expect(checkLinearizable(history, registerModel, { budget: 2 }).ok).toBe("unknown");
  });

  it("searches exactly without a state key, just without the cache", () => {
    const { key: _key, ...uncached } = registerModel;
    const good = [write(1, 0, 0, 10, 1), write(2, 1, 0, 10, 2), read(3, 2, 20, 30, 1)];
    expectValidLinearization(good, uncached, checkLinearizable(good, uncached));
    const bad = [...good, read(4, 2, 40, 50, 2)];
    expectNotLinearizable(checkLinearizable(bad, uncached));
  });
});

describe("malformed histories", () => {
  const ok = [write(1, 0, 0, 10, 1)];

  it.each([
    ["duplicate ids", [...ok, read(1, 1, 0, 10, 1)], /duplicate id/],
    ["a return before the call", [write(1, 0, 10, 5, 1)], /returns at 5, before its call at 10/],
    ["a non-finite call", [write(1, 0, Number.NaN, 5, 1)], /call must be a finite number/],
    ["a non-integer id", [write(1.5, 0, 0, 5, 1)], /id must be a safe integer/],
    ["a returned op without output", [{ ...write(1, 0, 0, 5, 1), output: undefined }], /has no output/],
    [
      "a client with overlapping ops",
      [write(1, 0, 0, 10, 1), read(2, 0, 5, 15, 1)],
      /client 0 calls op 2 at 5/,
    ],
  ])("rejects %s", (_name, history, message) => {
    expect(() => checkLinearizable(history as RegisterOp[], registerModel)).toThrow(MalformedHistoryError);
    expect(() => checkLinearizable(history as RegisterOp[], registerModel)).toThrow(message);
  });

  it("lets a client go on after an op it gave up on, or call at the tick its last op returned", () => {
    const gaveUp = [write(1, 0, 0, null, 1), read(2, 0, 5, 10, 1)];
    expectValidLinearization(gaveUp, registerModel, checkLinearizable(gaveUp, registerModel));
    const sameTick = [write(1, 0, 0, 10, 1), read(2, 0, 10, 20, 1), read(3, 0, 20, 20, 1)];
    expectValidLinearization(sameTick, registerModel, checkLinearizable(sameTick, registerModel));
  });

  it("ignores whatever output a pending op recorded, since nobody observed it", () => {
    // The pending cas must have swapped for the read to see 1, whatever it claims.
    const history = [
      read(1, 0, 0, null, "garbage"),
      cas(2, 1, 0, null, null, 1, false),
      read(3, 2, 20, 30, 1),
    ];
    expectValidLinearization(history, registerModel, checkLinearizable(history, registerModel));
  });

  it("rejects a bad budget, a bad partition key and an output of the wrong kind", () => {
    expect(() => checkLinearizable(ok, registerModel, { budget: 0 })).toThrow(
      /budget must be a positive integer/,
    );
    const partition = () => 7 as unknown as string;
    expect(() => checkLinearizable(ok, registerModel, { partition })).toThrow(/must return a string/);
    const mixedUp: RegisterOp = { ...read(1, 0, 0, 10, 1), output: { kind: "write" } };
    expect(() => checkLinearizable([mixedUp], registerModel)).toThrow(/a read op recorded a write output/);
  });
});

describe("randomized histories from a real map", () => {
  const options = { opCount: 150, keyCount: 3, spacing: 10, jitterMax: 25, pendingProbability: 0.03 };

  it("accepts every generated history, partitioned or not", () => {
    for (let seed = 1; seed <= 40; seed += 1) {
      const history = generateKvHistory({ ...options, seed });
      expectValidLinearization(history, kvMapModel, checkLinearizable(history, kvMapModel));
      const partitioned = checkLinearizable(history, kvMapModel, { partition: kvPartitionByKey });
      expectValidLinearization(history, kvMapModel, partitioned);
    }
  });

  it("rejects every generated history with one get's output corrupted", () => {
    for (let seed = 1; seed <= 40; seed += 1) {
      const history = generateKvHistory({ ...options, seed });
      const victim = corruptOneGet(history, seed);
      for (const result of [
        checkLinearizable(history, kvMapModel),
        checkLinearizable(history, kvMapModel, { partition: kvPartitionByKey }),
      ]) {
        const failure = expectNotLinearizable(result);
        expect(failure.longestPrefix).not.toContain(victim);
        expect(failure.reason).toContain(`op ${victim} `);
      }
    }
  });

  it("gives the same answer for the same history in any order", () => {
    const history = generateKvHistory({ ...options, seed: 99 });
    const forward = checkLinearizable(history, kvMapModel, { partition: kvPartitionByKey });
    expect(checkLinearizable([...history].reverse(), kvMapModel, { partition: kvPartitionByKey })).toEqual(
      forward,
    );
    expect(checkLinearizable(history, kvMapModel, { partition: kvPartitionByKey })).toEqual(forward);
  });

  it("checks 2,000 ops over 20 keys from up to 8 concurrent clients quickly", { timeout: 5_000 }, () => {
    const history = generateKvHistory({
      seed: 2_024,
      opCount: 2_000,
      keyCount: 20,
      spacing: 10,
      jitterMax: 35,
      pendingProbability: 0,
    });
    expect(clientCount(history)).toBeLessThanOrEqual(8);
    expect(clientCount(history)).toBeGreaterThanOrEqual(6);
    const result = checkLinearizable(history, kvMapModel, { partition: kvPartitionByKey, budget: 100_000 });
    expectValidLinearization(history, kvMapModel, result);
    corruptOneGet(history, 2_024);
    expectNotLinearizable(
      checkLinearizable(history, kvMapModel, { partition: kvPartitionByKey, budget: 100_000 }),
    );
  });
});
