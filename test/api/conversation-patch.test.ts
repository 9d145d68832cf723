// A conversation PATCH during a turn loses none of the turn's context ids. The PATCH sets only
// the fields it names (patch_conversation), inside the agent's mailbox with its fence. Before, it
// read the whole record and wrote it back unfenced: a turn committing between its read and its
// write lost its in-context message ids. Here the model holds its answer until the PATCH's write
// reaches storage (or a moment passes, when the PATCH waits in the mailbox as it should), and that
// write is held until the turn has committed: exactly the interleaving that lost them.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { llmConfigFromEnv } from "../../src/llm/registry.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { SqliteStorage } from "../../src/storage/sqlite.ts";
import type { Mutation, Storage } from "../../src/storage/types.ts";
import { testApp } from "../support/app.ts";
import { type FakeLlm, startFakeLlm } from "../support/fake-llm/server.ts";

const MODEL_HOLD_MS_MAX = 500;
const dir = mkdtempSync(join(tmpdir(), "kelpie-conv-patch-"));
let fake: FakeLlm;
beforeAll(async () => {
  fake = await startFakeLlm();
});
afterAll(async () => {
  await fake.close();
  rmSync(dir, { recursive: true, force: true });
});

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** Holds a conversation write that is not a turn's until a turn's commit has been applied. */
function interleaving(inner: Storage) {
  const patchWriteSeen = deferred();
  const turnCommitted = deferred();
  // A change to an existing conversation and nothing else: the PATCH's write (a turn's carries its
  // messages and step too).
  const isConversationChange = (m: Mutation) =>
    (m.op === "put_conversation" && !m.create) || m.op === "patch_conversation";
  const storage = new Proxy(inner, {
    get(target, prop) {
      if (prop === "commit") {
        return async (mutations: Mutation[], options?: unknown) => {
          const turns = mutations.some((m) => m.op === "put_step");
          if (mutations.length > 0 && mutations.every(isConversationChange)) {
            patchWriteSeen.resolve();
            await turnCommitted.promise;
          }
          await target.commit(mutations, options as never);
          if (turns) turnCommitted.resolve();
        };
      }
      const value = Reflect.get(target, prop);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { storage, patchWriteSeen: patchWriteSeen.promise };
}

const engines: [string, () => Promise<Storage>][] = [
  ["memory", async () => new MemoryStorage()],
  [
    "sqlite",
    async () => {
      const s = new SqliteStorage({ path: join(dir, `c-${Math.random()}.db`) });
      await s.migrate();
      return s;
    },
  ],
];

describe.each(engines)("conversation PATCH during a turn (%s)", (_name, open) => {
  it("keeps every context id the turn committed, and the patched summary", async () => {
    const inner = await open();
    const { storage, patchWriteSeen } = interleaving(inner);
    let modelCalled!: () => void;
    const modelWasCalled = new Promise<void>((r) => {
      modelCalled = r;
    });
    fake.reset();
    fake.script(async () => {
      modelCalled();
      await Promise.race([patchWriteSeen, new Promise((r) => setTimeout(r, MODEL_HOLD_MS_MAX))]);
      return { text: "answered" };
    });
    const t = await testApp(storage, {
      llm: llmConfigFromEnv({ OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` }),
    });
    try {
      const agent = (
        await t.req("POST", "/v1/agents/", { model: "openai/gpt-4o-mini", agent_type: "letta_v1_agent" })
      ).body;
      const conv = (await t.req("POST", `/v1/conversations/?agent_id=${agent.id}`, { summary: "before" }))
        .body;
      const turn = t.req("POST", `/v1/conversations/${conv.id}/messages`, {
        messages: [{ role: "user", content: "hello" }],
        streaming: false,
      });
      await modelWasCalled;
      const patch = t.req("PATCH", `/v1/conversations/${conv.id}`, { summary: "after" });
      const [sent, patched] = await Promise.all([turn, patch]);
      expect(sent.status).toBe(200);
      expect(patched.status).toBe(200);
      const stored = (await inner.getConversation(conv.id))!;
      expect(stored.summary).toBe("after");
      // The turn's input and answer are both in the conversation's context.
      const messages = await inner.getMessages(stored.in_context_message_ids);
      expect(messages.map((m) => m.role)).toEqual(expect.arrayContaining(["user", "assistant"]));
      const ofTurn = (await inner.listMessages(agent.id, { limit: 100, order: "asc" })).filter(
        (m) => m.conversation_id === conv.id,
      );
      expect(ofTurn.length).toBeGreaterThan(0);
      expect(stored.in_context_message_ids).toEqual(expect.arrayContaining(ofTurn.map((m) => m.id)));
      expect(patched.body.summary).toBe("after");
    } finally {
      await t.kelpie.close();
      await inner.close();
    }
  });
});
