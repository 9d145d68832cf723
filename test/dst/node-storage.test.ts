// The simulated disk and a node's faulty view of it: corrupt reads are caught by the checksums
// kept at write time (the read fails; nothing corrupt is served), unless the planted bug turns
// verification off; and the disk flags a fenced commit applied with a stale token.
import { describe, expect, it } from "vitest";
import { SeededRng } from "../../src/core/rng.ts";
import { SimDisk } from "../../src/dst/disk.ts";
import { ActiveFaults, FaultCounters } from "../../src/dst/faults.ts";
import { NodeStorage } from "../../src/dst/node-storage.ts";
import { NodeClock, SimScheduler } from "../../src/dst/scheduler.ts";
import type { BlockRecord } from "../../src/storage/types.ts";

const block: BlockRecord = {
  id: "block-00000000-0000-4000-8000-000000000001",
  label: "scratch",
  value: "some value worth keeping",
  limit: 100,
  description: null,
  read_only: false,
  metadata: {},
  is_template: false,
  template_name: null,
  hidden: null,
  tags: [],
  project_id: null,
  version: 1,
  created_at_ms: 0,
  updated_at_ms: 0,
};

function nodeView(disk: SimDisk, skipChecksumVerify: boolean) {
  const scheduler = new SimScheduler();
  const faults = new ActiveFaults();
  const counters = new FaultCounters();
  const trace: string[] = [];
  const view = new NodeStorage({
    disk,
    clock: new NodeClock(scheduler),
    rng: new SeededRng(1),
    faults,
    counters,
    nowMs: () => scheduler.nowMs(),
    trace: (line) => trace.push(line),
    faultsEnabled: () => true,
    isDead: () => false,
    takeArmedCrash: () => null,
    crash: () => {},
    dbPartition: () => null,
    ackBeforeCommit: false,
    outboxWriteBehind: false,
    skipChecksumVerify,
    uncheckedWorkingLimits: false,
  });
  return { storage: view.storage, faults, counters, trace };
}

describe("simulated storage", () => {
  it("fails a corrupt read instead of serving it, and counts the corruption", async () => {
    const disk = new SimDisk({ skipFencingCheck: false, loseLastCommitOnCrash: false });
    await disk.storage.commit([{ op: "put_block", block, create: true }]);
    const { storage, faults, counters, trace } = nodeView(disk, false);
    faults.open("storage_corruption", 1_000);
    let failures = 0;
    for (let i = 0; i < 50; i++) {
      try {
        expect((await storage.getBlock(block.id))?.value).toBe(block.value);
      } catch (err) {
        expect((err as { code?: string }).code).toBe("STORAGE_UNAVAILABLE");
        failures++;
      }
    }
    expect(failures).toBeGreaterThan(0);
    expect(counters.counts.get("storage_corruption")).toBe(failures);
    expect(trace.filter((l) => l.startsWith("checksum mismatch"))).toHaveLength(failures);
  });

  it("serves corrupt copies when verification is off (the planted bug)", async () => {
    const disk = new SimDisk({ skipFencingCheck: false, loseLastCommitOnCrash: false });
    await disk.storage.commit([{ op: "put_block", block, create: true }]);
    const { storage, faults } = nodeView(disk, true);
    faults.open("storage_corruption", 1_000);
    const values = new Set<string>();
    for (let i = 0; i < 50; i++) values.add((await storage.getBlock(block.id))!.value);
    expect(values.size).toBeGreaterThan(1);
  });

  it("flags a fenced commit applied with a stale token when the engine skips the check", async () => {
    for (const skip of [false, true]) {
      const disk = new SimDisk({ skipFencingCheck: skip, loseLastCommitOnCrash: false });
      await disk.storage.commit([{ op: "put_block", block, create: true }]);
      const agentId = "agent-00000000-0000-4000-8000-000000000001";
      const old = await disk.storage.acquireFence(agentId);
      await disk.storage.acquireFence(agentId);
      const stale = disk.storage.commit(
        [{ op: "put_block", block: { ...block, version: 2 }, create: false }],
        {
          fence: { agent_id: agentId, token: old },
        },
      );
      if (skip) {
        await stale;
        expect(disk.violations.join("\n")).toMatch(/stale fencing token 1 was applied/);
      } else {
        await expect(stale).rejects.toMatchObject({ code: "FENCED" });
        expect(disk.violations).toEqual([]);
      }
    }
  });
});
