// Membership and agent leases in PostgreSQL. Every time comparison uses the database's now(), so
// node clocks never decide who owns an agent. A lease sits on the agent's fence row: taking it
// bumps the fencing token in the same statement, and a commit checks both token and expiry.
import type postgres from "postgres";
import { assert } from "../core/assert.ts";
import type { ClusterNode, ClusterStore, LeaseAcquisition, LeaseOwner, NodeIdentity } from "./types.ts";

type Guard = <T>(fn: () => Promise<T>) => Promise<T>;

export class PostgresCluster implements ClusterStore {
  constructor(
    private readonly sql: postgres.Sql,
    private readonly guard: Guard,
  ) {}

  registerNode(nodeId: string, advertiseUrl: string): Promise<NodeIdentity> {
    assert(nodeId !== "", "a node id is required");
    return this.guard(async () => {
      const rows = await this.sql`
        INSERT INTO cluster_nodes (node_id, advertise_url, incarnation, heartbeat_at, started_at)
        VALUES (${nodeId}, ${advertiseUrl}, 1, now(), now())
        ON CONFLICT (node_id) DO UPDATE SET
          advertise_url = EXCLUDED.advertise_url,
          incarnation = cluster_nodes.incarnation + 1,
          heartbeat_at = now(), started_at = now(), left_at = NULL
        RETURNING incarnation`;
      return { node_id: nodeId, incarnation: Number(rows[0]!.incarnation) };
    });
  }

  heartbeat(node: NodeIdentity, leaseTtlMs: number): Promise<Map<string, number> | null> {
    assert(leaseTtlMs > 0, "lease ttl must be positive");
    return this.guard(() =>
      this.sql.begin(async (tx) => {
        const alive = await tx`
          UPDATE cluster_nodes SET heartbeat_at = now()
          WHERE node_id = ${node.node_id} AND incarnation = ${node.incarnation} AND left_at IS NULL
          RETURNING 1`;
        if (alive.length === 0) return null;
        const renewed = await tx`
          UPDATE agent_fences SET lease_expires_at = now() + ${leaseTtlMs} * interval '1 millisecond'
          WHERE node_id = ${node.node_id} AND incarnation = ${node.incarnation} AND lease_expires_at > now()
          RETURNING agent_id, token`;
        return new Map(renewed.map((r) => [String(r.agent_id), Number(r.token)]));
      }),
    ) as Promise<Map<string, number> | null>;
  }

  acquireLease(
    agentId: string,
    node: NodeIdentity,
    leaseTtlMs: number,
    nodeDeadAfterMs: number,
  ): Promise<LeaseAcquisition> {
    return this.guard(async () => {
      // Taken when free, lapsed, ours, or held by an incarnation that is gone or dead. Setting the
      // key column (to itself) makes the update lock the row FOR UPDATE, so the token bump waits
      // for a commit in flight, which holds the row FOR KEY SHARE (and so lets heartbeats renew).
      const rows = await this.sql`
        INSERT INTO agent_fences (agent_id, token, node_id, incarnation, lease_expires_at)
        VALUES (${agentId}, 1, ${node.node_id}, ${node.incarnation},
                now() + ${leaseTtlMs} * interval '1 millisecond')
        ON CONFLICT (agent_id) DO UPDATE SET
          agent_id = EXCLUDED.agent_id,
          token = agent_fences.token + 1,
          node_id = EXCLUDED.node_id,
          incarnation = EXCLUDED.incarnation,
          lease_expires_at = EXCLUDED.lease_expires_at
        WHERE agent_fences.node_id IS NULL
           OR agent_fences.lease_expires_at IS NULL
           OR agent_fences.lease_expires_at <= now()
           OR (agent_fences.node_id = ${node.node_id} AND agent_fences.incarnation = ${node.incarnation})
           OR NOT EXISTS (
             SELECT 1 FROM cluster_nodes c
             WHERE c.node_id = agent_fences.node_id AND c.incarnation = agent_fences.incarnation
               AND c.left_at IS NULL
               AND c.heartbeat_at > now() - ${nodeDeadAfterMs} * interval '1 millisecond')
        RETURNING token`;
      if (rows.length === 1) return { acquired: true, token: Number(rows[0]!.token) };
      const owner = await this.ownerOf(agentId, nodeDeadAfterMs);
      // The holder lapsed between the two statements: try again, once more is enough in practice.
      if (owner === null) return this.acquireLease(agentId, node, leaseTtlMs, nodeDeadAfterMs);
      return { acquired: false, owner };
    });
  }

