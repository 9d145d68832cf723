// Streams the value of one string field out of tool-call arguments that arrive as JSON text in
// pieces (`{"message": "Hel` … `lo"}`), so send_message can be shown to the user token by token.

const ESCAPES: Record<string, string> = {
  '"': '"',
  "\\": "\\",
  "/": "/",
  b: "\b",
  f: "\f",
  n: "\n",
  r: "\r",
  t: "\t",
};

export class JsonStringFieldStream {
  private buffer = "";
  private start = -1;
  private position = 0;
  private done = false;

  constructor(private readonly field: string) {}

  /** Feeds more argument text; returns the newly decoded part of the field's value ("" if none). */
  push(chunk: string): string {
    if (this.done) return "";
    this.buffer += chunk;
    if (this.start < 0) {
      const match = new RegExp(`"${this.field}"\\s*:\\s*"`).exec(this.buffer);
      if (match === null) return "";
      this.start = match.index + match[0].length;
      this.position = this.start;
    }
    let out = "";
    while (this.position < this.buffer.length) {
      const c = this.buffer[this.position]!;
      if (c === '"') {
        this.done = true;
        break;
      }
      if (c === "\\") {
        const next = this.buffer[this.position + 1];
        if (next === undefined) break; // wait for the rest of the escape
        if (next === "u") {
          const hex = this.buffer.slice(this.position + 2, this.position + 6);
          if (hex.length < 4) break;
          out += String.fromCharCode(Number.parseInt(hex, 16));
          this.position += 6;
          continue;
        }
        out += ESCAPES[next] ?? next;
        this.position += 2;
        continue;
      }
      out += c;
      this.position++;
    }
    return out;
  }
}
