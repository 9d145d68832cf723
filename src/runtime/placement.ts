// Where an agent may run and with which fencing token. A single node owns every agent and takes
// a fresh token from storage on each activation; the cluster will take tokens from leases.
import type { Storage } from "../storage/types.ts";

export interface Placement {
  /** Takes ownership of an agent for one activation; returns the fencing token to commit with. */
  acquire(agentId: string): Promise<number>;
  /** Gives ownership back when the activation ends (a no-op on a single node). */
  release(agentId: string, token: number): Promise<void>;
}

export class LocalPlacement implements Placement {
  constructor(private readonly storage: Storage) {}

  acquire(agentId: string): Promise<number> {
    return this.storage.acquireFence(agentId);
  }

  async release(_agentId: string, _token: number): Promise<void> {}
}
