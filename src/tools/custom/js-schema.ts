// Derives a tool's JSON schema from JavaScript/TypeScript source: the last top-level function
// declaration and the JSDoc block right before it (description, @param {type} name - text).
//
// The source is read by one left-to-right scan (`scanFunctions`) that skips strings, template
// literals, regular-expression literals and comments and tracks bracket depth, so that the time it
// takes is linear in the source's length whatever the source holds: a backtracking regular
// expression over the whole source took seconds on 120 KB of hostile input, with the event loop
// blocked all that time. The regular expressions below only ever see one JSDoc line or one parameter.
import { invalidField } from "../../core/errors.ts";
import type { DerivedSchema } from "./python-schema.ts";

const JS_TYPES: Record<string, string> = {
  string: "string",
  number: "number",
  integer: "integer",
  boolean: "boolean",
  object: "object",
  array: "array",
  any: "string",
};
/** Nested `${` in template literals: a deeper source is refused rather than tracked. */
const TEMPLATE_DEPTH_MAX = 1_000;

/** Arrays of arrays in a parameter's type (`string[][]`, `Array<Array<T>>`): deeper is refused. */
const JS_TYPE_DEPTH_MAX = 16;

function jsType(raw: string | undefined, depth = 0): Record<string, unknown> {
  if (depth > JS_TYPE_DEPTH_MAX)
    throw invalidField(["body", "source_code"], `parameter types nest deeper than ${JS_TYPE_DEPTH_MAX}`);
  const t = (raw ?? "string").trim();
  if (t.endsWith("[]")) return { type: "array", items: jsType(t.slice(0, -2), depth + 1) };
  const generic = /^Array<([\s\S]+)>$/.exec(t);
  if (generic) return { type: "array", items: jsType(generic[1], depth + 1) };
  return { type: JS_TYPES[t.toLowerCase()] ?? "string" };
}

/** A top-level `function name(params)` found by the scan, with the JSDoc text right before it. */
export interface FunctionDeclaration {
  name: string;
  /** The text between the parameter list's parentheses. */
  params: string;
  /** The JSDoc block's inner text (between `/**` and `*\/`), "" when none precedes the declaration. */
  doc: string;
}

/** After these words a `/` starts a regular expression; after other words it divides. */
const REGEX_AFTER_WORDS = new Set([
  "return",
  "typeof",
  "instanceof",
  "in",
  "of",
  "new",
  "delete",
  "void",
  "throw",
  "case",
  "do",
  "else",
  "yield",
  "await",
]);

