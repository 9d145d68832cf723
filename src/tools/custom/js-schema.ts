// Derives a tool's JSON schema from JavaScript/TypeScript source: the last top-level function
// declaration and the JSDoc block right before it (description, @param {type} name - text).
import { invalidField } from "../../core/errors.ts";
import type { DerivedSchema } from "./python-schema.ts";

const FUNCTION_PATTERN =
  /(\/\*\*([\s\S]*?)\*\/\s*)?(?:export\s+)?(?:async\s+)?function\s+([A-Za-z_$][\w$]*)\s*\(([^)]*)\)/g;
const JS_TYPES: Record<string, string> = {
  string: "string",
  number: "number",
  integer: "integer",
  boolean: "boolean",
  object: "object",
  array: "array",
  any: "string",
};

function jsType(raw: string | undefined): Record<string, unknown> {
  const t = (raw ?? "string").trim();
  if (t.endsWith("[]")) return { type: "array", items: jsType(t.slice(0, -2)) };
  const generic = /^Array<(.+)>$/.exec(t);
  if (generic) return { type: "array", items: jsType(generic[1]) };
  return { type: JS_TYPES[t.toLowerCase()] ?? "string" };
}

export function jsSchema(source: string): DerivedSchema {
  const matches = [...source.matchAll(FUNCTION_PATTERN)];
  const last = matches.at(-1);
  if (last === undefined)
    throw invalidField(["body", "source_code"], "no top-level function declaration found");
  const [, , doc = "", name = "", paramText = ""] = last;
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
    const m = /^@param\s+(?:\{([^}]+)\}\s+)?(\[?)([\w$]+)(?:=[^\]]*)?\]?\s*(?:-\s*)?(.*)$/.exec(line);
    if (m) docs.set(m[3]!, { ...(m[1] ? { type: m[1] } : {}), text: m[4] ?? "", optional: m[2] === "[" });
  }
  const properties: Record<string, unknown> = {};
  const required: string[] = [];
  for (const raw of paramText
    .split(",")
    .map((p) => p.trim())
    .filter(Boolean)) {
    const param = /^([\w$]+)\s*(\?)?\s*(?::\s*([^=]+))?(=.*)?$/.exec(raw);
    if (param === null)
      throw invalidField(["body", "source_code"], `unsupported parameter '${raw}' (use plain names)`);
    const [, pname = "", optionalMark, tsType, defaultValue] = param;
    const d = docs.get(pname);
    properties[pname] = { ...jsType(d?.type ?? tsType), ...(d?.text ? { description: d.text } : {}) };
    if (!optionalMark && !defaultValue && !d?.optional) required.push(pname);
  }
  return { name, description, parameters: { type: "object", properties, required } };
}
