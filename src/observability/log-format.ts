// Logs are pino JSON lines; in a terminal (and unless KELPIE_LOG_FORMAT=json) they are shown as
// short readable lines instead: time, level, message, then the other fields as key=value.
import { Writable } from "node:stream";

const LEVEL_NAMES: Record<number, string> = {
  10: "TRACE",
  20: "DEBUG",
  30: "INFO",
  40: "WARN",
  50: "ERROR",
  60: "FATAL",
};
const OMITTED_FIELDS = new Set(["level", "time", "msg", "pid", "hostname"]);

export function prettyLine(json: string): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const time = typeof entry.time === "number" ? new Date(entry.time).toISOString().slice(11, 23) : "";
  const level = LEVEL_NAMES[entry.level as number] ?? String(entry.level);
  const fields = Object.entries(entry)
    .filter(([k]) => !OMITTED_FIELDS.has(k))
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join(" ");
  return `${time} ${level.padEnd(5)} ${String(entry.msg ?? "")}${fields ? `  ${fields}` : ""}`;
}

/** A destination for pino that writes readable lines to `out`. */
export function prettyStream(out: NodeJS.WritableStream): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString("utf8").split("\n"))
        if (line.trim()) out.write(`${prettyLine(line)}\n`);
      done();
    },
  });
}
