// The MCP stdio transport for a sandboxed server: newline-delimited JSON-RPC over the child's stdin
// and stdout, as the SDK's StdioClientTransport speaks it, but spawned the way the sandbox needs and
// that transport cannot: as the sandbox's own uid, with the seccomp filter on an extra descriptor,
// in a process group of its own that is killed as one. Its stderr is drained as it comes (a full
// pipe would block the server) and only the end is kept, for error messages.
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync } from "node:fs";
import { ReadBuffer, serializeMessage } from "@modelcontextprotocol/sdk/shared/stdio.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import type { SandboxedCommand } from "./stdio-sandbox.ts";

/** The end of a stdio server's stderr kept for the error when it fails. */
export const MCP_STDERR_TAIL_CHARS = 2_000;
/** How long a server may take to exit once its stdin is closed, before its process group is killed. */
export const MCP_STDIO_CLOSE_GRACE_MS = 2_000;

async function closedWithin(closed: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const over = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms); // det-ok: a real child needs a real kill timer
  });
  await Promise.race([closed, over]);
  clearTimeout(timer);
}

export class SandboxedStdioTransport implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: (message: JSONRPCMessage) => void;

  private child: ChildProcess | undefined;
  private readonly readBuffer = new ReadBuffer();
  private tail = "";
  private exited = false;

  /** `release` runs once the process has exited (or never started): the sandbox's uid is free again. */
  constructor(
    private readonly sandboxed: SandboxedCommand,
    private readonly release: () => void,
  ) {}

  /** The end of what the server printed on stderr so far. */
  stderrTail(): string {
    return this.tail.trim();
  }

  start(): Promise<void> {
    if (this.child !== undefined) throw new Error("SandboxedStdioTransport already started");
    const { command, args, uid, seccompFd } = this.sandboxed;
    return new Promise((resolve, reject) => {
      let child: ChildProcess;
      try {
        child = spawn(command, args, {
          stdio: ["pipe", "pipe", "pipe", ...(seccompFd === null ? [] : [seccompFd])],
          env: {},
          cwd: "/",
          detached: true, // its own process group, killed as one
          ...(uid === undefined ? {} : { uid, gid: uid }),
        });
      } catch (err) {
        this.finish();
        reject(err);
        return;
      } finally {
        if (seccompFd !== null) closeSync(seccompFd); // the child holds its own copy
      }
      this.child = child;
      child.once("error", (err) => {
        reject(err);
        this.onerror?.(err);
      });
      child.once("spawn", () => resolve());
      child.once("close", () => {
        this.child = undefined;
        this.finish();
        this.onclose?.();
      });
      child.stdin?.on("error", (err) => this.onerror?.(err));
      child.stdout?.on("error", (err) => this.onerror?.(err));
      child.stdout?.on("data", (chunk: Buffer) => {
        try {
          this.readBuffer.append(chunk);
          for (
            let message = this.readBuffer.readMessage();
            message !== null;
            message = this.readBuffer.readMessage()
          ) {
            this.onmessage?.(message);
          }
        } catch (err) {
          // An unreadable line (or one past the buffer's bound) ends the connection.
          this.onerror?.(err instanceof Error ? err : new Error(String(err)));
          void this.close();
        }
      });
      child.stderr?.on("data", (chunk: Buffer) => {
        this.tail = (this.tail + chunk.toString("utf8")).slice(-MCP_STDERR_TAIL_CHARS);
      });
    });
  }

  send(message: JSONRPCMessage): Promise<void> {
    const stdin = this.child?.stdin;
    if (!stdin) return Promise.reject(new Error("Not connected"));
    return new Promise((resolve) => {
      if (stdin.write(serializeMessage(message))) resolve();
      else stdin.once("drain", () => resolve());
    });
  }

  /** Ends stdin; a server still running after MCP_STDIO_CLOSE_GRACE_MS is killed with its group. */
  async close(): Promise<void> {
    const child = this.child;
    this.readBuffer.clear();
    if (child === undefined) return;
    const closed = new Promise<void>((resolve) => child.once("close", () => resolve()));
    try {
      child.stdin?.end();
    } catch {}
    await closedWithin(closed, MCP_STDIO_CLOSE_GRACE_MS);
    // Once reaped, the pid may belong to someone else: only signal a child not yet reaped.
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {}
      await closedWithin(closed, MCP_STDIO_CLOSE_GRACE_MS);
    }
  }

  private finish(): void {
    if (this.exited) return;
    this.exited = true;
    this.release();
  }
}
