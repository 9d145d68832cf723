// The simulated cluster, scripted: real Kelpie nodes with real ClusterMembers over the simulated
// database. A write landing on a non-owner is forwarded to the owner; an owner cut off from the
// other nodes keeps its agents (a write elsewhere waits a lease TTL and gives up). A node cut off
// from the database keeps its clock and timers: it notices its leases lapse after a lease TTL and
// drops its activations, the database (on its own clock) lets another node take the agent over,
// and whatever the cut-off node sends late is fenced (stale token, or lapsed lease).
import { describe, expect, it } from "vitest";
import { SeededRng } from "../../src/core/rng.ts";
import { HEARTBEAT_INTERVAL_MS, LEASE_TTL_MS, SimCluster, type SimNode } from "../../src/dst/cluster.ts";
import { SimDisk } from "../../src/dst/disk.ts";
import { ActiveFaults, FaultCounters } from "../../src/dst/faults.ts";
import { serveHttp } from "../../src/dst/http.ts";
import { bugSwitches } from "../../src/dst/mutations.ts";
import { SimNetwork } from "../../src/dst/network.ts";
import type { Reply, Request } from "../../src/dst/requests.ts";
import { SimScheduler } from "../../src/dst/scheduler.ts";
import { SCRATCH_BLOCK_LABEL } from "../../src/dst/sim-llm.ts";
import { sandboxToolRecord } from "../../src/dst/sim-sandbox.ts";
import { llmConfigFromEnv } from "../../src/llm/registry.ts";

async function world(seed: number) {
  const scheduler = new SimScheduler();
  const lines: string[] = [];
  const trace = (line: string) => lines.push(`${scheduler.nowMs()} ${line}`);
  const faults = new ActiveFaults();
  const counters = new FaultCounters();
  const bugs = bugSwitches(null);
  const root = new SeededRng(seed);
  const disk = new SimDisk({
    nowMs: () => scheduler.nowMs(),
    skipFencingCheck: false,
    loseLastCommitOnCrash: false,
  });
  const network = new SimNetwork({ scheduler, rng: root.fork("network"), faults, counters, trace });
  const cluster = new SimCluster({
    scheduler,
    disk,
    network,
    rng: root.fork("cluster"),
    faults,
    counters,
    trace,
    bugs,
    llm: llmConfigFromEnv({ OPENAI_API_KEY: "dst-simulated" }),
    violation: (text) => {
      throw new Error(text);
    },
  });
  await disk.storage.commit([{ op: "put_tool", tool: sandboxToolRecord(0), create: true }]);
  await cluster.bootAll();

  /** Runs the simulation until `promise` settles. */
  const until = async <T>(promise: Promise<T>): Promise<T> => {
    let done = false;
    promise.then(
      () => {
        done = true;
      },
      () => {
        done = true;
      },
    );
    await scheduler.run({ untilMs: scheduler.nowMs() + 60_000, stop: () => done });
    expect(done, "the simulated call did not finish").toBe(true);
    return promise;
  };
  const advance = (ms: number) => scheduler.run({ untilMs: scheduler.nowMs() + ms });
  const request = async (node: SimNode, req: Request): Promise<Reply> => until(serveHttp(node, req, bugs));
  return { scheduler, disk, cluster, router: cluster.links, lines, until, advance, request };
}

type World = Awaited<ReturnType<typeof world>>;

/**
 * Eight block writes a node sends with the token it holds (as a turn in flight would), each
 * settling to "accepted" or to `refusal` of its error.
 */
async function sendLateWrites(
  w: World,
  node: SimNode,
  agentId: string,
  token: number,
  refusal: (err: Error & { code?: string }) => string,
) {
  const agent = (await w.disk.raw.getAgent(agentId))!;
  const scratch = (await w.disk.raw.getBlocks(agent.block_ids)).find((b) => b.label === SCRATCH_BLOCK_LABEL)!;
  const late: Promise<string>[] = [];
  for (let i = 0; i < 8; i++) {
    const commit = node.storage!.storage.commit(
      [
        {
          op: "put_block",
          block: { ...scratch, value: `late${i}`, version: scratch.version + 1 },
          create: false,
        },
      ],
      { fence: { agent_id: agentId, token } },
    );
    late.push(commit.then(() => "accepted", refusal));
  }
  return { scratch, late };
}

