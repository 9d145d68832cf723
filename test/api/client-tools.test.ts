// Client-side tools (Letta's client_tools, as letta-code sends them): the model sees them, a call
// to one pauses the turn with an approval request, and the client's result resumes it.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { llmConfigFromEnv } from "../../src/llm/registry.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { type TestApp, testApp } from "../support/app.ts";
import { type FakeLlm, type ScriptRequest, startFakeLlm } from "../support/fake-llm/server.ts";

let fake: FakeLlm;
let t: TestApp;
const seen: ScriptRequest[] = [];

const READ_FILE = {
  name: "read_file",
  description: "Read a file on the user's machine.",
  parameters: { type: "object", properties: { path: { type: "string" } }, required: ["path"] },
};

beforeAll(async () => {
  fake = await startFakeLlm();
});
afterAll(async () => {
  await fake.close();
});
beforeEach(async () => {
  fake.reset();
  seen.length = 0;
  fake.script((req) => {
    seen.push(req);
    const last = req.messages.at(-1)!;
    if (last.role === "tool") return { text: `the file says: ${last.text}` };
    return { toolCalls: [{ name: "read_file", args: { path: "/notes.txt" } }] };
  });
  t = await testApp(new MemoryStorage(), {
    llm: llmConfigFromEnv({ OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` }),
  });
});
afterEach(async () => {
  await t.kelpie.close();
});

describe("client tools", () => {
  it("pause the turn with an approval request and resume it with the client's result", async () => {
    const agent = (
      await t.req("POST", "/v1/agents/", { model: "openai/gpt-4o-mini", agent_type: "letta_v1_agent" })
    ).body;
    const first = await t.req("POST", `/v1/agents/${agent.id}/messages`, {
      messages: [{ role: "user", content: "what is in my notes?" }],
      client_tools: [READ_FILE],
    });
    expect(first.status).toBe(200);
    expect(seen[0]!.tools.map((x) => x.name)).toContain("read_file");
    expect(first.body.stop_reason.stop_reason).toBe("requires_approval");
    const request = first.body.messages.find((m: any) => m.message_type === "approval_request_message");
    expect(request.tool_call).toMatchObject({ name: "read_file", arguments: '{"path":"/notes.txt"}' });
    const callId = request.tool_call.tool_call_id as string;

    // Nothing else may happen until the call is answered, and only a pending call can be answered.
    const blocked = await t.req("POST", `/v1/agents/${agent.id}/messages`, {
      messages: [{ role: "user", content: "never mind" }],
    });
    expect(blocked.status).toBe(409);
    expect(blocked.body.detail).toContain(callId);
    const wrong = await t.req("POST", `/v1/agents/${agent.id}/messages`, {
      messages: [
        { type: "approval", approvals: [{ type: "tool", tool_call_id: "call_nope", tool_return: "x" }] },
      ],
    });
    expect(wrong.status).toBe(422);

    const resumed = await t.req("POST", `/v1/agents/${agent.id}/messages`, {
      messages: [
        {
          type: "approval",
          approvals: [{ type: "tool", tool_call_id: callId, tool_return: "buy milk", status: "success" }],
        },
      ],
      client_tools: [READ_FILE],
    });
    expect(resumed.status).toBe(200);
    expect(resumed.body.stop_reason.stop_reason).toBe("end_turn");
    expect(resumed.body.messages.find((m: any) => m.message_type === "assistant_message").content).toContain(
      "buy milk",
    );
    // The model saw the call and its result in order.
    const history = seen.at(-1)!.messages;
    expect(history.at(-1)).toMatchObject({ role: "tool", toolCallId: callId, toolName: "read_file" });

    // The stored history shows the request, the result, and the answer.
    const listed = (await t.req("GET", `/v1/agents/${agent.id}/messages?order=asc`)).body;
    const types = listed.map((m: any) => m.message_type);
    expect(types).toEqual([
      "user_message",
      "approval_request_message",
      "tool_return_message",
      "assistant_message",
    ]);
    expect(listed[2]).toMatchObject({ tool_call_id: callId, status: "success" });
  });

  it("a denied call reaches the model as a failed tool call", async () => {
    const agent = (
      await t.req("POST", "/v1/agents/", { model: "openai/gpt-4o-mini", agent_type: "letta_v1_agent" })
    ).body;
    const first = await t.req("POST", `/v1/agents/${agent.id}/messages`, {
      messages: [{ role: "user", content: "read it" }],
      client_tools: [READ_FILE],
    });
    const callId = first.body.messages.find((m: any) => m.message_type === "approval_request_message")
      .tool_call.tool_call_id;
    const denied = await t.req("POST", `/v1/agents/${agent.id}/messages`, {
      messages: [
        {
          type: "approval",
          approvals: [{ type: "approval", tool_call_id: callId, approve: false, reason: "private" }],
        },
      ],
    });
    expect(denied.status).toBe(200);
    expect(seen.at(-1)!.messages.at(-1)).toMatchObject({ role: "tool", toolCallId: callId });
    expect(seen.at(-1)!.messages.at(-1)!.text).toContain("denied");
    const bad = await t.req("POST", `/v1/agents/${agent.id}/messages`, {
      messages: [{ role: "user", content: "x" }],
      client_tools: [{ name: "bad name!" }],
    });
    expect(bad.status).toBe(422);
  });
});