  releaseLease(agentId: string, node: NodeIdentity, token: number): Promise<void> {
    return this.guard(async () => {
      await this.sql`
        UPDATE agent_fences SET node_id = NULL, incarnation = NULL, lease_expires_at = NULL
        WHERE agent_id = ${agentId} AND token = ${token}
          AND node_id = ${node.node_id} AND incarnation = ${node.incarnation}`;
    });
  }

  leaseOwner(agentId: string, nodeDeadAfterMs: number): Promise<LeaseOwner | null> {
    return this.guard(() => this.ownerOf(agentId, nodeDeadAfterMs));
  }

  private async ownerOf(agentId: string, nodeDeadAfterMs: number): Promise<LeaseOwner | null> {
    const rows = await this.sql`
      SELECT f.node_id, f.incarnation, c.advertise_url
      FROM agent_fences f JOIN cluster_nodes c
        ON c.node_id = f.node_id AND c.incarnation = f.incarnation AND c.left_at IS NULL
      WHERE f.agent_id = ${agentId} AND f.lease_expires_at > now()
        AND c.heartbeat_at > now() - ${nodeDeadAfterMs} * interval '1 millisecond'`;
    if (rows.length === 0) return null;
    const r = rows[0]!;
    return {
      node_id: String(r.node_id),
      incarnation: Number(r.incarnation),
      advertise_url: String(r.advertise_url),
    };
  }

  leave(node: NodeIdentity): Promise<void> {
    return this.guard(async () => {
      await this.sql.begin(async (tx) => {
        await tx`
          UPDATE agent_fences SET node_id = NULL, incarnation = NULL, lease_expires_at = NULL
          WHERE node_id = ${node.node_id} AND incarnation = ${node.incarnation}`;
        await tx`
          UPDATE cluster_nodes SET left_at = now()
          WHERE node_id = ${node.node_id} AND incarnation = ${node.incarnation}`;
      });
    });
  }

  clusterSecret(candidate: Uint8Array): Promise<Uint8Array> {
    assert(candidate.length > 0, "a secret is required");
    return this.guard(async () => {
      // Nodes starting together: the first insert wins, the others' wait on its key and do
      // nothing, and every node then reads the one committed row.
      await this.sql`
        INSERT INTO cluster_secret (id, secret) VALUES (1, ${Buffer.from(candidate)})
        ON CONFLICT (id) DO NOTHING`;
      const rows = await this.sql`SELECT secret FROM cluster_secret WHERE id = 1`;
      assert(rows.length === 1, "the cluster secret row is missing");
      return new Uint8Array(rows[0]!.secret as Buffer);
    });
  }

  listNodes(nodeDeadAfterMs: number): Promise<ClusterNode[]> {
    return this.guard(async () => {
      const rows = await this.sql`
        SELECT node_id, advertise_url, incarnation,
          (left_at IS NULL AND heartbeat_at > now() - ${nodeDeadAfterMs} * interval '1 millisecond') AS live
        FROM cluster_nodes ORDER BY node_id`;
      return rows.map((r) => ({
        node_id: String(r.node_id),
        advertise_url: String(r.advertise_url),
        incarnation: Number(r.incarnation),
        live: r.live === true,
      }));
    });
  }
}
