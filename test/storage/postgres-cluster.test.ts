// Membership and leases in PostgreSQL, timed by the database's clock: who may take a lease, when
// it lapses, how renewal and release work, and that a lapsed or superseded holder cannot commit.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PostgresStorage } from "../../src/storage/postgres.ts";
import type { NodeIdentity } from "../../src/storage/types.ts";
import { withTestDatabase } from "../support/postgres.ts";
import { type StoredAgent, storedAgent } from "../support/records.ts";

/** Short enough to wait out in a test; the database, not this process, decides when it lapses. */
const LEASE_TTL_MS = 400;
const NODE_DEAD_AFTER_MS = LEASE_TTL_MS;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let counter = 0;
function agent(): StoredAgent {
  counter++;
  return storedAgent(
    `agent-00000000-0000-4000-8000-${String(counter).padStart(12, "0")}`,
    `leased-${counter}`,
  );
}

describe("postgres cluster store", () => {
  const db = withTestDatabase();
  let storage: PostgresStorage;
  beforeAll(async () => {
    storage = new PostgresStorage({ url: db.url() });
    await storage.migrate();
  });
  afterAll(async () => {
    await storage.close();
  });

  const newAgent = async () => {
    const a = agent();
    await storage.commit([{ op: "put_agent", agent: a, create: true }]);
    return a;
  };
  const rename = (a: ReturnType<typeof agent>, token: number, name: string) =>
    storage
      .commit([{ op: "put_agent", agent: { ...a, name }, create: false }], {
        fence: { agent_id: a.id, token },
      })
      .then(
        () => "ok",
        (e) => e.code as string,
      );

  it("registers nodes with increasing incarnations and lists who is live", async () => {
    const cluster = storage.cluster;
    const first = await cluster.registerNode("reg-a", "http://127.0.0.1:1");
    const again = await cluster.registerNode("reg-a", "http://127.0.0.1:2");
    expect(again.incarnation).toBe(first.incarnation + 1);
    // The old incarnation is superseded: its heartbeat says so.
    expect(await cluster.heartbeat(first, LEASE_TTL_MS)).toBeNull();
    expect(await cluster.heartbeat(again, LEASE_TTL_MS)).toEqual(new Map());
    const listed = (await cluster.listNodes(NODE_DEAD_AFTER_MS)).find((n) => n.node_id === "reg-a")!;
    expect(listed).toMatchObject({
      advertise_url: "http://127.0.0.1:2",
      incarnation: again.incarnation,
      live: true,
    });
    await sleep(NODE_DEAD_AFTER_MS + 100);
    expect((await cluster.listNodes(NODE_DEAD_AFTER_MS)).find((n) => n.node_id === "reg-a")!.live).toBe(
      false,
    );
  });

  it("one live holder per agent; the lease lapses in database time and the next holder fences the last", async () => {
    const cluster = storage.cluster;
    const a = await newAgent();
    const n1 = await cluster.registerNode("n1", "http://n1");
    const n2 = await cluster.registerNode("n2", "http://n2");
    const got1 = await cluster.acquireLease(a.id, n1, LEASE_TTL_MS, NODE_DEAD_AFTER_MS);
    expect(got1.acquired).toBe(true);
    const t1 = (got1 as { token: number }).token;
    // Taking it again while ours is allowed, with a new token; another live node is refused.
    const refused = await cluster.acquireLease(a.id, n2, LEASE_TTL_MS, NODE_DEAD_AFTER_MS);
    expect(refused).toEqual({
      acquired: false,
      owner: { node_id: "n1", incarnation: n1.incarnation, advertise_url: "http://n1" },
    });
    expect(await cluster.leaseOwner(a.id, NODE_DEAD_AFTER_MS)).toMatchObject({ node_id: "n1" });
    expect(await rename(a, t1, "by-n1")).toBe("ok");

    // Renewal keeps it past its first ttl.
    await sleep(LEASE_TTL_MS / 2);
    await cluster.heartbeat(n2, LEASE_TTL_MS);
    expect(await cluster.heartbeat(n1, LEASE_TTL_MS)).toEqual(new Map([[a.id, t1]]));
    await sleep(LEASE_TTL_MS / 2 + 50);
    expect(await rename(a, t1, "still-n1")).toBe("ok");

    // n1 stops heartbeating: its lease lapses, and then even n1 cannot commit with it.
    await sleep(LEASE_TTL_MS + 50);
    expect(await rename(a, t1, "late")).toBe("FENCED");
    expect(await cluster.leaseOwner(a.id, NODE_DEAD_AFTER_MS)).toBeNull();
    // A lapsed lease is not renewed: the node must take it again.
    expect(await cluster.heartbeat(n1, LEASE_TTL_MS)).toEqual(new Map());
    const got2 = await cluster.acquireLease(a.id, n2, LEASE_TTL_MS, NODE_DEAD_AFTER_MS);
    expect(got2).toEqual({ acquired: true, token: t1 + 1 });
    expect(await rename(a, t1, "stale")).toBe("FENCED");
    expect(await rename(a, t1 + 1, "by-n2")).toBe("ok");
    expect((await storage.getAgent(a.id))!.name).toBe("by-n2");
  });

  it("a restarted node (new incarnation) or one that left loses its leases at once", async () => {
    const cluster = storage.cluster;
    const a = await newAgent();
    const b = await newAgent();
    const old = await cluster.registerNode("r1", "http://r1");
    const other: NodeIdentity = await cluster.registerNode("r2", "http://r2");
    const ta = await cluster.acquireLease(a.id, old, LEASE_TTL_MS * 10, NODE_DEAD_AFTER_MS * 10);
    const tb = await cluster.acquireLease(b.id, other, LEASE_TTL_MS * 10, NODE_DEAD_AFTER_MS * 10);
    expect(ta.acquired && tb.acquired).toBe(true);
    await cluster.registerNode("r1", "http://r1-new");
    // The superseded incarnation's long lease does not stand in the way.
    const taken = await cluster.acquireLease(a.id, other, LEASE_TTL_MS, NODE_DEAD_AFTER_MS * 10);
    expect(taken.acquired).toBe(true);
    await cluster.leave(other);
    expect(await cluster.leaseOwner(b.id, NODE_DEAD_AFTER_MS * 10)).toBeNull();
    expect(await cluster.heartbeat(other, LEASE_TTL_MS)).toBeNull();
  });

  it("release gives the lease back only for the token it was taken with", async () => {
    const cluster = storage.cluster;
    const a = await newAgent();
    const n = await cluster.registerNode("rel", "http://rel");
    const got = (await cluster.acquireLease(a.id, n, LEASE_TTL_MS * 10, NODE_DEAD_AFTER_MS)) as {
      token: number;
    };
    await cluster.releaseLease(a.id, n, got.token - 1);
    expect(await cluster.leaseOwner(a.id, NODE_DEAD_AFTER_MS)).not.toBeNull();
    await cluster.releaseLease(a.id, n, got.token);
    expect(await cluster.leaseOwner(a.id, NODE_DEAD_AFTER_MS)).toBeNull();
    // Concurrent takers: exactly one wins, and tokens stay distinct.
    const nodes = await Promise.all(
      ["c1", "c2", "c3", "c4"].map((id) => cluster.registerNode(id, `http://${id}`)),
    );
    const results = await Promise.all(
      nodes.map((node) => cluster.acquireLease(a.id, node, LEASE_TTL_MS * 10, NODE_DEAD_AFTER_MS * 10)),
    );
    expect(results.filter((r) => r.acquired)).toHaveLength(1);
  });

  it("nodes starting together agree on one cluster secret, made by one of them and kept", async () => {
    // Separate pools, as separate node processes have.
    const nodes = [0, 1, 2, 3].map(() => new PostgresStorage({ url: db.url(), maxConnections: 1 }));
    try {
      const candidates = nodes.map((_, i) => new Uint8Array(32).fill(i + 1));
      const got = await Promise.all(nodes.map((n, i) => n.cluster.clusterSecret(candidates[i]!)));
      const winner = Buffer.from(got[0]!).toString("hex");
      for (const secret of got) expect(Buffer.from(secret).toString("hex")).toBe(winner);
      expect(candidates.map((c) => Buffer.from(c).toString("hex"))).toContain(winner);
      // A node starting later reads the same secret; its own candidate is dropped.
      const later = await storage.cluster.clusterSecret(new Uint8Array(32).fill(99));
      expect(Buffer.from(later).toString("hex")).toBe(winner);
    } finally {
      await Promise.all(nodes.map((n) => n.close()));
    }
  });
});
