// kelpie chat: an interactive terminal chat with one agent on a Kelpie (or Letta) server, over the
// public HTTP API only. Replies stream token by token; tool calls show as one compact line each,
// memory edits highlighted; slash commands inspect the agent. Node built-ins only (readline, fetch).
import { createInterface, type Interface } from "node:readline";
import { parseArgs } from "node:util";
import { readSse } from "./sse.ts";

export const CHAT_URL_DEFAULT = "http://127.0.0.1:8283";
export const CHAT_MODEL_DEFAULT = "openai/gpt-4o-mini";
/** Plain API calls (not the reply stream, which takes as long as the agent does). */
const REQUEST_TIMEOUT_MS = 30_000;
/** One page of agents is plenty to pick from in a terminal. */
const AGENTS_FETCHED_MAX = 100;
const AGENTS_LISTED_MAX = 20;
/** Tool lines stay on one terminal line: long argument values and results are cut. */
const ARG_VALUE_CHARS_MAX = 40;
const TOOL_ARGS_CHARS_MAX = 100;
const TOOL_RESULT_CHARS_MAX = 80;
const ERROR_BODY_CHARS_MAX = 500;

const PERSONA_DEFAULT = "I am a helpful assistant. I keep what I learn about the user in my memory.";
const HUMAN_DEFAULT = "Nothing is known about the user yet.";

/** Tools that change the agent's memory: their lines are highlighted, since they change what it knows. */
const MEMORY_EDIT_TOOLS = new Set([
  "core_memory_append",
  "core_memory_replace",
  "memory_insert",
  "memory_replace",
  "memory_rethink",
  "memory_apply_patch",
  "memory",
  "archival_memory_insert",
  "working_memory_set",
  "working_memory_delete",
]);

/** Tool arguments the user never needs to see. */
const HIDDEN_ARGS = new Set(["request_heartbeat"]);

export const CHAT_USAGE = `usage: kelpie chat [--url URL] [--agent ID|NAME] [--new] [--model HANDLE]
  --url URL        server (default: $KELPIE_URL, $LETTA_BASE_URL, or ${CHAT_URL_DEFAULT})
  --agent ID|NAME  talk to this agent (with --new: the new agent's name)
  --new            create a new agent (also done when the server has none)
  --model HANDLE   model for a new agent (default ${CHAT_MODEL_DEFAULT})
Without --agent or --new: pick from the agents listed (Enter takes the most recently updated).
The API key comes from $KELPIE_API_KEY or $LETTA_API_KEY.`;

const HELP = `commands:
  /memory   the agent's core memory blocks (label, chars/limit, value)
  /agent    which agent this is
  /help     this list
  /quit     leave (also /exit, Ctrl-D; Ctrl-C stops a reply, or leaves at the prompt)`;

export interface ChatOptions {
  url: string;
  apiKey: string | undefined;
  agent: string | undefined;
  new: boolean;
  model: string;
  help: boolean;
}