describe("simulated cluster", () => {
  it("runs several real nodes with leases: a write landing on a non-owner is forwarded to the owner", async () => {
    const w = await world(1);
    const [n1, n2] = w.cluster.upNodes();
    const created = await w.request(n1!, { kind: "create_agent", name: "a" });
    if (!created.ok || created.value.kind !== "create_agent") throw new Error(JSON.stringify(created));
    const agentId = created.value.agentId;
    expect((await w.request(n1!, { kind: "block_write", agentId, value: "v1" })).ok).toBe(true);
    const owner = await w.disk.cluster.leaseOwner(agentId, n1!.member.nodeDeadAfterMs);
    expect(owner).toMatchObject({ node_id: n1!.nodeId });
    const forwardsBefore = w.router.forwardsCount;
    expect((await w.request(n2!, { kind: "block_write", agentId, value: "v2" })).ok).toBe(true);
    expect(w.router.forwardsCount).toBe(forwardsBefore + 1);
    expect(n2!.services.runtime.isHeld(agentId)).toBe(false);
    expect(w.disk.violations).toEqual([]);
  });

  it("cuts the owner off from the other nodes: a write elsewhere cannot reach it, waits a lease TTL, and gives up without taking the live owner's agent", async () => {
    const w = await world(5);
    const [n1, n2] = w.cluster.upNodes();
    const created = await w.request(n1!, { kind: "create_agent", name: "a" });
    if (!created.ok || created.value.kind !== "create_agent") throw new Error(JSON.stringify(created));
    const agentId = created.value.agentId;
    expect((await w.request(n1!, { kind: "block_write", agentId, value: "v1" })).ok).toBe(true);
    const owner = n1!;
    const other = n2!;
    expect(w.cluster.partitionFromNodes(10 * LEASE_TTL_MS, owner)).toBe(true);
    const startedMs = w.scheduler.nowMs();
    const reply = await w.request(other, { kind: "block_write", agentId, value: "v2" });
    expect(reply).toMatchObject({ ok: false, code: "AGENT_ELSEWHERE", retryable: true });
    expect(w.scheduler.nowMs() - startedMs).toBeGreaterThanOrEqual(LEASE_TTL_MS);
    // The owner stayed live (its heartbeats reach the database) and kept the agent.
    expect(await w.disk.cluster.leaseOwner(agentId, owner.member.nodeDeadAfterMs)).toMatchObject({
      node_id: owner.nodeId,
    });
    // A write landing on the owner itself is served there.
    expect((await w.request(owner, { kind: "block_write", agentId, value: "v3" })).ok).toBe(true);
    const agent = (await w.disk.raw.getAgent(agentId))!;
    const scratch = (await w.disk.raw.getBlocks(agent.block_ids)).find(
      (b) => b.label === SCRATCH_BLOCK_LABEL,
    )!;
    expect(scratch.value).toBe("v3");
    expect(w.disk.violations).toEqual([]);
  });

  it("cuts a node off from the database: its leases lapse, another node takes over, and nothing it sends afterwards is accepted", async () => {
    const w = await world(7);
    const [n1, n2] = w.cluster.upNodes();
    const created = await w.request(n1!, { kind: "create_agent", name: "a" });
    if (!created.ok || created.value.kind !== "create_agent") throw new Error(JSON.stringify(created));
    const agentId = created.value.agentId;
    expect((await w.request(n1!, { kind: "block_write", agentId, value: "v1" })).ok).toBe(true);
    const token1 = n1!.services.runtime.heldLeases().get(agentId)!;
    expect(token1).toBeGreaterThan(0);
    const deadAfterMs = n1!.member.nodeDeadAfterMs;
    expect(await w.disk.cluster.leaseOwner(agentId, deadAfterMs)).toMatchObject({ node_id: n1!.nodeId });

    // n1 loses the database for three lease TTLs; its clock and timers keep running.
    await w.advance(HEARTBEAT_INTERVAL_MS);
    const partitionAtMs = w.scheduler.nowMs();
    expect(w.cluster.partitionFromDatabase(3 * LEASE_TTL_MS, n1)).toBe(true);
    // It goes on sending commits with the token it holds (as a turn in flight would).
    const { scratch, late } = await sendLateWrites(w, n1!, agentId, token1, (err) => String(err.code));

    // Within a lease TTL and a heartbeat it notices: it stops serving and drops the activation.
    await w.advance(LEASE_TTL_MS + HEARTBEAT_INTERVAL_MS);
    expect(n1!.member.state).toBe("lapsed");
    expect(n1!.services.runtime.isHeld(agentId)).toBe(false);
    // In database time the lease lapsed too: nobody holds the agent.
    expect(await w.disk.cluster.leaseOwner(agentId, deadAfterMs)).toBeNull();
    const n1Live = (await w.disk.cluster.listNodes(deadAfterMs)).find((n) => n.node_id === n1!.nodeId);
    expect(n1Live?.live).toBe(false);

    // A write landing on n2 takes the agent over with the next token.
    expect((await w.request(n2!, { kind: "block_write", agentId, value: "v2" })).ok).toBe(true);
    expect(await w.disk.cluster.leaseOwner(agentId, deadAfterMs)).toMatchObject({ node_id: n2!.nodeId });
    const token2 = n2!.services.runtime.heldLeases().get(agentId)!;
    expect(token2).toBeGreaterThan(token1);

    // The partition heals: n1 serves again, and every commit it sent was refused (failed while
    // cut off, or fenced on arriving late).
    await w.advance(3 * LEASE_TTL_MS);
    expect(n1!.member.state).toBe("serving");
    const outcomes = await w.until(Promise.all(late));
    expect(
      outcomes.every((o) => o === "FENCED" || o === "STORAGE_UNAVAILABLE"),
      outcomes.join(),
    ).toBe(true);
    expect(outcomes).toContain("FENCED");
    expect(w.lines.some((l) => l.includes("commit arrives late"))).toBe(true);
    expect(w.disk.acceptedCommits.filter((c) => c.origin === n1!.origin && c.atMs >= partitionAtMs)).toEqual(
      [],
    );
    expect((await w.disk.raw.getBlock(scratch.id))!.value).toBe("v2");

    // n1 can take the agent back through the leases only (n2's is live): a write on n1 forwards.
    expect((await w.request(n1!, { kind: "block_write", agentId, value: "v3" })).ok).toBe(true);
    expect(await w.disk.cluster.leaseOwner(agentId, deadAfterMs)).toMatchObject({ node_id: n2!.nodeId });
    expect(w.disk.violations).toEqual([]);
  });

  it("fences a late commit whose lease lapsed even when nobody took the agent over", async () => {
    const w = await world(3);
    const [n1] = w.cluster.upNodes();
    const created = await w.request(n1!, { kind: "create_agent", name: "a" });
    if (!created.ok || created.value.kind !== "create_agent") throw new Error(JSON.stringify(created));
    const agentId = created.value.agentId;
    expect((await w.request(n1!, { kind: "block_write", agentId, value: "v1" })).ok).toBe(true);
    const token = n1!.services.runtime.heldLeases().get(agentId)!;
    await w.advance(HEARTBEAT_INTERVAL_MS);
    const partitionAtMs = w.scheduler.nowMs();
    w.cluster.partitionFromDatabase(2 * LEASE_TTL_MS, n1);
    const { scratch, late } = await sendLateWrites(w, n1!, agentId, token, (err) => err.message);
    await w.advance(3 * LEASE_TTL_MS);
    const outcomes = await w.until(Promise.all(late));
    // Failed while cut off, or refused on arrival because the lease lapsed (the token is still the newest).
    expect(
      outcomes.every((o) => /unreachable|lapsed/.test(o)),
      outcomes.join("\n"),
    ).toBe(true);
    expect(outcomes.some((o) => /lease of token \d+ lapsed/.test(o))).toBe(true);
    expect(await w.disk.raw.currentFence(agentId)).toBe(token);
    expect(w.disk.lapsedCommitsRejectedCount).toBeGreaterThan(0);
    expect(w.disk.acceptedCommits.filter((c) => c.origin === n1!.origin && c.atMs >= partitionAtMs)).toEqual(
      [],
    );
    expect((await w.disk.raw.getBlock(scratch.id))!.value).toBe("v1");
    expect(w.disk.violations).toEqual([]);
  });

  it("flags a commit accepted after its lease lapsed when the engine skips that check (planted bug)", async () => {
    const scheduler = new SimScheduler();
    const disk = new SimDisk({
      nowMs: () => scheduler.nowMs(),
      skipFencingCheck: false,
      skipLeaseLapseCheck: true,
      loseLastCommitOnCrash: false,
    });
    const node = await disk.cluster.registerNode("node-1", "sim://node-1");
    const lease = await disk.cluster.acquireLease("agent-1", node, LEASE_TTL_MS, LEASE_TTL_MS);
    if (!lease.acquired) throw new Error("not acquired");
    const audit = { id: "audit-1", at_ms: 0, actor: "t", action: "a", target: "x", detail: {} };
    await disk.storage.commit([{ op: "put_audit", entry: audit }], {
      fence: { agent_id: "agent-1", token: lease.token },
    });
    expect(disk.violations).toEqual([]);
    scheduler.schedule(LEASE_TTL_MS, () => {});
    await scheduler.run();
    await disk.storage.commit([{ op: "put_audit", entry: { ...audit, id: "audit-2" } }], {
      fence: { agent_id: "agent-1", token: lease.token },
    });
    expect(disk.violations.join("\n")).toMatch(/after the lease of token 1 lapsed/);
  });
});
