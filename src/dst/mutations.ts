// Planted bugs: test-only switches that break one guarantee each, to prove the simulation notices.
// Each lives in a simulation layer (a storage wrapper, the disk, the request handler) and is off
// unless named with --mutation; production code has no such switch.
export const PLANTED_BUGS = [
  // The storage wrapper acknowledges an agent's (fenced) commit at once and writes it a moment
  // later (and drops it if that write fails or the node dies first).
  "ack_before_commit",
  // The engine applies fenced commits without comparing the fencing token (it still checks that
  // the lease has not lapsed: a late commit after another node took the lease over gets through).
  "skip_fencing_check",
  // The engine compares the fencing token but lets a commit through after its lease lapsed (so a
  // node cut off from the database for a lease TTL still commits when it reconnects).
  "skip_lease_lapse_check",
  // The request handler retries a failed non-idempotent request on the server side, so an effect
  // the first attempt already committed is applied again.
  "double_apply_on_retry",
  // The disk loses its last commit when the node crashes, acknowledged or not (a missing fsync).
  "lose_acked_write_on_crash",
  // The block edit handler clips a value to the block's limit instead of rejecting it.
  "truncate_block_value",
  // Reads skip checksum verification, so a corrupt copy is served as if it were good.
  "skip_checksum_verify",
] as const;
export type PlantedBug = (typeof PLANTED_BUGS)[number];

export function isPlantedBug(name: string): name is PlantedBug {
  return (PLANTED_BUGS as readonly string[]).includes(name);
}

export interface BugSwitches {
  ackBeforeCommit: boolean;
  skipFencingCheck: boolean;
  skipLeaseLapseCheck: boolean;
  doubleApplyOnRetry: boolean;
  loseLastCommitOnCrash: boolean;
  truncateBlockValue: boolean;
  skipChecksumVerify: boolean;
}

export function bugSwitches(bug: PlantedBug | null): BugSwitches {
  return {
    ackBeforeCommit: bug === "ack_before_commit",
    skipFencingCheck: bug === "skip_fencing_check",
    skipLeaseLapseCheck: bug === "skip_lease_lapse_check",
    doubleApplyOnRetry: bug === "double_apply_on_retry",
    loseLastCommitOnCrash: bug === "lose_acked_write_on_crash",
    truncateBlockValue: bug === "truncate_block_value",
    skipChecksumVerify: bug === "skip_checksum_verify",
  };
}
