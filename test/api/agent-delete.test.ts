// Deleting an agent is one commit, inside its mailbox: the agent with its conversations, working
// memory, archive attachments and the archives it made for itself (unless another agent uses
// them) go together, or — when that commit fails — nothing goes and the answer says so. Before,
// the route deleted the agent and then its archives in separate writes: a failure in between
// left the archives behind with the agent already gone.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { KelpieError } from "../../src/core/errors.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { SqliteStorage } from "../../src/storage/sqlite.ts";
import type { Mutation, Storage } from "../../src/storage/types.ts";
import { testApp } from "../support/app.ts";
import { FakeEmbedders } from "../support/fake-embedders.ts";

const dir = mkdtempSync(join(tmpdir(), "kelpie-agent-delete-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A storage whose archive deletions fail while `failing.on` (whichever way they are written). */
function failingArchiveDeletes(inner: Storage, failing: { on: boolean }): Storage {
  const refuse = () => Promise.reject(new KelpieError("STORAGE_UNAVAILABLE", "disk full (injected)"));
  const deletesArchives = (m: Mutation) => m.op === "delete_unattached_archives" || m.op === "delete_archive";
  const tiers = new Proxy(inner.tiers, {
    get(target, prop) {
      const value = Reflect.get(target, prop);
      if (prop === "deleteArchive" && failing.on) return refuse;
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return new Proxy(inner, {
    get(target, prop) {
      if (prop === "tiers") return tiers;
      if (prop === "commit") {
        return (mutations: Mutation[], options?: unknown) =>
          failing.on && mutations.some(deletesArchives)
            ? refuse()
            : target.commit(mutations, options as never);
      }
      const value = Reflect.get(target, prop);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

const engines: [string, () => Promise<Storage>][] = [
  ["memory", async () => new MemoryStorage()],
  [
    "sqlite",
    async () => {
      const s = new SqliteStorage({ path: join(dir, `d-${Math.random()}.db`) });
      await s.migrate();
      return s;
    },
  ],
];

describe.each(engines)("agent delete (%s)", (_name, open) => {
  it("deletes the agent and what only it used in one commit, or nothing, saying what failed", async () => {
    const inner = await open();
    const failing = { on: false };
    const storage = failingArchiveDeletes(inner, failing);
    const t = await testApp(storage, { embedders: new FakeEmbedders() });
    try {
      const a = (await t.req("POST", "/v1/agents/", { name: "a" })).body;
      const b = (await t.req("POST", "/v1/agents/", { name: "b" })).body;
      expect((await t.req("POST", `/v1/agents/${a.id}/archival-memory`, { text: "p-1 mine" })).status).toBe(
        200,
      );
      const own = (await t.kelpie.services.archival.agentArchive(a.id))!;
      const shared = (await t.req("POST", "/v1/archives/", { name: "shared" })).body;
      for (const agent of [a, b]) {
        const res = await t.req("PATCH", `/v1/agents/${agent.id}/archives/attach/${shared.id}`);
        expect(res.status).toBe(200);
      }
      expect((await t.req("PUT", `/v1/agents/${a.id}/working-memory/k`, { value: 1 })).status).toBe(200);
      const conv = (await t.req("POST", `/v1/conversations/?agent_id=${a.id}`, {})).body;

      failing.on = true;
      const refused = await t.req("DELETE", `/v1/agents/${a.id}`);
      expect(refused.status).toBe(503);
      expect(refused.body.detail).toContain(`agent ${a.id} was not deleted (nothing changed)`);
      expect(refused.body.detail).toContain("disk full (injected)");
      // Nothing went.
      expect((await t.req("GET", `/v1/agents/${a.id}`)).status).toBe(200);
      expect((await t.req("GET", `/v1/archives/${own.id}`)).status).toBe(200);
      expect((await t.req("GET", `/v1/agents/${a.id}/working-memory/k`)).status).toBe(200);
      expect((await t.req("GET", `/v1/conversations/${conv.id}`)).status).toBe(200);
      expect(await inner.tiers.listArchiveAgentIds(shared.id)).toEqual([a.id, b.id]);

      failing.on = false;
      expect((await t.req("DELETE", `/v1/agents/${a.id}`)).status).toBe(200);
      expect((await t.req("GET", `/v1/agents/${a.id}`)).status).toBe(404);
      expect((await t.req("GET", `/v1/archives/${own.id}`)).status).toBe(404);
      expect(await inner.tiers.countPassages([own.id])).toBe(0);
      expect(await inner.tiers.getWorking(a.id, "k")).toBeNull();
      expect((await t.req("GET", `/v1/conversations/${conv.id}`)).status).toBe(404);
      // The shared archive stays, for the agent still using it.
      expect((await t.req("GET", `/v1/archives/${shared.id}`)).status).toBe(200);
      expect(await inner.tiers.listArchiveAgentIds(shared.id)).toEqual([b.id]);
      expect((await t.req("DELETE", `/v1/agents/${a.id}`)).status).toBe(404);
    } finally {
      await t.kelpie.close();
      await inner.close();
    }
  });
});
