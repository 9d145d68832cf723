// The newest letta-code CLI (headless prompt mode), on Node 22 from the npm registry beside the Node
// the server runs on, against a real `kelpie serve` process with the fake LLM behind Kelpie: a
// prompt that makes its agent, a second run on that agent, and one of letta-code's own (client-side)
// tools through Kelpie's approval flow. test/support/letta-code.ts installs letta-code and Node 22.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FakeLlm, type ScriptRequest, startFakeLlm } from "../support/fake-llm/server.ts";
import { ensureLettaCode, LETTA_CODE_INSTALL_TIMEOUT_MS, type LettaCode } from "../support/letta-code.ts";
import { http, type ServerProcess, startServer, tempDataDir } from "../support/server-process.ts";

const LETTA_CODE_VERSION = "0.32.18";
const CLI_TIMEOUT_MS = 90_000;
/** The names letta-code gives its shell tool, by toolset (Codex-style for OpenAI models first). */
const SHELL_TOOLS = ["exec_command", "ShellCommand", "Bash"];
const MEMORY_MARKER = "kelpie-memory-marker-7";

interface CliRun {
  code: number | null;
  out: string;
}

describe("letta-code (headless, newest release on Node 22) against kelpie serve", () => {
  const data = tempDataDir();
  const home = mkdtempSync(join(tmpdir(), "kelpie-letta-home-"));
  const work = mkdtempSync(join(tmpdir(), "kelpie-letta-cwd-"));
  let cli: LettaCode;
  let fake: FakeLlm;
  let server: ServerProcess;
  const modelRequests: ScriptRequest[] = [];
  let agentId = "";

  function letta(args: string[]): Promise<CliRun> {
    const env = {
      ...process.env,
      // Whatever letta-code starts as `node` is its own Node too.
      PATH: `${cli.binDir}${delimiter}${process.env.PATH ?? ""}`,
      LETTA_BASE_URL: server.url,
      LETTA_API_KEY: "unused",
      HOME: home,
      NO_COLOR: "1",
    };
    return new Promise((done, fail) => {
      const child = spawn(cli.node, [cli.script, ...args], {
        cwd: work,
        env,
        stdio: ["ignore", "pipe", "pipe"],
      });
      let out = "";
      child.stdout.on("data", (c: Buffer) => {
        out += c.toString();
      });
      child.stderr.on("data", (c: Buffer) => {
        out += c.toString();
      });
      const timer = setTimeout(() => child.kill("SIGKILL"), CLI_TIMEOUT_MS);
      child.on("error", fail);
      child.on("close", (code) => {
        clearTimeout(timer);
        done({ code, out });
      });
    });
  }

  async function conversations(): Promise<{ id: string }[]> {
    return (await http(server.url, "GET", `/v1/conversations/?agent_id=${agentId}`)).body;
  }

  async function conversationMessages(id: string): Promise<Record<string, any>[]> {
    return (await http(server.url, "GET", `/v1/conversations/${id}/messages?order=asc&limit=100`)).body;
  }

  beforeAll(async () => {
    cli = await ensureLettaCode();
    fake = await startFakeLlm();
    fake.script((req) => {
      modelRequests.push(req);
      const lastMessage = req.messages.at(-1);
      if (lastMessage?.role === "tool") return { text: `the shell said: ${lastMessage.text.slice(0, 300)}` };
      const last = [...req.messages].reverse().find((m) => m.role === "user")?.text ?? "";
      if (last.includes("use the shell")) {
        // letta-code's own tools are client tools: asking for the shell makes the model call one.
        const shell = req.tools.find((t) => SHELL_TOOLS.includes(t.name));
        if (shell === undefined)
          return { text: `no shell tool among: ${req.tools.map((t) => t.name).join(", ")}` };
        const command = "echo kelpie-shell-$((40+2))";
        const args =
          shell.name === "exec_command"
            ? { cmd: command, description: "Print a marker" }
            : { command, description: "Print a marker", workdir: "." };
        return { toolCalls: [{ name: shell.name, args }] };
      }
      return { text: `kelpie says: ${last.slice(-40)}` };
    });
    server = await startServer({
      dataDir: data.dir,
      env: { OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` },
    });
  }, LETTA_CODE_INSTALL_TIMEOUT_MS + 60_000);

  afterAll(async () => {
    await server?.kill();
    await fake?.close();
    data.remove();
    rmSync(home, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  });

  it("is the newest release, on Node 22 beside the server's Node", () => {
    expect(cli.version).toBe(LETTA_CODE_VERSION);
    expect(cli.nodeVersion).toMatch(/^v2[2-9]\./);
    expect(cli.node).not.toBe(process.execPath);
  });

  it("a headless prompt makes an agent and a conversation, streams the reply and prints it", async () => {
    const run = await letta(["-p", "hello from letta-code", "--new-agent", "-m", "openai/gpt-4o-mini"]);
    expect(run.code, run.out).toBe(0);
    expect(run.out).toContain("kelpie says:");
    expect(run.out).toContain("hello from letta-code");

    // What the CLI did is in the server: its agent, a conversation, and the exchange in it.
    const agents = (await http(server.url, "GET", "/v1/agents/")).body as { id: string; tags: string[] }[];
    const mine = agents.filter((a) => a.tags.includes("origin:letta-code"));
    expect(mine).toHaveLength(1);
    agentId = mine[0]!.id;
    const listed = await conversations();
    expect(listed).toHaveLength(1);
    const messages = await conversationMessages(listed[0]!.id);
    expect(messages.find((m) => m.message_type === "assistant_message")?.content).toContain("kelpie says:");
  }, 120_000);

  it("a second run on the same agent: a new conversation with the agent's memory as the server keeps it", async () => {
    expect(agentId).not.toBe("");
    // A change made through the API between the runs reaches the model in the second run.
    const blocks = (await http(server.url, "GET", `/v1/agents/${agentId}/core-memory/blocks`)).body as {
      label: string;
      value: string;
    }[];
    expect(blocks.length, JSON.stringify(blocks)).toBeGreaterThan(0);
    const block = blocks[0]!;
    const patched = await http(
      server.url,
      "PATCH",
      `/v1/agents/${agentId}/core-memory/blocks/${encodeURIComponent(block.label)}`,
      { value: `${block.value}\n${MEMORY_MARKER}` },
    );
    expect(patched.status, JSON.stringify(patched.body)).toBe(200);
    const before = modelRequests.length;

    const again = await letta(["-p", "second prompt", "--agent", agentId]);
    expect(again.code, again.out).toBe(0);
    expect(again.out).toContain("kelpie says:");
    expect(again.out).toContain("second prompt");
    expect(await conversations()).toHaveLength(2);
    const agents = (await http(server.url, "GET", "/v1/agents/")).body as { tags: string[] }[];
    expect(agents.filter((a) => a.tags.includes("origin:letta-code"))).toHaveLength(1);
    const seen = modelRequests.slice(before);
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.every((req) => req.system.includes(MEMORY_MARKER))).toBe(true);
  }, 120_000);

  it("a client-side tool goes through the approval flow: the CLI runs it and sends the result back", async () => {
    expect(agentId).not.toBe("");
    // The model calls letta-code's shell tool; the server pauses the turn for approval, letta-code
    // runs the command locally and sends its result back, and the model answers with it.
    const tool = await letta(["-p", "please use the shell", "--agent", agentId]);
    expect(tool.code, tool.out).toBe(0);
    expect(tool.out).toContain("the shell said:");
    expect(tool.out).toContain("kelpie-shell-42");

    const listed = await conversations();
    expect(listed).toHaveLength(3);
    const byConversation = await Promise.all(listed.map((c) => conversationMessages(c.id)));
    const messages = byConversation.find((ms) => ms.some((m) => m.message_type === "tool_return_message"));
    expect(messages, JSON.stringify(byConversation)).toBeDefined();
    const call = messages!.find((m) => SHELL_TOOLS.includes(m.tool_call?.name));
    expect(call?.message_type).toBe("approval_request_message");
    const returned = messages!.find((m) => m.message_type === "tool_return_message");
    expect(returned?.tool_call_id).toBe(call?.tool_call?.tool_call_id);
    expect(returned?.tool_return).toContain("kelpie-shell-42");
    expect(messages!.at(-1)?.content).toContain("the shell said:");
  }, 120_000);
});
