// `kelpie chat` in a real pseudo-terminal (python3's pty module: no npm dependency) against a real
// `kelpie serve` and the fake LLM: a streamed reply, a memory edit shown as one highlighted tool
// line, a model failure that the loop survives, /memory, /quit; then the agent picker and Ctrl-D.
import { type ChildProcess, spawn } from "node:child_process";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FakeLlm, type Reply, type ScriptRequest, startFakeLlm } from "../support/fake-llm/server.ts";
import { http, type ServerProcess, startServer, tempDataDir } from "../support/server-process.ts";

const ROOT = resolve(import.meta.dirname, "../..");
/** Each step waits for its output at most this long (a reply takes well under a second here). */
const STEP_TIMEOUT_MS = 10_000;
const POLL_INTERVAL_MS = 20;
const SESSION_TIMEOUT_MS = 30_000;
// Runs argv in a new pseudo-terminal, copying our pipes to and from it; exits with the child's code.
const PTY_DRIVER = "import os, pty, sys\nsys.exit(os.waitstatus_to_exitcode(pty.spawn(sys.argv[1:])))";
// A realistic terminal size (a fresh pty has 0x0), then the command.
const SIZED_EXEC = 'stty cols 120 rows 40 && exec "$0" "$@"';
const MAGENTA_BOLD = "\x1b[1m\x1b[35m";
const MEMORY_FACT = "The user's name is Ada.";
/** Long enough that only an interrupt ends the wait. */
const SLOW_REPLY_MS = 20_000;
const DIM = "\x1b[2m";

