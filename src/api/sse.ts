// Server-sent events as Letta streams them: `data: <json>` per event, `data: [DONE]` at the end.
import type { FastifyReply } from "fastify";

export class SseStream {
  private closed = false;

  constructor(private readonly reply: FastifyReply) {
    reply.hijack();
    reply.raw.writeHead(200, {
      "content-type": "text/event-stream",
      "cache-control": "no-cache",
      connection: "keep-alive",
      "x-accel-buffering": "no",
    });
    reply.raw.on("close", () => {
      this.closed = true;
    });
  }

  /** Whether the client is still there; the turn goes on (and commits) either way. */
  get open(): boolean {
    return !this.closed && !this.reply.raw.destroyed;
  }

  send(data: unknown): void {
    if (this.open) this.reply.raw.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  sendEvent(event: string, data: unknown): void {
    if (this.open) this.reply.raw.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  }

  end(): void {
    if (this.open) this.reply.raw.write("data: [DONE]\n\n");
    if (!this.reply.raw.writableEnded) this.reply.raw.end();
  }
}
