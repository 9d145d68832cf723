// The real letta-code CLI (headless prompt mode) against a real `kelpie serve` process, with the
// fake LLM behind Kelpie: it creates its agent and a conversation, streams the reply and prints it.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FakeLlm, startFakeLlm } from "../support/fake-llm/server.ts";
import { http, type ServerProcess, startServer, tempDataDir } from "../support/server-process.ts";

const LETTA_BIN =
  process.env.KELPIE_TEST_LETTA_BIN ?? resolve(import.meta.dirname, "../../node_modules/.bin/letta");
const CLI_TIMEOUT_MS = 60_000;

function letta(
  args: string[],
  env: Record<string, string>,
  cwd: string,
): Promise<{ code: number | null; out: string }> {
  return new Promise((done, fail) => {
    const child = spawn(LETTA_BIN, args, {
      cwd,
      env: { ...process.env, ...env },
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

describe("letta-code (headless) against kelpie serve", () => {
  const data = tempDataDir();
  const home = mkdtempSync(join(tmpdir(), "kelpie-letta-home-"));
  const work = mkdtempSync(join(tmpdir(), "kelpie-letta-cwd-"));
  let fake: FakeLlm;
  let server: ServerProcess;
  beforeAll(async () => {
    fake = await startFakeLlm();
    fake.script((req) => {
      const lastMessage = req.messages.at(-1);
      if (lastMessage?.role === "tool") return { text: `the shell said: ${lastMessage.text.slice(0, 200)}` };
      const last = [...req.messages].reverse().find((m) => m.role === "user")?.text ?? "";
      // letta-code's own tools are client tools: asking for the shell makes the model call one.
      if (last.includes("use the shell") && req.tools.some((t) => t.name === "ShellCommand")) {
        return {
          toolCalls: [
            { name: "ShellCommand", args: { command: "echo kelpie-shell-$((40+2))", workdir: "." } },
          ],
        };
      }
      return { text: `kelpie says: ${last.slice(-40)}` };
    });
    server = await startServer({
      dataDir: data.dir,
      env: { OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` },
    });
  }, 60_000);
  afterAll(async () => {
    await server?.kill();
    await fake?.close();
    data.remove();
    rmSync(home, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  });

  it("creates an agent and a conversation, streams the reply, and prints it", async () => {
    const env = { LETTA_BASE_URL: server.url, LETTA_API_KEY: "unused", HOME: home, NO_COLOR: "1" };
    const run = await letta(
      ["-p", "hello from letta-code", "--new-agent", "-m", "openai/gpt-4o-mini"],
      env,
      work,
    );
    expect(run.code, run.out).toBe(0);
    expect(run.out).toContain("kelpie says:");
    expect(run.out).toContain("hello from letta-code");

    // What the CLI did is in the server: its agent, a conversation, and the exchange in it.
    const agents = (await http(server.url, "GET", "/v1/agents/")).body as { id: string; tags: string[] }[];
    const agent = agents.find((a) => a.tags.includes("origin:letta-code"));
    expect(agent).toBeDefined();
    const conversations = (await http(server.url, "GET", `/v1/conversations/?agent_id=${agent!.id}`))
      .body as {
      id: string;
    }[];
    expect(conversations).toHaveLength(1);
    const messages = (
      await http(server.url, "GET", `/v1/conversations/${conversations[0]!.id}/messages?order=asc`)
    ).body as { message_type: string; content: string }[];
    expect(messages.find((m) => m.message_type === "assistant_message")?.content).toContain("kelpie says:");

    // A second prompt to the same agent continues with it (a new conversation, the same memory).
    const again = await letta(["-p", "second prompt", "--agent", agent!.id], env, work);
    expect(again.code, again.out).toBe(0);
    expect(again.out).toContain("second prompt");
    const after = (await http(server.url, "GET", `/v1/conversations/?agent_id=${agent!.id}`))
      .body as unknown[];
    expect(after).toHaveLength(2);

    // A client tool: the model calls letta-code's ShellCommand, the server pauses the turn for
    // approval, letta-code runs the command locally and sends the result back, the model answers.
    const tool = await letta(["-p", "please use the shell", "--agent", agent!.id], env, work);
    expect(tool.code, tool.out).toBe(0);
    expect(tool.out).toContain("the shell said:");
    expect(tool.out).toContain("kelpie-shell-42");
  }, 120_000);
});