/** Replies through send_message (memgpt_v2 agents speak with it); "remember: …" edits memory first. */
function script(req: ScriptRequest): Reply {
  const i = req.messages.map((m) => m.role).lastIndexOf("user");
  const user = req.messages[i]?.text ?? "";
  const returned = req.messages.slice(i + 1).some((m) => m.role === "tool");
  const say = (message: string): Reply => ({ toolCalls: [{ name: "send_message", args: { message } }] });
  if (user.startsWith("remember:")) {
    if (!returned) {
      return {
        reasoning: "The user told me their name.",
        toolCalls: [
          { name: "memory_insert", args: { label: "human", new_str: MEMORY_FACT, request_heartbeat: true } },
        ],
      };
    }
    return say("Got it, Ada, I will remember that.");
  }
  if (user.startsWith("search:")) {
    if (!returned) {
      return {
        toolCalls: [{ name: "conversation_search", args: { query: "Ada", request_heartbeat: true } }],
      };
    }
    return say("I searched.");
  }
  if (user.startsWith("slow")) return { delayMs: SLOW_REPLY_MS, ...say("too late") };
  return say(`Hi! You said ${user}, nice to meet you.`);
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: matching terminal escape sequences is the point
const ANSI = /\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r/g;

class PtySession {
  raw = "";
  readonly child: ChildProcess;
  private readonly exited: Promise<number | null>;

  constructor(args: string[]) {
    const env: NodeJS.ProcessEnv = { ...process.env, TERM: "xterm-256color" };
    delete env.NO_COLOR; // colours on: the highlighting is part of what is checked
    delete env.FORCE_COLOR;
    this.child = spawn(
      "python3",
      [
        "-c",
        PTY_DRIVER,
        "sh",
        "-c",
        SIZED_EXEC,
        process.execPath,
        join(ROOT, "bin/kelpie.mjs"),
        "chat",
        ...args,
      ],
      { cwd: ROOT, env, stdio: ["pipe", "pipe", "pipe"] },
    );
    this.child.stdout?.on("data", (d: Buffer) => (this.raw += d.toString("utf8")));
    this.child.stderr?.on("data", (d: Buffer) => (this.raw += d.toString("utf8")));
    this.exited = new Promise((done) => this.child.once("exit", (code) => done(code)));
  }

  /** What the terminal shows, without colours and carriage returns. */
  get text(): string {
    return this.raw.replace(ANSI, "");
  }

  type(keys: string): void {
    this.child.stdin?.write(keys);
  }

  count(needle: string): number {
    return this.text.split(needle).length - 1;
  }

  async waitFor(what: string, done: () => boolean): Promise<void> {
    const deadline = Date.now() + STEP_TIMEOUT_MS;
    while (!done()) {
      if (Date.now() > deadline)
        throw new Error(`timed out waiting for ${what}; the terminal shows:\n${this.text}`);
      if (this.child.exitCode !== null)
        throw new Error(`chat exited (${this.child.exitCode}) before ${what}:\n${this.text}`);
      await new Promise((r) => setTimeout(r, POLL_INTERVAL_MS));
    }
  }

  /** Waits for the n-th prompt: the previous line's work is done. */
  prompt(n: number): Promise<void> {
    return this.waitFor(`prompt #${n}`, () => this.count("you> ") >= n);
  }

  async exitCode(): Promise<number | null> {
    const timeout = new Promise<"timeout">((r) => setTimeout(() => r("timeout"), STEP_TIMEOUT_MS).unref());
    const code = await Promise.race([this.exited, timeout]);
    if (code === "timeout") throw new Error(`chat did not exit; the terminal shows:\n${this.text}`);
    return code;
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
  }
}

describe("kelpie chat in a terminal", () => {
  const data = tempDataDir();
  let fake: FakeLlm;
  let server: ServerProcess;
  const sessions: PtySession[] = [];

  beforeAll(async () => {
    fake = await startFakeLlm();
    fake.script(script);
    server = await startServer({
      dataDir: data.dir,
      env: { OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` },
    });
  });
  afterAll(async () => {
    for (const session of sessions) session.kill();
    await server?.kill();
    await fake?.close();
    data.remove();
  });

  it(
    "streams replies, shows tool calls and memory edits, survives errors, prints /memory and quits",
    async () => {
      const chat = new PtySession(["--url", server.url, "--new"]);
      sessions.push(chat);
      await chat.prompt(1);
      expect(chat.text).toMatch(/created agent (agent-\S+) \(agent-[0-9a-f-]+\)/);
      expect(chat.text).toContain("chatting with agent-");
      const [agent] = (await http(server.url, "GET", "/v1/agents/")).body as { id: string; name: string }[];
      expect(agent).toBeDefined();

      // A plain reply: the streamed chunks of one message make one line after the agent's name.
      chat.type("hello there\r");
      await chat.prompt(2);
      expect(chat.text).toContain(`${agent!.name}> Hi! You said hello there, nice to meet you.\n`);

      // A memory edit: reasoning (dim), one highlighted tool line, then the reply.
      chat.type("remember: my name is Ada\r");
      await chat.prompt(3);
      expect(chat.text).toContain("thinking: The user told me their name.\n");
      const toolLine = `⚙ memory_insert(label="human", new_str=${JSON.stringify(MEMORY_FACT)}) → ok\n`;
      expect(chat.text).toContain(toolLine);
      expect(chat.raw).toContain(`${MAGENTA_BOLD}⚙ memory_insert(`);
      expect(chat.text).toContain(`${agent!.name}> Got it, Ada, I will remember that.\n`);
      expect(chat.text.indexOf(toolLine)).toBeLessThan(chat.text.indexOf("Got it, Ada"));

      // Any other tool: a dim line with a short result; send_message is never a tool line.
      chat.type("search: Ada\r");
      await chat.prompt(4);
      expect(chat.text).toMatch(
        /\n⚙ conversation_search\(query="Ada"\) → ok: [^\n]+\n[^\n]*> I searched\.\n/,
      );
      expect(chat.raw).toContain(`${DIM}⚙ conversation_search(`);
      expect(chat.text).not.toContain("send_message");
      expect(chat.text).not.toContain("⚙ tool(");

      // The model fails: the error is shown and the loop goes on.
      fake.failNext(1, 400);
      chat.type("this one fails\r");
      await chat.prompt(5);
      expect(chat.text).toMatch(/error: [^\n]*400/);
      chat.type("still there?\r");
      await chat.prompt(6);
      expect(chat.text).toContain("> Hi! You said still there?, nice to meet you.\n");

      // /memory shows the edit, with the block's size and limit as the server has them.
      const before = chat.text.length;
      chat.type("/memory\r");
      await chat.prompt(7);
      const blocks = (await http(server.url, "GET", `/v1/agents/${agent!.id}/core-memory/blocks`)).body as {
        label: string;
        value: string;
        limit: number;
      }[];
      const human = blocks.find((b) => b.label === "human");
      expect(human?.value).toContain(MEMORY_FACT);
      const shown = chat.text.slice(before);
      expect(shown).toContain(`human (${human!.value.length}/${human!.limit} chars)\n`);
      expect(shown).toContain(`  ${MEMORY_FACT}\n`);
      expect(shown).toMatch(/persona \(\d+\/\d+ chars\)\n {2}I am a helpful assistant/);

      chat.type("/quit\r");
      expect(await chat.exitCode()).toBe(0);
    },
    SESSION_TIMEOUT_MS,
  );

  it(
    "without --agent lists the agents to pick from, and leaves on Ctrl-D",
    async () => {
      const chat = new PtySession(["--url", server.url]);
      sessions.push(chat);
      await chat.waitFor("the agent list", () => chat.text.includes("pick 1-1 (Enter: 1, n: new agent): "));
      expect(chat.text).toMatch(/ {3}1\) agent-\S+ agent-[0-9a-f-]+ {2}openai\/gpt-4o-mini\n/);
      chat.type("1\r");
      await chat.prompt(1);
      chat.type("/nonsense\r");
      await chat.prompt(2);
      expect(chat.text).toContain("unknown command /nonsense: /help lists them");
      // Ctrl-C stops a reply in flight; the prompt comes back.
      const asked = fake.requests.length;
      chat.type("slow please\r");
      await chat.waitFor("the model request", () => fake.requests.length > asked);
      chat.type("\x03");
      await chat.prompt(3);
      expect(chat.text).toContain("slow please\n(interrupted)\n");
      expect(chat.text).not.toContain("too late");
      chat.type("\x04");
      expect(await chat.exitCode()).toBe(0);
      expect((await http(server.url, "GET", "/v1/agents/count")).body).toBe(1);
    },
    SESSION_TIMEOUT_MS,
  );
});
