// Python tool schemas are read by python3 in a child process that is awaited, not waited for: the
// event loop keeps running meanwhile, at most `concurrentMax` parses run at once, `queuedMax` more
// wait, and one more is refused at once with a 503 naming the limits.
import { execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { SchemaExtractions } from "../../src/tools/custom/python-schema.ts";

const pythonAvailable = (() => {
  try {
    execFileSync("python3", ["-c", "pass"], { stdio: "ignore", timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
})();

const dir = mkdtempSync(join(tmpdir(), "kelpie-pyschema-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A python3 that takes `delayS` seconds before it starts parsing. */
function slowPython(delayS: number): string {
  const path = join(dir, `slow-python-${delayS}`);
  writeFileSync(path, `#!/bin/sh\nsleep ${delayS}\nexec python3 "$@"\n`);
  chmodSync(path, 0o755);
  return path;
}

const ADD = `def add(a: int, b: int = 2) -> int:
    """Add two numbers.

    Args:
        a: the first
    """
    return a + b
`;

describe("Python schema extraction", () => {
  it.skipIf(!pythonAvailable)("derives the schema while the event loop keeps turning", async () => {
    const extractions = new SchemaExtractions({ concurrentMax: 1, queuedMax: 0 }, slowPython(0.5));
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 10);
    const started = performance.now();
    const schema = await extractions.pythonSchema(ADD);
    clearInterval(ticker);
    const tookMs = performance.now() - started;
    expect(schema).toEqual({
      name: "add",
      description: "Add two numbers.",
      parameters: {
        type: "object",
        properties: { a: { type: "integer", description: "the first" }, b: { type: "integer" } },
        required: ["a"],
      },
    });
    // A synchronous spawn would have left the ticker at 0 for the half second the parse took.
    expect(ticks).toBeGreaterThan((tookMs / 10) * 0.5);
  });

  it.skipIf(!pythonAvailable)(
    "runs at most concurrentMax at once, queues queuedMax, refuses the next with a 503",
    async () => {
      const extractions = new SchemaExtractions({ concurrentMax: 1, queuedMax: 1 }, slowPython(0.3));
      const first = extractions.pythonSchema(ADD);
      const second = extractions.pythonSchema(ADD);
      expect(extractions.load()).toEqual({ running: 1, waiting: 1 });
      const third = extractions.pythonSchema(ADD);
      await expect(third).rejects.toMatchObject({
        code: "OVERLOADED",
        status: 503,
        message: expect.stringContaining("SCHEMA_EXTRACTIONS_CONCURRENT_MAX"),
      });
      expect((await first).name).toBe("add");
      expect((await second).name).toBe("add");
      expect(extractions.load()).toEqual({ running: 0, waiting: 0 });
    },
  );

  it("without python3 a create is a 422 naming source_code, and the slot is given back", async () => {
    const extractions = new SchemaExtractions({ concurrentMax: 1, queuedMax: 0 }, join(dir, "no-python3"));
    for (let i = 0; i < 3; i++) {
      await expect(extractions.pythonSchema(ADD)).rejects.toMatchObject({
        code: "VALIDATION",
        issues: [
          expect.objectContaining({ loc: ["body", "source_code"], msg: expect.stringContaining("ENOENT") }),
        ],
      });
    }
    expect(extractions.load()).toEqual({ running: 0, waiting: 0 });
  });

  it.skipIf(!pythonAvailable)("a syntax error is a 422 saying where", async () => {
    const extractions = new SchemaExtractions();
    await expect(extractions.pythonSchema("def broken(:\n")).rejects.toMatchObject({
      code: "VALIDATION",
      issues: [expect.objectContaining({ msg: expect.stringContaining("SyntaxError") })],
    });
  });
});
