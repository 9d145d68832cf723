// How the simulated client reads an answer. Found by the simulation (seed 464): a working-memory
// read of a deleted agent (404 AGENT_NOT_FOUND) was taken as the key reading null, and the map's
// history was called not linearizable.
import { describe, expect, it } from "vitest";
import { replyOf } from "../../src/dst/requests.ts";

const get = { kind: "working_get", agentId: "agent-1", key: "k0" } as const;

describe("replyOf for working-memory reads", () => {
  it("reads a missing key as null", () => {
    const body = JSON.stringify({ detail: "Working memory key 'k0' not found", code: "NOT_FOUND" });
    expect(replyOf(get, 404, body)).toEqual({ ok: true, value: { kind: "working_get", value: null } });
  });

  it("takes a missing agent as an error, not as a read of the map", () => {
    const body = JSON.stringify({ detail: "Agent agent-1 not found", code: "AGENT_NOT_FOUND" });
    expect(replyOf(get, 404, body)).toMatchObject({ ok: false, code: "AGENT_NOT_FOUND", retryable: false });
  });
});
