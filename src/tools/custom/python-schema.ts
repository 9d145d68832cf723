// Derives a tool's JSON schema from Python source the way Letta does: the last top-level function,
// its type hints and its Google-style docstring. Parsing runs in python3's own `ast` module (no code
// from the tool is executed), in a child process with a time limit.
import { spawnSync } from "node:child_process";
import { invalidField } from "../../core/errors.ts";

export const SCHEMA_PARSE_TIMEOUT_MS = 10_000;

const PARSER = String.raw`
import ast, json, re, sys
src = sys.stdin.read()
try:
    tree = ast.parse(src)
except SyntaxError as e:
    print(json.dumps({"error": f"SyntaxError: {e.msg} (line {e.lineno})"})); sys.exit(0)
funcs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
if not funcs:
    print(json.dumps({"error": "no top-level function found"})); sys.exit(0)
f = funcs[-1]
def js_type(node):
    if node is None: return {"type": "string"}
    s = ast.unparse(node)
    m = re.match(r"^(Optional|typing\.Optional)\[(.*)\]$", s)
    if m: return js_type(ast.parse(m.group(2), mode="eval").body)
    m = re.match(r"^(Literal|typing\.Literal)\[(.*)\]$", s)
    if m:
        vals = ast.literal_eval("[" + m.group(2) + "]")
        return {"type": "string" if all(isinstance(v, str) for v in vals) else "number", "enum": vals}
    m = re.match(r"^(List|list|typing\.List)\[(.*)\]$", s)
    if m: return {"type": "array", "items": js_type(ast.parse(m.group(2), mode="eval").body)}
    base = {"int": "integer", "float": "number", "str": "string", "bool": "boolean", "list": "array", "List": "array",
            "dict": "object", "Dict": "object", "Any": "string"}
    head = s.split("[")[0].split(".")[-1]
    return {"type": base.get(head, "string")}
doc = ast.get_docstring(f) or ""
lines = doc.split("\n")
desc_lines, arg_docs, section, current = [], {}, None, None
for line in lines:
    stripped = line.strip()
    if re.match(r"^(Args|Arguments|Parameters):\s*$", stripped): section = "args"; continue
    if re.match(r"^(Returns|Return|Raises|Yields|Examples?):\s*$", stripped): section = "other"; continue
    if section is None:
        desc_lines.append(line)
    elif section == "args":
        m = re.match(r"^(\w+)\s*(\([^)]*\))?\s*:\s*(.*)$", stripped)
        if m and (line.startswith("    ") or line.startswith("\t") or not line.startswith(" ")) and m.group(1) in [a.arg for a in f.args.args]:
            current = m.group(1); arg_docs[current] = m.group(3).strip()
        elif current and stripped:
            arg_docs[current] += " " + stripped
description = "\n".join(desc_lines).strip()
props, required = {}, []
args = [a for a in f.args.args if a.arg not in ("self", "agent_state")]
defaults = [None] * (len(f.args.args) - len(f.args.defaults)) + list(f.args.defaults)
default_of = {a.arg: d for a, d in zip(f.args.args, defaults)}
for a in args:
    p = js_type(a.annotation)
    if a.arg in arg_docs: p["description"] = arg_docs[a.arg]
    props[a.arg] = p
    if default_of.get(a.arg) is None and not ast.unparse(a.annotation or ast.Constant(None)).startswith("Optional"):
        required.append(a.arg)
print(json.dumps({"name": f.name, "description": description, "parameters": {"type": "object", "properties": props, "required": required}}))
`;

export interface DerivedSchema {
  name: string;
  description: string;
  parameters: { type: "object"; properties: Record<string, unknown>; required: string[] };
}

export function pythonSchema(source: string): DerivedSchema {
  const result = spawnSync("python3", ["-c", PARSER], {
    input: source,
    encoding: "utf8",
    timeout: SCHEMA_PARSE_TIMEOUT_MS,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
  });
  if (result.error !== undefined || result.status !== 0) {
    throw invalidField(
      ["body", "source_code"],
      `could not parse the Python source: ${result.error?.message ?? result.stderr}`,
    );
  }
  const parsed = JSON.parse(result.stdout) as DerivedSchema | { error: string };
  if ("error" in parsed)
    throw invalidField(["body", "source_code"], `could not parse the Python source: ${parsed.error}`);
  return parsed;
}
