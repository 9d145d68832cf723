// The node-to-node credential on its own: what it is signed over, the skew window, and what a
// client cannot produce. The same checks run against real node processes in forwarding-auth.test.ts.
import { describe, expect, it } from "vitest";
import {
  bodyDigest,
  CLUSTER_AUTH_SKEW_MS,
  CLUSTER_SECRET_CHARS_MIN,
  CLUSTER_SIGNATURE_HEADER,
  CLUSTER_TIME_HEADER,
  clusterKey,
  FORWARDED_BY_HEADER,
  NodeAuth,
} from "../../src/cluster/node-auth.ts";
import { ConfigError, configFromEnv } from "../../src/config.ts";
import { ManualClock } from "../../src/core/clock.ts";
import type { ClusterStore } from "../../src/storage/types.ts";

const KEY = Buffer.alloc(32, 7);
const PARTS = {
  method: "PUT",
  target: "/v1/agents/agent-1/working-memory/k?x=1",
  bodySha256: bodyDigest(Buffer.from('{"value":1}')),
};

function pair(clock = new ManualClock()) {
  return { clock, a: new NodeAuth(KEY, "node-a", clock), b: new NodeAuth(KEY, "node-b", clock) };
}

describe("node-to-node credential", () => {
  it("a request signed by one node for another is accepted there, naming the sender", () => {
    const { a, b } = pair();
    expect(b.verify(a.sign("node-b", PARTS), PARTS)).toEqual({ kind: "valid", from: "node-a" });
  });

  it("no signature: a client's request, whatever cluster headers it sends", () => {
    const { b } = pair();
    expect(b.verify({ [FORWARDED_BY_HEADER]: "node-a" }, PARTS)).toEqual({ kind: "none" });
  });

  it("refuses a forged signature, another secret, another receiver, another sender name", () => {
    const { a, b, clock } = pair();
    const signed = a.sign("node-b", PARTS);
    const forged = { ...signed, [CLUSTER_SIGNATURE_HEADER]: Buffer.alloc(32, 1).toString("base64url") };
    expect(b.verify(forged, PARTS).kind).toBe("invalid");
    expect(b.verify({ ...signed, [CLUSTER_SIGNATURE_HEADER]: "short" }, PARTS).kind).toBe("invalid");
    const otherSecret = new NodeAuth(Buffer.alloc(32, 8), "node-a", clock).sign("node-b", PARTS);
    expect(b.verify(otherSecret, PARTS)).toMatchObject({ kind: "invalid", reason: /signature/ });
    // Signed for node-c: node-b does not take it.
    expect(b.verify(a.sign("node-c", PARTS), PARTS).kind).toBe("invalid");
    expect(b.verify({ ...signed, [FORWARDED_BY_HEADER]: "node-z" }, PARTS).kind).toBe("invalid");
  });

  it("binds the method, the path and query, and the body", () => {
    const { a, b } = pair();
    const signed = a.sign("node-b", PARTS);
    expect(b.verify(signed, { ...PARTS, method: "DELETE" }).kind).toBe("invalid");
    expect(b.verify(signed, { ...PARTS, target: "/v1/agents/agent-2/working-memory/k?x=1" }).kind).toBe(
      "invalid",
    );
    expect(b.verify(signed, { ...PARTS, target: "/v1/agents/agent-1/working-memory/k?x=2" }).kind).toBe(
      "invalid",
    );
    expect(b.verify(signed, { ...PARTS, bodySha256: bodyDigest(Buffer.from('{"value":2}')) }).kind).toBe(
      "invalid",
    );
  });

  it("accepts a time within the skew window either way, refuses one beyond it", () => {
    const { a, b, clock } = pair();
    const signed = a.sign("node-b", PARTS);
    clock.advanceMs(CLUSTER_AUTH_SKEW_MS);
    expect(b.verify(signed, PARTS).kind).toBe("valid");
    clock.advanceMs(1);
    expect(b.verify(signed, PARTS)).toMatchObject({ kind: "invalid", reason: /expired/ });
    // Signed by a node whose clock runs ahead.
    const ahead = new NodeAuth(KEY, "node-a", new ManualClock(clock.nowMs() + CLUSTER_AUTH_SKEW_MS + 1));
    expect(b.verify(ahead.sign("node-b", PARTS), PARTS).kind).toBe("invalid");
  });

  it("refuses a time that is not a number, and cluster headers sent twice", () => {
    const { a, b } = pair();
    const signed = a.sign("node-b", PARTS);
    expect(b.verify({ ...signed, [CLUSTER_TIME_HEADER]: "1e12" }, PARTS).kind).toBe("invalid");
    expect(b.verify({ ...signed, [FORWARDED_BY_HEADER]: ["node-a", "node-a"] }, PARTS).kind).toBe("invalid");
  });

  it("the key: KELPIE_CLUSTER_SECRET when set (the database is not asked), else the database's", async () => {
    const asked: Uint8Array[] = [];
    const stored = Buffer.alloc(32, 5);
    const store = {
      clusterSecret: async (candidate: Uint8Array) => {
        asked.push(candidate);
        return stored;
      },
    } as unknown as ClusterStore;
    const configured = "x".repeat(CLUSTER_SECRET_CHARS_MIN);
    expect(Buffer.from(await clusterKey(configured, store)).toString()).toBe(configured);
    expect(asked).toEqual([]);
    expect(await clusterKey(undefined, store)).toBe(stored);
    expect(asked[0]).toHaveLength(32);
    // A store no other process shares keeps none: a key of this process's own.
    expect(await clusterKey(undefined, {} as ClusterStore)).toHaveLength(32);
  });

  it("KELPIE_CLUSTER_SECRET is read with the cluster settings and must not be short", () => {
    const env = { KELPIE_STORAGE: "postgres", KELPIE_DATABASE_URL: "postgres://127.0.0.1/x" };
    const secret = "s".repeat(CLUSTER_SECRET_CHARS_MIN);
    expect(configFromEnv({ ...env, KELPIE_CLUSTER_SECRET: secret }).cluster?.secret).toBe(secret);
    expect(configFromEnv(env).cluster?.secret).toBeUndefined();
    expect(() => configFromEnv({ ...env, KELPIE_CLUSTER_SECRET: "short" })).toThrow(ConfigError);
  });
});
