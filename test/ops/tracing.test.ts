// A small OTLP/HTTP receiver sees the span tree of one message request:
// HTTP request → actor invoke → agent step → LLM call and storage commit, all in one trace.
import { createServer, type Server } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { llmConfigFromEnv } from "../../src/llm/registry.ts";
import { tracingFromEnv } from "../../src/observability/tracing.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { testApp } from "../support/app.ts";
import { type FakeLlm, startFakeLlm } from "../support/fake-llm/server.ts";

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: { key: string; value: { stringValue?: string; intValue?: string | number } }[];
}

let fake: FakeLlm;
let receiver: Server;
let receiverUrl = "";
const spans: OtlpSpan[] = [];

beforeAll(async () => {
  fake = await startFakeLlm();
  receiver = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      if (req.url === "/v1/traces") {
        const json = JSON.parse(body);
        for (const rs of json.resourceSpans ?? [])
          for (const ss of rs.scopeSpans ?? []) spans.push(...ss.spans);
      }
      res.writeHead(200, { "content-type": "application/json" });
      res.end("{}");
    });
  });
  await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", r));
  const address = receiver.address();
  receiverUrl = `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}`;
});
afterAll(async () => {
  await fake.close();
  receiver.close();
});

describe("OpenTelemetry tracing", () => {
  it("exports the span tree of one message request", async () => {
    const tracing = tracingFromEnv(
      { OTEL_EXPORTER_OTLP_ENDPOINT: receiverUrl, OTEL_BSP_SCHEDULE_DELAY: "50" },
      "test",
    );
    expect(tracing).not.toBeNull();
    const t = await testApp(new MemoryStorage(), {
      llm: llmConfigFromEnv({ OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` }),
      observability: { tracing },
    });
    fake.script(() => ({ toolCalls: [{ name: "send_message", args: { message: "traced" } }] }));
    const agent = (await t.req("POST", "/v1/agents/", { model: "openai/gpt-4o-mini" })).body;
    expect((await t.req("POST", `/v1/agents/${agent.id}/messages`, { input: "trace me" })).status).toBe(200);
    // A request that carries a trace context (another node forwarding it) continues that trace.
    const callerTraceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const callerSpanId = "00f067aa0ba902b7";
    const forwarded = await t.kelpie.app.inject({
      method: "GET",
      url: `/v1/agents/${agent.id}`,
      headers: { traceparent: `00-${callerTraceId}-${callerSpanId}-01` },
    });
    expect(forwarded.statusCode).toBe(200);
    for (
      let i = 0;
      i < 100 &&
      !(spans.some((s) => s.name === "llm.call") && spans.some((s) => s.traceId === callerTraceId));
      i++
    )
      await new Promise((r) => setTimeout(r, 50));
    await t.kelpie.close();
    expect(spans.find((s) => s.traceId === callerTraceId)).toMatchObject({
      name: "GET /v1/agents/:agent_id",
      parentSpanId: callerSpanId,
    });
    const root = spans.find((s) => s.name === "POST /v1/agents/:agent_id/messages");
    expect(root, JSON.stringify(spans.map((s) => s.name))).toBeDefined();
    const inTrace = spans.filter((s) => s.traceId === root!.traceId);
    const byId = new Map(inTrace.map((s) => [s.spanId, s]));
    const ancestors = (s: OtlpSpan) => {
      const names: string[] = [];
      let parent = s.parentSpanId ? byId.get(s.parentSpanId) : undefined;
      while (parent) {
        names.push(parent.name);
        parent = parent.parentSpanId ? byId.get(parent.parentSpanId) : undefined;
      }
      return names;
    };
    const llm = inTrace.find((s) => s.name === "llm.call")!;
    expect(ancestors(llm)).toEqual(["agent.step", "actor.invoke", root!.name]);
    // The model call carries the model and its token counts; times are real and ordered.
    const attribute = (s: OtlpSpan, key: string) => s.attributes.find((a) => a.key === key)?.value;
    expect(attribute(llm, "model")).toEqual({ stringValue: "gpt-4o-mini" });
    expect(Number(attribute(llm, "gen_ai.usage.input_tokens")?.intValue)).toBeGreaterThan(0);
    expect(BigInt(llm.endTimeUnixNano)).toBeGreaterThanOrEqual(BigInt(llm.startTimeUnixNano));
    expect(BigInt(llm.startTimeUnixNano)).toBeGreaterThanOrEqual(BigInt(root!.startTimeUnixNano));
    expect(Number(root!.startTimeUnixNano) / 1e6).toBeGreaterThan(Date.now() - 60_000);
    expect(root!.kind).toBe(2); // SERVER
    const commit = inTrace.find((s) => s.name === "storage.commit" && ancestors(s).includes("agent.step"));
    expect(commit).toBeDefined();
    expect(inTrace.some((s) => s.name === "tool.run")).toBe(true);
  });
});
