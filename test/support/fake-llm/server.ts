// A fake LLM over real HTTP, speaking the genuine wire protocols so tests drive the real SDKs:
//   POST /v1/chat/completions  OpenAI chat completions, JSON or SSE (`data: {...}` chunks, tool_calls
//                              deltas by index, a final usage chunk, `data: [DONE]`)
//   POST /v1/embeddings        OpenAI embeddings (float arrays, or base64 as the SDK asks by default)
//   POST /v1/messages          Anthropic messages, JSON or SSE (message_start, content_block_start,
//                              content_block_delta, content_block_stop, message_delta, message_stop)
// A script decides each reply from the normalized request; the default echoes the last user text.
// Faults are queued per request: an HTTP status, a hang until the client gives up, or tool-call
// arguments that are not valid JSON.
import http from "node:http";
import type { AddressInfo } from "node:net";

export type Protocol = "openai" | "anthropic";

export interface FakeToolCall {
  id: string;
  name: string;
  /** Raw argument text as it came over the wire. */
  args: string;
}

/** A conversation turn, the same whichever protocol carried it. */
export interface FakeMessage {
  role: "user" | "assistant" | "tool";
  text: string;
  toolCalls: FakeToolCall[];
  /** For role "tool": the call it answers, and that call's tool name when known. */
  toolCallId?: string;
  toolName?: string;
  isError?: boolean;
}

export interface FakeTool {
  name: string;
  description: string;
  parameters: Record<string, unknown>;
}

export interface ScriptRequest {
  protocol: Protocol;
  model: string;
  system: string;
  messages: FakeMessage[];
  tools: FakeTool[];
  stream: boolean;
}

export interface Reply {
  text?: string;
  /** Sent as thinking blocks (Anthropic) or `reasoning_content` (OpenAI-compatible servers). */
  reasoning?: string;
  toolCalls?: { name: string; args: object | string }[];
  /** Wait before answering (the client may give up first). */
  delayMs?: number;
  usage?: { inputTokens?: number; outputTokens?: number };
}

export type Script = (req: ScriptRequest) => Reply | Promise<Reply>;

export type Fault = number | "timeout" | "malformed-tool-json";

export interface RecordedRequest {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  body: Record<string, unknown>;
  protocol: Protocol | "embeddings" | "other";
}

export interface FakeLlm {
  /** Base URL without /v1: the Anthropic SDK's base URL; OpenAI clients use `${url}/v1`. */
  url: string;
  requests: RecordedRequest[];
  script(fn: Script): void;
  /** The next `n` model or embedding requests fail with `fault`. 429s carry retry-after (default 1 s). */
  failNext(n: number, fault: Fault, options?: { retryAfterSeconds?: number }): void;
  reset(): void;
  close(): Promise<void>;
}

const RETRY_AFTER_SECONDS_DEFAULT = 1;
const EMBEDDING_DIM_DEFAULT = 1536;
const CHARS_PER_TOKEN = 4;
const FAKE_LLM_KEEP_ALIVE_MS = 10 * 60_000;

export const echoScript: Script = (req) => {
  const lastUser = [...req.messages].reverse().find((m) => m.role === "user");
  return { text: `echo: ${lastUser?.text ?? ""}` };
};

function textOf(content: unknown): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return "";
  return content
    .map((part) =>
      typeof part === "object" && part !== null && part.type === "text" ? String(part.text) : "",
    )
    .join("");
}

function tokensOf(text: string): number {
  return Math.ceil(text.length / CHARS_PER_TOKEN);
}

type Json = any;

function normalizeOpenAi(body: Json): Pick<ScriptRequest, "system" | "messages" | "tools"> {
  const systemParts: string[] = [];
  const messages: FakeMessage[] = [];
  const toolNames = new Map<string, string>();
  for (const m of body.messages ?? []) {
    if (m.role === "system" || m.role === "developer") {
      systemParts.push(textOf(m.content));
    } else if (m.role === "assistant") {
      const toolCalls = (m.tool_calls ?? []).map(
        (c: Json): FakeToolCall => ({ id: c.id, name: c.function?.name, args: c.function?.arguments ?? "" }),
      );
      for (const c of toolCalls) toolNames.set(c.id, c.name);
      messages.push({ role: "assistant", text: textOf(m.content), toolCalls });
    } else if (m.role === "tool") {
      const toolName = toolNames.get(m.tool_call_id);
      messages.push({
        role: "tool",
        text: textOf(m.content),
        toolCalls: [],
        toolCallId: m.tool_call_id,
        ...(toolName === undefined ? {} : { toolName }),
      });
    } else {
      messages.push({ role: "user", text: textOf(m.content), toolCalls: [] });
    }
  }
  const tools = (body.tools ?? []).map(
    (t: Json): FakeTool => ({
      name: t.function?.name,
      description: t.function?.description ?? "",
      parameters: t.function?.parameters ?? {},
    }),
  );
  return { system: systemParts.join("\n"), messages, tools };
}