export function parseChatArgs(args: string[], env: NodeJS.ProcessEnv): ChatOptions {
  const { values } = parseArgs({
    args,
    options: {
      url: { type: "string" },
      agent: { type: "string" },
      new: { type: "boolean", default: false },
      model: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  const url = values.url ?? nonEmpty(env.KELPIE_URL) ?? nonEmpty(env.LETTA_BASE_URL) ?? CHAT_URL_DEFAULT;
  return {
    url: url.replace(/\/+$/, ""),
    apiKey: nonEmpty(env.KELPIE_API_KEY) ?? nonEmpty(env.LETTA_API_KEY),
    agent: values.agent,
    new: values.new === true,
    model: values.model ?? CHAT_MODEL_DEFAULT,
    help: values.help === true,
  };
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : value;
}

// ---- output styling ----

export interface Style {
  dim(s: string): string;
  bold(s: string): string;
  red(s: string): string;
  green(s: string): string;
  cyan(s: string): string;
  magenta(s: string): string;
}

/** Colours only on a terminal, and never when NO_COLOR is set (https://no-color.org). */
export function useColors(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv): boolean {
  return stream.isTTY === true && nonEmpty(env.NO_COLOR) === undefined && env.TERM !== "dumb";
}

export function styleFor(colors: boolean): Style {
  const sgr = (on: number, off: number) => (s: string) => (colors ? `\x1b[${on}m${s}\x1b[${off}m` : s);
  return {
    dim: sgr(2, 22),
    bold: sgr(1, 22),
    red: sgr(31, 39),
    green: sgr(32, 39),
    cyan: sgr(36, 39),
    magenta: sgr(35, 39),
  };
}

// ---- the server ----

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface AgentInfo {
  id: string;
  name: string;
  model?: string | null;
  updated_at?: string;
}

interface BlockInfo {
  label: string;
  value: string;
  limit: number;
}

/** One event of the reply stream: a Letta message, stop reason, usage, error or ping. */
export type LettaEvent = Record<string, unknown> & { message_type?: string };

/** The words of an error response: FastAPI's `{"detail": ...}` (a string or `[{loc, msg}]`) when it is one. */
async function apiError(res: Response): Promise<ApiError> {
  const text = await res.text().catch(() => "");
  let detail = text.slice(0, ERROR_BODY_CHARS_MAX);
  try {
    const body = JSON.parse(text) as { detail?: unknown };
    if (typeof body.detail === "string") detail = body.detail;
    else if (Array.isArray(body.detail)) {
      detail = body.detail
        .map((d: { loc?: unknown[]; msg?: string }) =>
          d.loc ? `${d.loc.slice(1).join(".")}: ${d.msg ?? ""}` : String(d.msg ?? ""),
        )
        .join("; ");
    }
  } catch {}
  return new ApiError(res.status, `HTTP ${res.status}${detail ? `: ${detail}` : ""}`);
}

/** A readable cause: fetch hides the socket error (ECONNREFUSED, ...) in `cause`. */
export function describeError(err: unknown): string {
  if (err instanceof ApiError) return err.message;
  if (err instanceof Error) {
    const cause = err.cause instanceof Error ? err.cause.message : "";
    if (err.name === "TimeoutError") return "the server did not answer in time";
    return cause ? `${err.message} (${cause})` : err.message;
  }
  return String(err);
}

export class ChatClient {
  constructor(
    readonly baseUrl: string,
    private readonly apiKey: string | undefined,
  ) {}

  private headers(json: boolean): Record<string, string> {
    return {
      ...(json ? { "content-type": "application/json" } : {}),
      ...(this.apiKey ? { authorization: `Bearer ${this.apiKey}` } : {}),
    };
  }

  async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await fetch(`${this.baseUrl}${path}`, {
      method,
      headers: this.headers(body !== undefined),
      body: body === undefined ? null : JSON.stringify(body),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    if (!res.ok) throw await apiError(res);
    return (await res.json()) as T;
  }

  /** Sends one user message and yields the reply's events as they stream; throws if the stream breaks off. */
  async *send(agentId: string, text: string, signal: AbortSignal): AsyncGenerator<LettaEvent> {
    const res = await fetch(`${this.baseUrl}/v1/agents/${encodeURIComponent(agentId)}/messages/stream`, {
      method: "POST",
      headers: { ...this.headers(true), accept: "text/event-stream" },
      body: JSON.stringify({ messages: [{ role: "user", content: text }], stream_tokens: true }),
      signal,
    });
    if (!res.ok) throw await apiError(res);
    if (res.body === null) throw new Error("the server sent no reply stream");
    for await (const event of readSse(res.body)) {
      if (event.data === "[DONE]") return;
      let parsed: unknown;
      try {
        parsed = JSON.parse(event.data);
      } catch {
        continue; // not one of Letta's events: nothing to show
      }
      if (parsed !== null && typeof parsed === "object") yield parsed as LettaEvent;
    }
    throw new Error("the reply stream ended early (the server may have stopped)");
  }
}

// ---- rendering a reply ----

function cut(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, " ").trim();
}

/** `label="human", content="The user is A…"`: JSON values, long strings cut, the whole list bounded. */
export function formatToolArgs(argsJson: string): string {
  let args: unknown;
  try {
    args = JSON.parse(argsJson);
  } catch {
    return cut(oneLine(argsJson), TOOL_ARGS_CHARS_MAX);
  }
  if (args === null || typeof args !== "object" || Array.isArray(args)) {
    return cut(JSON.stringify(args), TOOL_ARGS_CHARS_MAX);
  }
  const parts: string[] = [];
  let length = 0;
  for (const [key, value] of Object.entries(args)) {
    if (HIDDEN_ARGS.has(key)) continue;
    const shown =
      typeof value === "string"
        ? JSON.stringify(cut(value, ARG_VALUE_CHARS_MAX))
        : cut(JSON.stringify(value) ?? "null", ARG_VALUE_CHARS_MAX);
    const part = `${key}=${shown}`;
    if (length + part.length > TOOL_ARGS_CHARS_MAX) {
      parts.push("…");
      break;
    }
    parts.push(part);
    length += part.length + 2;
  }
  return parts.join(", ");
}

export function isMemoryEdit(toolName: string): boolean {
  return MEMORY_EDIT_TOOLS.has(toolName);
}

interface PendingCall {
  name: string;
  args: string;
}

/**
 * Writes one reply's events to the terminal. Token chunks of a message share its id: a new id (or
 * kind) starts a new line. Tool calls are held until their return arrives, then shown as one line.
 */
export class ReplyRenderer {
  private open: { kind: string; id: string } | null = null;
  private readonly calls = new Map<string, PendingCall>();
  private stopReason: string | null = null;

  constructor(
    private readonly write: (text: string) => void,
    private readonly style: Style,
    private readonly agentName: string,
  ) {}

  handle(event: LettaEvent): void {
    const id = typeof event.id === "string" ? event.id : "";
    switch (event.message_type) {
      case "assistant_message":
        this.text("assistant", id, contentText(event.content));
        break;
      case "reasoning_message":
        this.text("reasoning", id, typeof event.reasoning === "string" ? event.reasoning : "");
        break;
      case "hidden_reasoning_message":
        this.text("reasoning", id, "(hidden reasoning)");
        break;
      case "tool_call_message":
      case "approval_request_message": {
        const call = event.tool_call as
          | { name?: string; arguments?: string; tool_call_id?: string }
          | undefined;
        if (call === undefined) break;
        const key = call.tool_call_id ?? id;
        const pending = this.calls.get(key);
        if (pending === undefined)
          this.calls.set(key, { name: call.name ?? "tool", args: call.arguments ?? "" });
        else pending.args += call.arguments ?? "";
        if (event.message_type === "approval_request_message") {
          this.toolLine(key, "needs approval (not supported in kelpie chat)");
        }
        break;
      }
      case "tool_return_message": {
        const key = typeof event.tool_call_id === "string" ? event.tool_call_id : "";
        const value =
          typeof event.tool_return === "string" ? event.tool_return : JSON.stringify(event.tool_return);
        const pending = this.calls.get(key);
        // A call never announced was speech (send_message), already shown as the agent's words.
        if (pending === undefined && event.status !== "error") break;
        const name = pending?.name ?? (typeof event.name === "string" ? event.name : "tool");
        const failed = event.status === "error";
        let result = `ok: ${cut(oneLine(value), TOOL_RESULT_CHARS_MAX)}`;
        if (failed) result = `error: ${cut(oneLine(value), TOOL_RESULT_CHARS_MAX)}`;
        else if (isMemoryEdit(name) || ["", "None", "null", "OK"].includes(value.trim())) result = "ok";
        this.toolLine(key, result, { failed, name });
        break;
      }
      case "error_message": {
        const message = [event.message, event.detail].find((m) => typeof m === "string" && m !== "");
        this.line(this.style.red(`error: ${String(message ?? "the agent failed")}`));
        break;
      }
      case "stop_reason":
        this.stopReason = typeof event.stop_reason === "string" ? event.stop_reason : null;
        break;
      default:
        break; // usage_statistics, ping, user_message: nothing to show
    }
  }

  /** Ends the reply: calls that got no return are shown as such; an unusual stop is named. */
  finish(): void {
    for (const key of [...this.calls.keys()]) this.toolLine(key, "no result");
    if (this.stopReason !== null && this.stopReason !== "end_turn") {
      this.line(this.style.dim(`(stopped: ${this.stopReason})`));
    }
    this.closeLine();
  }

  private text(kind: "assistant" | "reasoning", id: string, text: string): void {
    if (text === "") return;
    if (this.open?.kind !== kind || this.open.id !== id) {
      this.closeLine();
      this.write(
        kind === "assistant"
          ? `${this.style.bold(this.style.cyan(`${this.agentName}>`))} `
          : this.style.dim("thinking: "),
      );
      this.open = { kind, id };
    }
    this.write(kind === "assistant" ? text : this.style.dim(text));
  }

  /** `⚙ name(args) → result` on one line: dim, memory edits highlighted, failures red. */
  private toolLine(key: string, result: string, options: { failed?: boolean; name?: string } = {}): void {
    const call = this.calls.get(key) ?? { name: options.name ?? "tool", args: "" };
    this.calls.delete(key);
    const head = `⚙ ${call.name}(${formatToolArgs(call.args)}) → `;
    const paint = isMemoryEdit(call.name)
      ? (s: string) => this.style.bold(this.style.magenta(s))
      : this.style.dim;
    this.line(`${paint(head)}${options.failed ? this.style.red(result) : paint(result)}`);
  }

  private line(text: string): void {
    this.closeLine();
    this.write(`${text}\n`);
  }

  private closeLine(): void {
    if (this.open !== null) this.write("\n");
    this.open = null;
  }
}

function contentText(content: unknown): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return "";
  return content
    .map((p) => (p && typeof p === "object" && typeof p.text === "string" ? p.text : ""))
    .join("");
}

// ---- the terminal ----

/** Lines from readline as a queue: typed ahead while a reply streams, they wait their turn. Null at EOF. */
class LineReader {
  private readonly lines: string[] = [];
  private waiting: ((line: string | null) => void) | null = null;
  private closed = false;

  constructor(rl: Interface) {
    rl.on("line", (line) => {
      const waiting = this.waiting;
      this.waiting = null;
      if (waiting) waiting(line);
      else this.lines.push(line);
    });
    rl.on("close", () => {
      this.closed = true;
      this.waiting?.(null);
      this.waiting = null;
    });
  }

  next(): Promise<string | null> {
    const line = this.lines.shift();
    if (line !== undefined) return Promise.resolve(line);
    if (this.closed) return Promise.resolve(null);
    return new Promise((resolve) => {
      this.waiting = resolve;
    });
  }
}

interface Terminal {
  style: Style;
  say(text: string): void;
  ask(prompt: string): Promise<string | null>;
  interactive: boolean;
}

async function createAgent(client: ChatClient, options: ChatOptions, term: Terminal): Promise<AgentInfo> {
  const agent = await client.json<AgentInfo>("POST", "/v1/agents/", {
    ...(options.agent === undefined ? {} : { name: options.agent }),
    model: options.model,
    memory_blocks: [
      { label: "persona", value: PERSONA_DEFAULT },
      { label: "human", value: HUMAN_DEFAULT },
    ],
  });
  term.say(term.style.dim(`created agent ${agent.name} (${agent.id})`));
  return agent;
}

function byRecentUpdate(agents: AgentInfo[]): AgentInfo[] {
  const at = (a: AgentInfo) => Date.parse(a.updated_at ?? "") || 0;
  return [...agents].sort((a, b) => at(b) - at(a));
}

/** `--agent` is an id, or else a name; of several agents with that name, the most recently updated. */
async function findAgent(client: ChatClient, wanted: string, term: Terminal): Promise<AgentInfo> {
  try {
    return await client.json<AgentInfo>("GET", `/v1/agents/${encodeURIComponent(wanted)}`);
  } catch (err) {
    if (!(err instanceof ApiError) || (err.status !== 404 && err.status !== 422)) throw err;
  }
  const named = await client.json<AgentInfo[]>(
    "GET",
    `/v1/agents/?name=${encodeURIComponent(wanted)}&limit=${AGENTS_FETCHED_MAX}`,
  );
  const [first] = byRecentUpdate(named);
  if (first === undefined) throw new Error(`no agent with id or name '${wanted}' (--new creates one)`);
  if (named.length > 1)
    term.say(term.style.dim(`${named.length} agents are named ${wanted}: taking the most recently updated`));
  return first;
}

async function chooseAgent(client: ChatClient, options: ChatOptions, term: Terminal): Promise<AgentInfo> {
  if (options.new) return createAgent(client, options, term);
  if (options.agent !== undefined) return findAgent(client, options.agent, term);
  const agents = byRecentUpdate(
    await client.json<AgentInfo[]>("GET", `/v1/agents/?limit=${AGENTS_FETCHED_MAX}`),
  );
  const [latest] = agents;
  if (latest === undefined) {
    term.say(term.style.dim("the server has no agents yet"));
    return createAgent(client, options, term);
  }
  if (!term.interactive) return latest;
  const shown = agents.slice(0, AGENTS_LISTED_MAX);
  term.say("agents, most recently updated first:");
  for (const [i, a] of shown.entries()) {
    term.say(
      `  ${String(i + 1).padStart(2)}) ${term.style.bold(a.name)} ${term.style.dim(`${a.id}  ${a.model ?? ""}`)}`,
    );
  }
  for (;;) {
    const answer = await term.ask(`pick 1-${shown.length} (Enter: 1, n: new agent): `);
    if (answer === null) throw new Error("no agent chosen");
    const text = answer.trim().toLowerCase();
    if (text === "") return latest;
    if (text === "n" || text === "new") return createAgent(client, options, term);
    const picked = shown[Number(text) - 1];
    if (/^\d+$/.test(text) && picked !== undefined) return picked;
  }
}

async function printMemory(client: ChatClient, agent: AgentInfo, term: Terminal): Promise<void> {
  const blocks = await client.json<BlockInfo[]>(
    "GET",
    `/v1/agents/${encodeURIComponent(agent.id)}/core-memory/blocks`,
  );
  if (blocks.length === 0) term.say(term.style.dim("(no core memory blocks)"));
  for (const block of blocks) {
    term.say(
      `${term.style.bold(block.label)} ${term.style.dim(`(${block.value.length}/${block.limit} chars)`)}`,
    );
    const lines = block.value === "" ? [term.style.dim("(empty)")] : block.value.split("\n");
    for (const line of lines) term.say(`  ${line}`);
  }
}

export async function chatCommand(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let options: ChatOptions;
  try {
    options = parseChatArgs(args, env);
  } catch (err) {
    console.error(`kelpie chat: ${describeError(err)}\n${CHAT_USAGE}`);
    return 2;
  }
  if (options.help) {
    console.log(CHAT_USAGE);
    return 0;
  }
  const style = styleFor(useColors(process.stdout, env));
  const client = new ChatClient(options.url, options.apiKey);
  const rl = createInterface({ input: process.stdin, output: process.stdout });
  const lines = new LineReader(rl);
  const say = (text: string) => process.stdout.write(`${text}\n`);
  const term: Terminal = {
    style,
    say,
    interactive: process.stdin.isTTY === true,
    ask: (prompt) => {
      rl.setPrompt(prompt);
      rl.prompt();
      return lines.next();
    },
  };
  // Ctrl-C stops the reply in flight (and its run on the server); at the prompt it leaves.
  let inFlight: { controller: AbortController; agentId: string } | null = null;
  rl.on("SIGINT", () => {
    if (inFlight === null) {
      process.stdout.write("\n");
      rl.close();
      return;
    }
    const { controller, agentId } = inFlight;
    controller.abort();
    client.json("POST", `/v1/agents/${encodeURIComponent(agentId)}/messages/cancel`, {}).catch(() => {});
  });

  try {
    let agent: AgentInfo;
    try {
      agent = await chooseAgent(client, options, term);
    } catch (err) {
      console.error(`kelpie chat: ${describeError(err)} (server ${options.url})`);
      return 1;
    }
    say(
      `${style.bold(`chatting with ${agent.name}`)} ${style.dim(`(${agent.id}, ${agent.model ?? "?"}) at ${options.url}`)}`,
    );
    say(style.dim("/help lists commands; /quit or Ctrl-D leaves"));
    for (;;) {
      const line = await term.ask(style.bold(style.green("you> ")));
      if (line === null) {
        process.stdout.write("\n");
        break;
      }
      const text = line.trim();
      if (text === "") continue;
      if (text.startsWith("/")) {
        const [command] = text.split(/\s+/);
        if (command === "/quit" || command === "/exit") break;
        if (command === "/help") say(HELP);
        else if (command === "/agent")
          say(`${agent.name} ${style.dim(`${agent.id}, ${agent.model ?? "?"}, at ${options.url}`)}`);
        else if (command === "/memory") {
          await printMemory(client, agent, term).catch((err) =>
            say(style.red(`error: ${describeError(err)}`)),
          );
        } else say(style.red(`unknown command ${command}: /help lists them`));
        continue;
      }
      const controller = new AbortController();
      inFlight = { controller, agentId: agent.id };
      const renderer = new ReplyRenderer((s) => process.stdout.write(s), style, agent.name);
      try {
        for await (const event of client.send(agent.id, text, controller.signal)) renderer.handle(event);
        renderer.finish();
      } catch (err) {
        renderer.finish();
        say(
          controller.signal.aborted ? style.dim("(interrupted)") : style.red(`error: ${describeError(err)}`),
        );
      } finally {
        inFlight = null;
      }
    }
    return 0;
  } finally {
    rl.close();
  }
}
