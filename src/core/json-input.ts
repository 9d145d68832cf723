// JSON from clients, checked before anything stores it: nesting bounded (JSON_DEPTH_MAX) by a
// linear scan of the text before parsing, so a 200,000-deep value never reaches recursive code;
// and no string (or key) holding U+0000 or an unpaired surrogate, which PostgreSQL's text and
// jsonb refuse. Both engines get the same 422 naming the field, instead of a 500 on one of them.
import { JSON_DEPTH_MAX } from "./constants.ts";
import { invalidField } from "./errors.ts";

type Loc = (string | number)[];

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACE = 0x7d;
const CLOSE_BRACKET = 0x5d;

/** The deepest nesting of arrays and objects in JSON text, counting only outside strings; stops past `max`. */
export function jsonDepth(text: string, max: number = JSON_DEPTH_MAX): number {
  let depth = 0;
  let deepest = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      i = stringEnd(text, i);
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      depth++;
      if (depth > deepest) {
        deepest = depth;
        if (deepest > max) return deepest;
      }
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      depth--;
    }
  }
  return deepest;
}

/** The index of the quote closing the string opened at `open` (text.length if none): a quote after an even run of backslashes. */
function stringEnd(text: string, open: number): number {
  let q = open;
  for (;;) {
    q = text.indexOf('"', q + 1);
    if (q === -1) return text.length;
    let backslashes = 0;
    while (text.charCodeAt(q - 1 - backslashes) === BACKSLASH) backslashes++;
    if (backslashes % 2 === 0) return q;
  }
}

// An escaped NUL or surrogate in the text, or a raw one: only then is the parsed value walked.
// biome-ignore lint/suspicious/noControlCharactersInRegex: U+0000 is what this looks for
const MAYBE_UNSTORABLE = /\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})|[\u0000\ud800-\udfff]/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: U+0000 is what this looks for
const UNSTORABLE_CHAR = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Why a string cannot be stored, or null if it can. */
export function unstorableReason(s: string): string | null {
  const m = UNSTORABLE_CHAR.exec(s);
  if (m === null) return null;
  return m[0] === "\u0000"
    ? "contains the character U+0000, which cannot be stored"
    : `contains an unpaired surrogate (U+${m[0].charCodeAt(0).toString(16).toUpperCase()}), which is not valid Unicode`;
}

/** The first string or key (in document order) that cannot be stored, with where it is. */
export function findUnstorable(value: unknown, loc: Loc): { loc: Loc; reason: string } | null {
  if (typeof value === "string") {
    const reason = unstorableReason(value);
    return reason === null ? null : { loc, reason };
  }
  if (value === null || typeof value !== "object") return null;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = findUnstorable(value[i], [...loc, i]);
      if (found !== null) return found;
    }
    return null;
  }
  for (const [key, v] of Object.entries(value)) {
    const keyReason = unstorableReason(key);
    if (keyReason !== null) return { loc: [...loc, key], reason: `key ${keyReason}` };
    const found = findUnstorable(v, [...loc, key]);
    if (found !== null) return found;
  }
  return null;
}

/** Throws a 422 naming the field if `value` holds a string that cannot be stored. */
export function assertStorable(value: unknown, loc: Loc): void {
  const found = findUnstorable(value, loc);
  if (found !== null) throw invalidField(found.loc, found.reason, "string_unstorable");
}

/**
 * Parses client JSON with both checks. `loc` names where the text came from (["body"], or the
 * agent file's field). Syntax errors are thrown as the SyntaxError JSON.parse raises.
 */
export function parseJsonInput(text: string, loc: Loc): unknown {
  if (jsonDepth(text) > JSON_DEPTH_MAX) {
    throw invalidField(loc, `nests arrays and objects deeper than ${JSON_DEPTH_MAX} levels`, "json_too_deep");
  }
  const value: unknown = JSON.parse(text);
  if (MAYBE_UNSTORABLE.test(text)) assertStorable(value, loc);
  return value;
}
