// Server-sent events read from a fetch body, as the WHATWG spec frames them: fields per line
// (`\n`, `\r\n` or `\r`), an event dispatched at a blank line, `data` lines joined with `\n`,
// comments (`:`) ignored. Small enough that the CLI needs no dependency for it.

export interface SseEvent {
  /** The `event:` field; "message" when the server names none. */
  event: string;
  data: string;
}

/** Yields each event of the stream; an event cut off by the end of the stream is dropped, as the spec says. */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder();
  let buffer = "";
  let event = "";
  let data: string[] = [];
  for await (const bytes of body) {
    buffer += decoder.decode(bytes, { stream: true });
    for (;;) {
      const end = buffer.search(/\r\n|\r|\n/);
      if (end < 0) break;
      // A lone `\r` at the end of the buffer may be the first half of `\r\n`: wait for more.
      if (buffer[end] === "\r" && end === buffer.length - 1) break;
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + (buffer.startsWith("\r\n", end) ? 2 : 1));
      if (line === "") {
        if (data.length > 0) yield { event: event || "message", data: data.join("\n") };
        event = "";
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "event") event = value;
    }
  }
}
