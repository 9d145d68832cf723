// Derives a tool's JSON schema from Python source the way Letta does: the last top-level function,
// its type hints and its Google-style docstring. Parsing runs in python3's own `ast` module (no code
// from the tool is executed), in a child process with a time limit and an output cap.
//
// The child is awaited, never waited for: the event loop keeps serving while python3 parses (a
// spawnSync held every request up for as long as the parse took). At most
// SCHEMA_EXTRACTIONS_CONCURRENT_MAX parses run at once, SCHEMA_EXTRACTIONS_QUEUED_MAX more wait in
// line, and a request beyond both is refused at once with a 503 (OVERLOADED), so a flood of tool
// creates cannot fill the host with python3 processes.
import { spawn } from "node:child_process";
import { invalidField, KelpieError } from "../../core/errors.ts";
import { Slots } from "../sandbox/slots.ts";

export const SCHEMA_PARSE_TIMEOUT_MS = 10_000;
/** python3 schema parses running at once (each takes a core while it runs). */
export const SCHEMA_EXTRACTIONS_CONCURRENT_MAX = 2;
/** Parses waiting for a slot; one more is refused with a 503. */
export const SCHEMA_EXTRACTIONS_QUEUED_MAX = 64;
/** The parser's answer: a schema read from a source of at most TOOL_SOURCE_CHARS_MAX (1,000,000)
 * characters, JSON-escaped, fits with room to spare; more is a parser fault, refused. */
export const SCHEMA_OUTPUT_BYTES_MAX = 8 * 1024 * 1024;
/** What is kept of python3's stderr for an error message. */
const SCHEMA_STDERR_BYTES_MAX = 4 * 1024;

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

/** Bounds on concurrent python3 parses; one per server process (`pythonSchema` uses it). */
export class SchemaExtractions {
  private readonly slots: Slots;

  constructor(
    bounds: { concurrentMax: number; queuedMax: number } = {
      concurrentMax: SCHEMA_EXTRACTIONS_CONCURRENT_MAX,
      queuedMax: SCHEMA_EXTRACTIONS_QUEUED_MAX,
    },
    private readonly command = "python3",
  ) {
    this.slots = new Slots(bounds.concurrentMax, bounds.queuedMax);
  }

  load(): { running: number; waiting: number } {
    return this.slots.load();
  }

  async pythonSchema(source: string): Promise<DerivedSchema> {
    const slot = this.slots.acquire();
    if (slot === null) {
      throw new KelpieError(
        "OVERLOADED",
        `Too many Python tool schemas being read at once: ${this.slots.runningMax} are running and ${this.slots.waitingMax} are waiting (the server's limits SCHEMA_EXTRACTIONS_CONCURRENT_MAX and SCHEMA_EXTRACTIONS_QUEUED_MAX). Try again shortly.`,
      );
    }
    const release = await slot;
    try {
      return parsed(await runParser(this.command, source));
    } finally {
      release();
    }
  }
}

function parseFailure(detail: string): KelpieError {
  return invalidField(["body", "source_code"], `could not parse the Python source: ${detail}`);
}

/** python3's stdout, or a 422 saying why there is none (no python3, a timeout, too much output). */
function runParser(command: string, source: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, ["-c", PARSER], {
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
      stdio: ["pipe", "pipe", "pipe"],
      timeout: SCHEMA_PARSE_TIMEOUT_MS,
      killSignal: "SIGKILL",
    });
    const stdout: Buffer[] = [];
    let stdoutBytes = 0;
    let stderr = "";
    let failure: KelpieError | undefined;
    child.stdout.on("data", (chunk: Buffer) => {
      stdoutBytes += chunk.length;
      if (stdoutBytes > SCHEMA_OUTPUT_BYTES_MAX) {
        failure ??= parseFailure(`the parser wrote more than ${SCHEMA_OUTPUT_BYTES_MAX} bytes`);
        child.kill("SIGKILL");
        return;
      }
      stdout.push(chunk);
    });
    child.stderr.on("data", (chunk: Buffer) => {
      if (stderr.length < SCHEMA_STDERR_BYTES_MAX)
        stderr += chunk.toString("utf8", 0, SCHEMA_STDERR_BYTES_MAX - stderr.length);
    });
    // A child that never started (no python3) or died early closes its stdin under our write; the
    // child's own 'error' or exit says what happened, so the pipe's error adds nothing.
    child.stdin.on("error", () => undefined);
    child.on("error", (err) => {
      failure ??= parseFailure(err.message);
    });
    child.on("close", (code, signal) => {
      if (failure !== undefined) return reject(failure);
      if (signal !== null) {
        return reject(
          parseFailure(
            signal === "SIGKILL"
              ? `python3 did not finish within ${SCHEMA_PARSE_TIMEOUT_MS} ms`
              : `python3 ended with ${signal}`,
          ),
        );
      }
      if (code !== 0) return reject(parseFailure(stderr.trim() || `python3 exited with ${code}`));
      resolve(Buffer.concat(stdout).toString("utf8"));
    });
    child.stdin.end(source);
  });
}

function parsed(stdout: string): DerivedSchema {
  let value: DerivedSchema | { error: string };
  try {
    value = JSON.parse(stdout) as DerivedSchema | { error: string };
  } catch {
    throw parseFailure("the parser's answer was not JSON");
  }
  if ("error" in value) throw parseFailure(value.error);
  return value;
}

const extractions = new SchemaExtractions();

/** The schema of Python source, read by python3 off the event loop (bounded as described above). */
export function pythonSchema(source: string): Promise<DerivedSchema> {
  return extractions.pythonSchema(source);
}