const isIdentStart = (c: number) =>
  (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95 || c === 36 || c > 127;
const isIdentPart = (c: number) => isIdentStart(c) || (c >= 48 && c <= 57);
const isSpace = (c: number) => c === 32 || c === 9 || c === 10 || c === 13 || c === 11 || c === 12;

/**
 * Every top-level (bracket depth 0) `[export [default]] [async] function name(...)` in the source,
 * in order. One pass, each character looked at a bounded number of times.
 */
export function scanFunctions(source: string): FunctionDeclaration[] {
  const found: FunctionDeclaration[] = [];
  const n = source.length;
  let i = 0;
  // Open brackets; a template literal's `${` is pushed as TEMPLATE so its `}` resumes the template.
  const TEMPLATE = 0;
  const stack: number[] = [];
  let templateDepth = 0;
  // What the last token was, for deciding whether `/` starts a regular expression.
  let regexAllowed = true;
  // A `/` at or before this index cannot start a regular expression (one already failed to end
  // on this line): keeps a line of many `/` from being rescanned once per `/`.
  let regexRefusedUntil = -1;
  // The JSDoc that ends right before the current token (only whitespace between), if any.
  let pendingDoc: string | null = null;
  // The declaration being read: its JSDoc, its name, and where its parameter list opened.
  let declarationDoc: string | null = null;
  let prefixDoc: string | null = null; // doc before `export` / `async`, carried to `function`
  let prefixWords = 0;
  let expectName = false;
  let name: string | null = null;
  let paramsAt = -1; // index after `(`; the `(` is at stack depth 1
  let paramsName = "";
  let paramsDoc = "";

  const resume = () => {
    // Any token other than the declaration's own words ends a pending declaration prefix.
    prefixWords = 0;
    prefixDoc = null;
    expectName = false;
    name = null;
  };

  while (i < n) {
    const c = source.charCodeAt(i);
    if (isSpace(c)) {
      i++;
      continue;
    }
    // Comments.
    if (c === 47 /* / */ && source.charCodeAt(i + 1) === 47) {
      const end = source.indexOf("\n", i + 2);
      i = end === -1 ? n : end + 1;
      pendingDoc = null;
      continue;
    }
    if (c === 47 && source.charCodeAt(i + 1) === 42 /* * */) {
      const end = source.indexOf("*/", i + 2);
      const isDoc = source.charCodeAt(i + 2) === 42 && end !== i + 2 && end !== -1;
      pendingDoc = isDoc ? source.slice(i + 3, end) : null;
      i = end === -1 ? n : end + 2;
      continue;
    }
    const docBefore = pendingDoc;
    pendingDoc = null;
    // Words.
    if (isIdentStart(c)) {
      const start = i;
      i++;
      while (i < n && isIdentPart(source.charCodeAt(i))) i++;
      const word = source.slice(start, i);
      regexAllowed = REGEX_AFTER_WORDS.has(word);
      if (stack.length !== 0) continue;
      if (expectName) {
        expectName = false;
        name = word;
        continue;
      }
      if (word === "function") {
        declarationDoc = prefixWords > 0 ? prefixDoc : docBefore;
        prefixWords = 0;
        prefixDoc = null;
        expectName = true;
        name = null;
        continue;
      }
      if (word === "export" || word === "default" || word === "async") {
        if (prefixWords === 0) prefixDoc = docBefore;
        prefixWords++;
        name = null;
        continue;
      }
      resume();
      continue;
    }
    // Strings.
    if (c === 34 /* " */ || c === 39 /* ' */) {
      i++;
      while (i < n) {
        const d = source.charCodeAt(i);
        if (d === 92 /* \ */) {
          i += 2;
          continue;
        }
        i++;
        if (d === c || d === 10) break; // an unterminated string ends at its line
      }
      regexAllowed = false;
      if (stack.length === 0) resume();
      continue;
    }
    // Template literals, and their `}` back into the template.
    if (c === 96 /* ` */ || (c === 125 /* } */ && stack.at(-1) === TEMPLATE)) {
      if (c === 125) {
        stack.pop();
        templateDepth--;
      }
      i++;
      while (i < n) {
        const d = source.charCodeAt(i);
        if (d === 92) {
          i += 2;
          continue;
        }
        if (d === 96) {
          i++;
          break;
        }
        if (d === 36 /* $ */ && source.charCodeAt(i + 1) === 123 /* { */) {
          i += 2;
          if (templateDepth >= TEMPLATE_DEPTH_MAX)
            throw invalidField(
              ["body", "source_code"],
              `template literals nest deeper than ${TEMPLATE_DEPTH_MAX}`,
            );
          stack.push(TEMPLATE);
          templateDepth++;
          break;
        }
        i++;
      }
      regexAllowed = stack.at(-1) === TEMPLATE;
      if (stack.length === 0) resume();
      continue;
    }
    // Regular-expression literals (a `/` where a value may start), ending on the same line.
    if (c === 47 && regexAllowed && i > regexRefusedUntil) {
      let j = i + 1;
      let inClass = false;
      let closed = false;
      while (j < n) {
        const d = source.charCodeAt(j);
        if (d === 10 || d === 13) break;
        if (d === 92) {
          j += 2;
          continue;
        }
        if (d === 91 /* [ */) inClass = true;
        else if (d === 93 /* ] */) inClass = false;
        else if (d === 47 && !inClass) {
          closed = true;
          break;
        }
        j++;
      }
      if (closed) {
        i = j + 1;
        while (i < n && isIdentPart(source.charCodeAt(i))) i++; // flags
        regexAllowed = false;
        if (stack.length === 0) resume();
        continue;
      }
      regexRefusedUntil = j; // a division after all; no later `/` on this line starts a literal
    }
    // Numbers (so that `1.5 / 2` divides).
    if (c >= 48 && c <= 57) {
      i++;
      while (i < n && (isIdentPart(source.charCodeAt(i)) || source.charCodeAt(i) === 46)) i++;
      regexAllowed = false;
      if (stack.length === 0) resume();
      continue;
    }
    // Brackets and other punctuation.
    i++;
    if (c === 40 /* ( */ || c === 91 /* [ */ || c === 123 /* { */) {
      if (c === 40 && stack.length === 0 && name !== null) {
        paramsAt = i;
        paramsName = name;
        paramsDoc = declarationDoc ?? "";
      } else if (stack.length === 0) {
        paramsAt = -1;
      }
      if (stack.length === 0) resume();
      stack.push(c);
      regexAllowed = true;
      continue;
    }
    if (c === 41 /* ) */ || c === 93 /* ] */ || c === 125 /* } */) {
      // A closing bracket with no opener is tolerated (the source may not even parse).
      if (stack.length > 0) stack.pop();
      if (stack.length === 0) {
        if (c === 41 && paramsAt !== -1)
          found.push({ name: paramsName, params: source.slice(paramsAt, i - 1), doc: paramsDoc });
        paramsAt = -1;
      }
      regexAllowed = c === 125;
      if (stack.length === 0) resume();
      continue;
    }
    regexAllowed = true;
    if (stack.length === 0) resume();
  }
  return found;
}

/** Splits a parameter list at its top-level commas (a default like `[1, 2]` stays whole). */
function splitParams(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"' || c === "'" || c === "`") {
      i++;
      while (i < text.length && text[i] !== c) i += text[i] === "\\" ? 2 : 1;
    } else if (c === "(" || c === "[" || c === "{" || c === "<") depth++;
    else if (c === ")" || c === "]" || c === "}" || (c === ">" && text[i - 1] !== "=")) depth--;
    else if (c === "," && depth <= 0) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(text.slice(start));
  return parts.map((p) => p.trim()).filter(Boolean);
}