function normalizeAnthropic(body: Json): Pick<ScriptRequest, "system" | "messages" | "tools"> {
  const messages: FakeMessage[] = [];
  const toolNames = new Map<string, string>();
  for (const m of body.messages ?? []) {
    const blocks: Json[] =
      typeof m.content === "string" ? [{ type: "text", text: m.content }] : (m.content ?? []);
    // Tool results ride in user turns; they come first, then any text of the same turn.
    for (const b of blocks.filter((b) => b.type === "tool_result")) {
      const toolName = toolNames.get(b.tool_use_id);
      messages.push({
        role: "tool",
        text: textOf(b.content),
        toolCalls: [],
        toolCallId: b.tool_use_id,
        ...(toolName === undefined ? {} : { toolName }),
        ...(b.is_error === undefined ? {} : { isError: b.is_error }),
      });
    }
    const rest = blocks.filter((b) => b.type !== "tool_result");
    if (rest.length === 0) continue;
    const toolCalls = rest
      .filter((b) => b.type === "tool_use")
      .map((b): FakeToolCall => ({ id: b.id, name: b.name, args: JSON.stringify(b.input) }));
    for (const c of toolCalls) toolNames.set(c.id, c.name);
    messages.push({ role: m.role === "assistant" ? "assistant" : "user", text: textOf(rest), toolCalls });
  }
  const tools = (body.tools ?? []).map(
    (t: Json): FakeTool => ({
      name: t.name,
      description: t.description ?? "",
      parameters: t.input_schema ?? {},
    }),
  );
  return { system: typeof body.system === "string" ? body.system : textOf(body.system), messages, tools };
}

/** Several deltas per text, so token streaming is observable: one per word, or halves of one word. */
export function splitForStreaming(text: string): string[] {
  const words = text.match(/\S+\s*|\s+/g) ?? [];
  if (words.length > 1) return words;
  if (text.length < 2) return [text];
  const half = Math.ceil(text.length / 2);
  return [text.slice(0, half), text.slice(half)];
}

function splitInThree(text: string): string[] {
  const size = Math.max(1, Math.ceil(text.length / 3));
  const out: string[] = [];
  for (let i = 0; i < text.length; i += size) out.push(text.slice(i, i + size));
  return out;
}

interface PlannedCall {
  id: string;
  name: string;
  args: string;
}

