// Bounds on what a sandboxed run hands back: printed lines and the returned value, each cut at a
// byte limit with one explicit marker, so neither can grow the server's memory, a stored message
// or an HTTP answer past that limit.
import { SANDBOX_OUTPUT_BYTES_MAX, type SandboxResult } from "./limits.ts";

export function outputCutMarker(bytesMax: number): string {
  return `[output cut at ${bytesMax} bytes]`;
}

/** The longest prefix of `text` that is at most `bytesMax` bytes of UTF-8, never splitting a character. */
export function utf8Prefix(text: string, bytesMax: number): string {
  // A UTF-16 unit is at most 3 bytes of UTF-8: a text this short fits without measuring.
  if (text.length * 3 <= bytesMax) return text;
  // A UTF-16 unit is at least 1 byte: nothing past bytesMax units can fit. Not half a surrogate pair.
  let head = text.length > bytesMax ? text.slice(0, bytesMax) : text;
  if (head.length < text.length && /[\uD800-\uDBFF]$/.test(head)) head = head.slice(0, -1);
  const bytes = Buffer.from(head, "utf8");
  if (bytes.length <= bytesMax) return head;
  let end = bytesMax;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--; // back to the start of a character
  return bytes.subarray(0, end).toString("utf8");
}

/** `text` when it is at most `bytesMax` bytes, else its prefix followed by the marker on its own line. */
export function capText(text: string, bytesMax = SANDBOX_OUTPUT_BYTES_MAX): string {
  if (text.length <= bytesMax / 3) return text;
  const prefix = utf8Prefix(text, bytesMax);
  return prefix.length === text.length ? text : `${prefix}\n${outputCutMarker(bytesMax)}`;
}

/** Printed lines, kept until they total `bytesMax` bytes (a newline counted per line); the line that
 * crosses it is cut, the marker follows, and everything after is dropped without being stored. */
export class OutputCap {
  readonly lines: string[] = [];
  private bytes = 0;
  private cut = false;

  constructor(private readonly bytesMax = SANDBOX_OUTPUT_BYTES_MAX) {}

  get full(): boolean {
    return this.cut;
  }

  push(line: string): void {
    if (this.cut) return;
    const room = this.bytesMax - this.bytes - 1; // the line's newline counts too
    const fits = room >= 0 ? utf8Prefix(line, room) : "";
    if (room >= 0 && fits.length === line.length) {
      this.lines.push(line);
      this.bytes += Buffer.byteLength(line, "utf8") + 1;
      return;
    }
    if (fits !== "") this.lines.push(fits);
    this.lines.push(outputCutMarker(this.bytesMax));
    this.cut = true;
  }
}

/** A run's result with its value, and its printed output (stdout, then stderr, together), each
 * within `bytesMax`: the last guard before the result reaches storage or a client. */
export function capResult(result: SandboxResult, bytesMax = SANDBOX_OUTPUT_BYTES_MAX): SandboxResult {
  const printed = new OutputCap(bytesMax);
  for (const line of result.stdout) if (!printed.full) printed.push(line);
  const stdoutCount = printed.lines.length;
  for (const line of result.stderr) if (!printed.full) printed.push(line);
  return {
    ...result,
    value: capText(result.value, bytesMax),
    stdout: printed.lines.slice(0, stdoutCount),
    stderr: printed.lines.slice(stdoutCount),
  };
}