export function jsSchema(source: string): DerivedSchema {
  const last = scanFunctions(source).at(-1);
  if (last === undefined)
    throw invalidField(["body", "source_code"], "no top-level function declaration found");
  const { doc, name, params: paramText } = last;
  const lines = doc
    .split("\n")
    .map((l) => l.replace(/^\s*\*\s?/, "").trimEnd())
    .filter((l) => l.length > 0);
  const description = lines
    .filter((l) => !l.startsWith("@"))
    .join("\n")
    .trim();
  const docs = new Map<string, { type?: string; text: string; optional: boolean }>();
  for (const line of lines) {
    // [\s\S]* rather than .*: a \r inside a line must not leave the engine backtracking over it.
    const m = /^@param\s+(?:\{([^}]+)\}\s+)?(\[?)([\w$]+)(?:=[^\]]*)?\]?\s*(?:-\s*)?([\s\S]*)$/.exec(line);
    if (m) docs.set(m[3]!, { ...(m[1] ? { type: m[1] } : {}), text: m[4] ?? "", optional: m[2] === "[" });
  }
  const properties: Record<string, unknown> = {};
  const required: string[] = [];
  for (const raw of splitParams(paramText)) {
    const param = /^([\w$]+)\s*(\?)?\s*(?::\s*((?:[^=]|=>)+))?(=(?!>)[\s\S]*)?$/.exec(raw);
    if (param === null)
      throw invalidField(["body", "source_code"], `unsupported parameter '${raw}' (use plain names)`);
    const [, pname = "", optionalMark, tsType, defaultValue] = param;
    const d = docs.get(pname);
    properties[pname] = { ...jsType(d?.type ?? tsType), ...(d?.text ? { description: d.text } : {}) };
    if (!optionalMark && !defaultValue && !d?.optional) required.push(pname);
  }
  return { name, description, parameters: { type: "object", properties, required } };
}