interface Planned {
  text: string;
  reasoning: string;
  calls: PlannedCall[];
  inputTokens: number;
  outputTokens: number;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function hashEmbedding(text: string, dims: number): number[] {
  const v = new Float64Array(dims);
  for (const word of text.toLowerCase().match(/[a-z0-9]+/g) ?? []) {
    let h = 2166136261;
    for (let i = 0; i < word.length; i++) h = Math.imul(h ^ word.charCodeAt(i), 16777619) >>> 0;
    v[h % dims] = (v[h % dims] ?? 0) + (h & 1 ? 1 : -1);
  }
  const norm = Math.hypot(...v) || 1;
  return Array.from(v, (x) => x / norm);
}

export async function startFakeLlm(options: { port?: number } = {}): Promise<FakeLlm> {
  const requests: RecordedRequest[] = [];
  const faults: { fault: Fault; retryAfterSeconds: number }[] = [];
  let script: Script = echoScript;
  let seq = 0;
  const nextId = () => String(++seq).padStart(24, "0");

  function plan(reply: Reply, req: ScriptRequest, malformed: boolean): Planned {
    const calls = (reply.toolCalls ?? []).map((c): PlannedCall => {
      let args = typeof c.args === "string" ? c.args : JSON.stringify(c.args);
      if (malformed) args = args.slice(0, -1); // drop the closing brace: not valid JSON any more
      const id = req.protocol === "openai" ? `call_${nextId()}` : `toolu_01${nextId()}`;
      return { id, name: c.name, args };
    });
    const text = reply.text ?? "";
    const reasoning = reply.reasoning ?? "";
    const promptChars = req.system.length + req.messages.reduce((n, m) => n + m.text.length, 0);
    return {
      text,
      reasoning,
      calls,
      inputTokens: reply.usage?.inputTokens ?? Math.max(1, Math.ceil(promptChars / CHARS_PER_TOKEN)),
      outputTokens:
        reply.usage?.outputTokens ??
        Math.max(1, tokensOf(text + reasoning + calls.map((c) => c.args).join(""))),
    };
  }

  function sendJson(
    res: http.ServerResponse,
    status: number,
    body: unknown,
    headers: Record<string, string> = {},
  ) {
    res.writeHead(status, { "content-type": "application/json", ...headers });
    res.end(JSON.stringify(body));
  }

  function openAiReply(res: http.ServerResponse, body: Json, p: Planned) {
    const id = `chatcmpl-${nextId()}`;
    const model = String(body.model);
    const created = 1_700_000_000;
    const finishReason = p.calls.length > 0 ? "tool_calls" : "stop";
    const usage = {
      prompt_tokens: p.inputTokens,
      completion_tokens: p.outputTokens,
      total_tokens: p.inputTokens + p.outputTokens,
    };
    const toolCalls = p.calls.map((c) => ({
      id: c.id,
      type: "function",
      function: { name: c.name, arguments: c.args },
    }));
    if (!body.stream) {
      const message = {
        role: "assistant",
        content: p.text === "" ? null : p.text,
        refusal: null,
        ...(p.reasoning === "" ? {} : { reasoning_content: p.reasoning }),
        ...(toolCalls.length === 0 ? {} : { tool_calls: toolCalls }),
      };
      sendJson(res, 200, {
        id,
        object: "chat.completion",
        created,
        model,
        choices: [{ index: 0, message, finish_reason: finishReason, logprobs: null }],
        usage,
      });
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
      res.write(
        `data: ${JSON.stringify({ id, object: "chat.completion.chunk", created, model, choices, ...extra })}\n\n`,
      );
    const delta = (d: Record<string, unknown>, finish: string | null = null) =>
      chunk([{ index: 0, delta: d, finish_reason: finish, logprobs: null }]);
    delta({ role: "assistant", content: "", refusal: null });
    for (const piece of p.reasoning === "" ? [] : splitForStreaming(p.reasoning))
      delta({ reasoning_content: piece });
    for (const piece of p.text === "" ? [] : splitForStreaming(p.text)) delta({ content: piece });
    p.calls.forEach((c, index) => {
      delta({
        tool_calls: [{ index, id: c.id, type: "function", function: { name: c.name, arguments: "" } }],
      });
      for (const piece of splitInThree(c.args))
        delta({ tool_calls: [{ index, function: { arguments: piece } }] });
    });
    delta({}, finishReason);
    if (body.stream_options?.include_usage) chunk([], { usage });
    res.end("data: [DONE]\n\n");
  }

  function anthropicReply(res: http.ServerResponse, body: Json, p: Planned, malformed: boolean) {
    const id = `msg_01${nextId()}`;
    const model = String(body.model);
    const stopReason = p.calls.length > 0 ? "tool_use" : "end_turn";
    const content: Json[] = [];
    if (p.reasoning !== "")
      content.push({ type: "thinking", thinking: p.reasoning, signature: "fake-signature" });
    if (p.text !== "") content.push({ type: "text", text: p.text, citations: null });
    for (const c of p.calls) {
      // The real API always sends an object; a malformed fault can only send the raw text.
      content.push({
        type: "tool_use",
        id: c.id,
        name: c.name,
        input: malformed ? c.args : JSON.parse(c.args),
      });
    }
    if (!body.stream) {
      sendJson(res, 200, {
        id,
        type: "message",
        role: "assistant",
        model,
        content,
        stop_reason: stopReason,
        stop_sequence: null,
        usage: {
          input_tokens: p.inputTokens,
          output_tokens: p.outputTokens,
          cache_creation_input_tokens: null,
          cache_read_input_tokens: null,
        },
      });
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    const event = (type: string, data: Record<string, unknown>) =>
      res.write(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`);
    event("message_start", {
      message: {
        id,
        type: "message",
        role: "assistant",
        model,
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: { input_tokens: p.inputTokens, output_tokens: 1 },
      },
    });
    event("ping", {});
    content.forEach((block, index) => {
      if (block.type === "thinking") {
        event("content_block_start", {
          index,
          content_block: { type: "thinking", thinking: "", signature: "" },
        });
        for (const piece of splitForStreaming(block.thinking)) {
          event("content_block_delta", { index, delta: { type: "thinking_delta", thinking: piece } });
        }
        event("content_block_delta", {
          index,
          delta: { type: "signature_delta", signature: block.signature },
        });
      } else if (block.type === "text") {
        event("content_block_start", { index, content_block: { type: "text", text: "", citations: null } });
        for (const piece of splitForStreaming(block.text)) {
          event("content_block_delta", { index, delta: { type: "text_delta", text: piece } });
        }
      } else {
        const args = typeof block.input === "string" ? block.input : JSON.stringify(block.input);
        event("content_block_start", {
          index,
          content_block: { type: "tool_use", id: block.id, name: block.name, input: {} },
        });
        for (const piece of splitInThree(args)) {
          event("content_block_delta", { index, delta: { type: "input_json_delta", partial_json: piece } });
        }
      }
      event("content_block_stop", { index });
    });
    event("message_delta", {
      delta: { stop_reason: stopReason, stop_sequence: null },
      usage: { output_tokens: p.outputTokens },
    });
    event("message_stop", {});
    res.end();
  }

  function faultReply(
    res: http.ServerResponse,
    protocol: RecordedRequest["protocol"],
    status: number,
    retryAfterSeconds: number,
  ) {
    const headers: Record<string, string> =
      status === 429 ? { "retry-after": String(retryAfterSeconds) } : {};
    const message = `injected fault: HTTP ${status}`;
    if (protocol === "anthropic") {
      const type =
        status === 429 ? "rate_limit_error" : status >= 500 ? "api_error" : "invalid_request_error";
      sendJson(res, status, { type: "error", error: { type, message } }, headers);
    } else {
      const type = status >= 500 ? "server_error" : "invalid_request_error";
      sendJson(res, status, { error: { message, type, param: null, code: null } }, headers);
    }
  }

  function embeddingsReply(res: http.ServerResponse, body: Json) {
    const inputs: string[] = Array.isArray(body.input) ? body.input.map(String) : [String(body.input)];
    const dims = typeof body.dimensions === "number" ? body.dimensions : EMBEDDING_DIM_DEFAULT;
    const data = inputs.map((text, index) => {
      const vector = hashEmbedding(text, dims);
      // The official SDK asks for base64 (little-endian float32) unless told otherwise, and decodes it.
      const embedding =
        body.encoding_format === "base64"
          ? Buffer.from(new Float32Array(vector).buffer).toString("base64")
          : vector;
      return { object: "embedding", index, embedding };
    });
    const promptTokens = inputs.reduce((n, t) => n + tokensOf(t), 0);
    sendJson(res, 200, {
      object: "list",
      model: body.model,
      data,
      usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
    });
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse) {
    let raw = "";
    for await (const piece of req) raw += piece;
    let body: Json = {};
    try {
      body = raw === "" ? {} : JSON.parse(raw);
    } catch {
      sendJson(res, 400, { error: { message: "request body is not JSON", type: "invalid_request_error" } });
      return;
    }
    const path = (req.url ?? "/").split("?")[0]!.replace(/\/+$/, "");
    const protocol: RecordedRequest["protocol"] = path.endsWith("/chat/completions")
      ? "openai"
      : path.endsWith("/messages")
        ? "anthropic"
        : path.endsWith("/embeddings")
          ? "embeddings"
          : "other";
    requests.push({ method: req.method ?? "GET", path, headers: req.headers, body, protocol });
    if (protocol === "other") {
      if (path.endsWith("/models")) {
        sendJson(res, 200, {
          object: "list",
          data: [{ id: "gpt-4o-mini", object: "model", owned_by: "fake" }],
        });
      } else {
        sendJson(res, 404, { error: { message: `no route ${path}`, type: "not_found_error" } });
      }
      return;
    }
    const next = faults.shift();
    if (next?.fault === "timeout") return; // hang: the response stays open until the client gives up
    if (typeof next?.fault === "number") return faultReply(res, protocol, next.fault, next.retryAfterSeconds);
    if (protocol === "embeddings") return embeddingsReply(res, body);
    const normalized = protocol === "openai" ? normalizeOpenAi(body) : normalizeAnthropic(body);
    const scriptRequest: ScriptRequest = {
      protocol,
      model: String(body.model),
      stream: body.stream === true,
      ...normalized,
    };
    const reply = await script(scriptRequest);
    if (reply.delayMs !== undefined) await sleep(reply.delayMs);
    if (res.destroyed) return; // the client went away while we waited
    const malformed = next?.fault === "malformed-tool-json";
    const planned = plan(reply, scriptRequest, malformed);
    if (protocol === "openai") openAiReply(res, body, planned);
    else anthropicReply(res, body, planned, malformed);
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent)
        sendJson(res, 500, { error: { message: `fake-llm bug: ${String(err)}`, type: "server_error" } });
      else res.destroy();
    });
  });
  // Idle keep-alive sockets stay open longer than any test: a server-side close racing the
  // client's reuse of the socket would fail an LLM call for reasons no test is about.
  server.keepAliveTimeout = FAKE_LLM_KEEP_ALIVE_MS;
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    script(fn) {
      script = fn;
    },
    failNext(n, fault, faultOptions) {
      for (let i = 0; i < n; i++) {
        faults.push({
          fault,
          retryAfterSeconds: faultOptions?.retryAfterSeconds ?? RETRY_AFTER_SECONDS_DEFAULT,
        });
      }
    },
    reset() {
      requests.length = 0;
      faults.length = 0;
      script = echoScript;
    },
    close() {
      server.closeAllConnections();
      return new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
    },
  };
}
