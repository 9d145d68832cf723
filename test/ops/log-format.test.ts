// Readable log lines for a terminal, from pino's JSON.
import { describe, expect, it } from "vitest";
import { prettyLine } from "../../src/observability/log-format.ts";

describe("terminal log format", () => {
  it("shows time, level, message and fields, and passes non-JSON through", () => {
    const line = prettyLine(
      JSON.stringify({
        level: 30,
        time: Date.UTC(2026, 0, 1, 12, 0, 0),
        msg: "hello",
        reqId: "req-1",
        pid: 1,
      }),
    );
    expect(line).toBe("12:00:00.000 INFO  hello  reqId=req-1");
    expect(prettyLine("not json")).toBe("not json");
  });
});
