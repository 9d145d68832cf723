// A JS/TS tool's schema comes from one linear scan of its source: the last top-level function and
// the JSDoc right before it. Hostile sources of the largest allowed size are read in milliseconds
// (a backtracking regular expression took seconds on 120 KB, with the event loop blocked).
import { describe, expect, it } from "vitest";
import { jsSchema, scanFunctions } from "../../src/tools/custom/js-schema.ts";
import { TOOL_SOURCE_CHARS_MAX } from "../../src/tools/custom/service.ts";

/** Far above what a linear scan of 1 MB takes, far below what a quadratic one takes. */
const SCAN_MS_MAX = 500;

describe("jsSchema", () => {
  it("reads the JSDoc description, @param types and texts, optional and defaulted parameters", () => {
    const schema = jsSchema(`/**
 * Shout a word.
 * Loudly.
 * @param {string} word - the word to shout
 * @param {number} [times] how often
 * @param {string[]} tags - labels
 * @returns {string}
 */
function shout(word, times, tags = [], extra = "a, b") { return word.toUpperCase() + "!"; }
`);
    expect(schema).toEqual({
      name: "shout",
      description: "Shout a word.\nLoudly.",
      parameters: {
        type: "object",
        properties: {
          word: { type: "string", description: "the word to shout" },
          times: { type: "number", description: "how often" },
          tags: { type: "array", items: { type: "string" }, description: "labels" },
          extra: { type: "string" },
        },
        required: ["word"],
      },
    });
  });

  it("reads TypeScript annotations, export and async, multi-line parameter lists", () => {
    const schema = jsSchema(`import x from "y";
/** Add. */
export async function add(
  a: number,
  b?: integer,
  c: Array<boolean> = [true, false],
  cb: (x: number) => void,
): Promise<number> { return a + (b ?? 0); }
`);
    expect(schema.name).toBe("add");
    expect(schema.description).toBe("Add.");
    expect(schema.parameters.properties).toEqual({
      a: { type: "number" },
      b: { type: "integer" },
      c: { type: "array", items: { type: "boolean" } },
      cb: { type: "string" },
    });
    expect(schema.parameters.required).toEqual(["a", "cb"]);
  });

  it("takes the last top-level function, not one nested, quoted, commented or in a regex", () => {
    const source = `/** The outer one. */
function outer(a) {
  function inner(b) { return b; }
  return inner(a);
}
const s = "function fake1(x) {}";
const t = \`function fake2(\${"function fake3(y)"}) \`;
// function fake4(z) {}
/* function fake5(w) {} */
const r = /function fake6\\(v\\)/g;
const q = 4 / 2; const p = q / 1; // a division, then a comment
`;
    expect(scanFunctions(source).map((f) => f.name)).toEqual(["outer"]);
    expect(jsSchema(source)).toMatchObject({ name: "outer", description: "The outer one." });
  });

  it("ties a JSDoc only to the declaration right after it", () => {
    const schema = jsSchema(`/** About the constant. */
const LIMIT = 3;
function plain(a) { return a; }
`);
    expect(schema.description).toBe("");
    const separated = jsSchema(`/** Doc. */
// a line comment in between
function f(a) {}`);
    expect(separated.description).toBe("");
  });

  it("refuses a source without a function, and unusable parameters, with a 422 naming source_code", () => {
    for (const source of ["const x = 1;", "function (a) {}", "`${".repeat(10_000)]) {
      expect(() => jsSchema(source)).toThrow(
        expect.objectContaining({ issues: [expect.objectContaining({ loc: ["body", "source_code"] })] }),
      );
    }
    expect(() => jsSchema("function f({a, b}) {}")).toThrow(/unsupported parameter/);
  });

  it("reads hostile sources of the largest allowed size in linear time", () => {
    const n = TOOL_SOURCE_CHARS_MAX;
    const fill = (unit: string, prefix = "", suffix = "") =>
      prefix + unit.repeat(Math.floor((n - prefix.length - suffix.length) / unit.length)) + suffix;
    const hostile = [
      fill("/**"),
      fill("function a("),
      fill("function a(", "", ")"),
      fill("/ "),
      fill("a / b "),
      fill("'"),
      fill("`${"),
      fill("("),
      fill(")"),
      fill("x", "/** @param a=", "\r y */ function f(a) {}"),
      fill("[]", "function f(a: string", ") {}"),
      fill("Array<", "function f(a: ", ") {}"),
      fill("a, ", "function f(", ") {}"),
      fill(" ", "/**\n * @param", "\r */ function f(a) {}"),
    ];
    for (const source of hostile) {
      const started = performance.now();
      try {
        jsSchema(source);
      } catch (err) {
        expect(err, source.slice(0, 40)).toMatchObject({ code: "VALIDATION" });
      }
      const tookMs = performance.now() - started;
      expect(tookMs, `${JSON.stringify(source.slice(0, 30))}… took ${tookMs.toFixed(0)} ms`).toBeLessThan(
        SCAN_MS_MAX,
      );
    }
  });
});
