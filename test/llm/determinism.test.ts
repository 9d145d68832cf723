// LLM code reaches time and randomness only through the injected Clock and Rng, so retries and
// backoff replay under simulation: no ambient clock, timer or random source in src/llm.
import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

const AMBIENT = /\b(Date\.now|new Date\(\)|Math\.random|setTimeout|setInterval|setImmediate|randomUUID)\b/;
const LLM_DIR = new URL("../../src/llm/", import.meta.url);

describe("src/llm determinism", () => {
  const files = readdirSync(LLM_DIR).filter((f) => f.endsWith(".ts"));

  it("has sources to check", () => {
    expect(files.length).toBeGreaterThan(5);
  });

  it.each(files)("%s uses no ambient time or randomness", (file) => {
    expect(readFileSync(new URL(file, LLM_DIR), "utf8")).not.toMatch(AMBIENT);
  });
});
