// The simulator's database: the memory engine keeps membership and leases with PostgreSQL's
// semantics (postgres-cluster.ts) on its own clock, and a fenced commit fails when the token is
// stale or the lease lapsed; with no lease ever taken (a single node) nothing changes.
import { describe, expect, it } from "vitest";
import { MemoryStorage } from "../../src/storage/memory.ts";
import type { Mutation } from "../../src/storage/types.ts";

const TTL = 1_000;
const DEAD_AFTER = 1_000;

function db() {
  const clock = { now: 0 };
  const storage = new MemoryStorage({ nowMs: () => clock.now });
  let n = 0;
  const audit = (): Mutation[] => [
    {
      op: "put_audit",
      entry: { id: `audit-${++n}`, at_ms: 0, actor: "t", action: "a", target: "x", detail: {} },
    },
  ];
  const commit = (agentId: string, token: number) =>
    storage.commit(audit(), { fence: { agent_id: agentId, token } }).then(
      () => "ok",
      (err: Error & { code?: string }) => `${err.code}: ${err.message}`,
    );
  return { clock, storage, cluster: storage.cluster, commit };
}

describe("memory engine: membership and leases", () => {
  it("registers incarnations, heartbeats only the current one, and lists liveness on the database clock", async () => {
    const { clock, cluster } = db();
    const a1 = await cluster.registerNode("node-a", "sim://a");
    expect(a1).toEqual({ node_id: "node-a", incarnation: 1 });
    const a2 = await cluster.registerNode("node-a", "sim://a2");
    expect(a2.incarnation).toBe(2);
    expect(await cluster.heartbeat(a1, TTL)).toBeNull();
    expect(await cluster.heartbeat(a2, TTL)).toEqual(new Map());
    clock.now = DEAD_AFTER;
    expect(await cluster.listNodes(DEAD_AFTER)).toEqual([
      { node_id: "node-a", advertise_url: "sim://a2", incarnation: 2, live: false },
    ]);
    await cluster.heartbeat(a2, TTL);
    expect((await cluster.listNodes(DEAD_AFTER))[0]!.live).toBe(true);
    await cluster.leave(a2);
    expect((await cluster.listNodes(DEAD_AFTER))[0]!.live).toBe(false);
    expect(await cluster.heartbeat(a2, TTL)).toBeNull();
  });

  it("leases an agent to one live node at a time; a lapsed, released or dead holder's lease is taken with the next token", async () => {
    const { clock, cluster } = db();
    const a = await cluster.registerNode("node-a", "sim://a");
    const b = await cluster.registerNode("node-b", "sim://b");
    expect(await cluster.acquireLease("agent-1", a, TTL, DEAD_AFTER)).toEqual({ acquired: true, token: 1 });
    expect(await cluster.acquireLease("agent-1", b, TTL, DEAD_AFTER)).toEqual({
      acquired: false,
      owner: { node_id: "node-a", incarnation: 1, advertise_url: "sim://a" },
    });
    // Ours again: the next token.
    expect(await cluster.acquireLease("agent-1", a, TTL, DEAD_AFTER)).toEqual({ acquired: true, token: 2 });
    // Heartbeats renew unexpired leases to now + ttl.
    clock.now = 900;
    await cluster.heartbeat(b, TTL);
    expect(await cluster.heartbeat(a, TTL)).toEqual(new Map([["agent-1", 2]]));
    clock.now = 1_800;
    await cluster.heartbeat(b, TTL);
    expect(await cluster.leaseOwner("agent-1", DEAD_AFTER)).toMatchObject({ node_id: "node-a" });
    // Lapsed at 1 900 (database time): nobody owns it; the holder's heartbeat no longer renews it.
    clock.now = 1_900;
    await cluster.heartbeat(b, TTL);
    expect(await cluster.leaseOwner("agent-1", DEAD_AFTER)).toBeNull();
    expect(await cluster.heartbeat(a, TTL)).toEqual(new Map());
    expect(await cluster.acquireLease("agent-1", b, TTL, DEAD_AFTER)).toEqual({ acquired: true, token: 3 });
    // Released: free for the next holder, the token stays.
    await cluster.releaseLease("agent-1", b, 2); // not b's token: no effect
    expect(await cluster.leaseOwner("agent-1", DEAD_AFTER)).toMatchObject({ node_id: "node-b" });
    await cluster.releaseLease("agent-1", b, 3);
    expect(await cluster.leaseOwner("agent-1", DEAD_AFTER)).toBeNull();
    expect(await cluster.acquireLease("agent-1", a, 5 * TTL, DEAD_AFTER)).toEqual({
      acquired: true,
      token: 4,
    });
    // A holder whose heartbeat is older than the dead-after time loses even an unexpired lease.
    clock.now = 2_500;
    await cluster.heartbeat(b, TTL);
    expect(await cluster.acquireLease("agent-1", b, TTL, DEAD_AFTER)).toMatchObject({ acquired: false });
    clock.now = 2_900;
    await cluster.heartbeat(b, TTL);
    expect(await cluster.acquireLease("agent-1", b, TTL, DEAD_AFTER)).toEqual({ acquired: true, token: 5 });
    // Leaving releases every lease of the incarnation; a superseded incarnation's lease is taken.
    await cluster.leave(b);
    expect(await cluster.leaseOwner("agent-1", DEAD_AFTER)).toBeNull();
    const a2 = await cluster.registerNode("node-a", "sim://a");
    expect(await cluster.acquireLease("agent-2", a, TTL, DEAD_AFTER)).toEqual({ acquired: true, token: 1 });
    expect(await cluster.acquireLease("agent-2", a2, TTL, DEAD_AFTER)).toEqual({ acquired: true, token: 2 });
  });

  it("fences a commit whose token is stale or whose lease lapsed, and leaves single-node fences alone", async () => {
    const { clock, storage, cluster, commit } = db();
    const a = await cluster.registerNode("node-a", "sim://a");
    const b = await cluster.registerNode("node-b", "sim://b");
    await cluster.acquireLease("agent-1", a, TTL, DEAD_AFTER);
    expect(await commit("agent-1", 1)).toBe("ok");
    clock.now = TTL;
    expect(await commit("agent-1", 1)).toBe("FENCED: agent agent-1: the lease of token 1 lapsed");
    await cluster.heartbeat(b, TTL);
    await cluster.acquireLease("agent-1", b, TTL, DEAD_AFTER);
    expect(await commit("agent-1", 1)).toMatch(/^FENCED: .*token 1 is stale \(current 2\)/);
    expect(await commit("agent-1", 2)).toBe("ok");
    // A released lease leaves no expiry to lapse: the last holder's token still passes until the next.
    await cluster.releaseLease("agent-1", b, 2);
    clock.now = 10 * TTL;
    expect(await commit("agent-1", 2)).toBe("ok");
    // acquireFence takes the next token and keeps the lease columns, as PostgreSQL's does.
    const c = await cluster.registerNode("node-c", "sim://c");
    await cluster.acquireLease("agent-1", c, TTL, DEAD_AFTER);
    expect(await storage.acquireFence("agent-1")).toBe(4);
    expect(await cluster.leaseOwner("agent-1", DEAD_AFTER)).toMatchObject({ node_id: "node-c" });
    expect(await commit("agent-1", 4)).toBe("ok");
    // Single node: fences without leases never lapse, whatever the clock says.
    const token = await storage.acquireFence("agent-solo");
    clock.now = 1_000 * TTL;
    expect(await commit("agent-solo", token)).toBe("ok");
    expect(await commit("agent-solo", token - 1)).toMatch(/^FENCED/);
    expect(await storage.currentFence("agent-1")).toBe(4);
  });
});
