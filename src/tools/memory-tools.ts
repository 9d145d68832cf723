// Letta's core-memory tools, executed inside the agent's turn against a working copy of its
// blocks. Edits are checked (read-only, limit) when made: a violation is an error returned to the
// model, and nothing is truncated. The step commits the working copy with its other writes.
import { BLOCK_LIMIT_CHARS_DEFAULT } from "../core/constants.ts";
import { newId } from "../core/ids.ts";
import type { Rng } from "../core/rng.ts";
import type { BlockRecord, Mutation } from "../storage/types.ts";

/** A failure the model caused (bad label, text not found, over the limit): reported to it. */
export class ToolError extends Error {
  override name = "ToolError";
}

const LINE_NUMBER_PREFIX = /\nLine \d+: /;
const LINE_NUMBER_WARNING = "# NOTE: Line numbers shown below";
const EDIT_SUCCESS = (label: string) =>
  `The core memory block with label \`${label}\` has been successfully edited. ` +
  "Your system prompt has been recompiled with the updated memory contents and is now active in your context. " +
  "Review the changes and make sure they are as expected (correct indentation, no duplicate lines, etc). " +
  "Edit the memory block again if necessary.";

function expandTabs(s: string): string {
  return s.replace(/\t/g, "        ");
}

function rejectLineNumbers(field: string, value: string): void {
  if (LINE_NUMBER_PREFIX.test(value)) {
    throw new ToolError(
      `${field} contains a line number prefix, which is not allowed. Do not include line numbers when calling memory tools (line numbers are for display purposes only).`,
    );
  }
  if (value.includes(LINE_NUMBER_WARNING)) {
    throw new ToolError(
      `${field} contains a line number warning, which is not allowed. Do not include line number information when calling memory tools (line numbers are for display purposes only).`,
    );
  }
}

/** The agent's core memory during one step: edits land here, then commit as one transaction. */
export class CoreMemory {
  private readonly blocks: BlockRecord[];
  private readonly original: Map<string, BlockRecord>;
  private readonly created = new Set<string>();
  private readonly detached = new Set<string>();

  constructor(
    blocks: BlockRecord[],
    private readonly agentId: string,
    private readonly nowMs: () => number,
    private readonly rng: Rng,
  ) {
    this.blocks = blocks.map((b) => ({ ...b }));
    this.original = new Map(blocks.map((b) => [b.id, b]));
  }

  list(): BlockRecord[] {
    return this.blocks.filter((b) => !this.detached.has(b.id));
  }

  get(label: string): BlockRecord {
    const block = this.list().find((b) => b.label === label);
    if (block === undefined) {
      const labels = this.list().map((b) => b.label);
      throw new ToolError(
        `No memory block with label '${label}'. Existing labels: ${labels.join(", ") || "(none)"}`,
      );
    }
    return block;
  }

  has(label: string): boolean {
    return this.list().some((b) => b.label === label);
  }

  /** Sets a block's value, enforcing read-only and the limit. */
  setValue(label: string, value: string): void {
    const block = this.get(label);
    if (block.read_only) throw new ToolError(`Memory block '${label}' is read-only and cannot be edited.`);
    if (value.length > block.limit) {
      throw new ToolError(
        `Edit failed: exceeds ${block.limit} character limit (requested ${value.length}) for block '${label}'. ` +
          "Shorten the text or move details to archival memory.",
      );
    }
    block.value = value;
  }

  create(label: string, value: string, description: string | null): BlockRecord {
    if (this.has(label)) throw new ToolError(`A memory block with label '${label}' already exists.`);
    if (value.length > BLOCK_LIMIT_CHARS_DEFAULT) {
      throw new ToolError(
        `Edit failed: exceeds ${BLOCK_LIMIT_CHARS_DEFAULT} character limit for block '${label}'.`,
      );
    }
    const nowMs = this.nowMs();
    const block: BlockRecord = {
      id: newId("block", this.rng),
      label,
      value,
      limit: BLOCK_LIMIT_CHARS_DEFAULT,
      description,
      read_only: false,
      metadata: {},
      is_template: false,
      template_name: null,
      hidden: null,
      tags: [],
      project_id: null,
      version: 1,
      created_at_ms: nowMs,
      updated_at_ms: nowMs,
    };
    this.blocks.push(block);
    this.created.add(block.id);
    return block;
  }

  detach(label: string): void {
    const block = this.get(label);
    if (block.read_only) throw new ToolError(`Memory block '${label}' is read-only and cannot be deleted.`);
    this.detached.add(block.id);
  }

  rename(label: string, newLabel: string, description?: string | null): void {
    const block = this.get(label);
    if (block.read_only) throw new ToolError(`Memory block '${label}' is read-only and cannot be renamed.`);
    if (newLabel !== label && this.has(newLabel)) {
      throw new ToolError(`A memory block with label '${newLabel}' already exists.`);
    }
    block.label = newLabel;
    if (description !== undefined) block.description = description;
  }

  /** The writes this step's edits need, versioned against what the step read. */
  mutations(): Mutation[] {
    const nowMs = this.nowMs();
    const out: Mutation[] = [];
    for (const block of this.blocks) {
      if (this.created.has(block.id)) {
        if (this.detached.has(block.id)) continue;
        out.push({ op: "put_block", block, create: true });
        out.push({ op: "attach_block", agent_id: this.agentId, block_id: block.id });
        continue;
      }
      const before = this.original.get(block.id)!;
      const changed =
        before.value !== block.value ||
        before.label !== block.label ||
        before.description !== block.description;
      if (changed) {
        out.push({
          op: "put_block",
          block: { ...block, version: before.version + 1, updated_at_ms: nowMs },
          create: false,
        });
      }
      if (this.detached.has(block.id))
        out.push({ op: "detach_block", agent_id: this.agentId, block_id: block.id });
    }
    return out;
  }

  changed(): boolean {
    return this.mutations().length > 0;
  }
}

type Args = Record<string, unknown>;

function str(args: Args, name: string, optional = false): string {
  const value = args[name];
  if (value === undefined || value === null) {
    if (optional) return "";
    throw new ToolError(`Missing required argument '${name}'.`);
  }
  if (typeof value !== "string") throw new ToolError(`Argument '${name}' must be a string.`);
  return value;
}

function labelFromPath(path: string): string {
  const label = path.replace(/^\/?memories\//, "").replace(/^\//, "");
  if (label.length === 0) throw new ToolError(`Invalid memory path '${path}': expected '/memories/<label>'.`);
  return label;
}

export const MEMORY_TOOL_NAMES = [
  "core_memory_append",
  "core_memory_replace",
  "memory_insert",
  "memory_replace",
  "memory_rethink",
  "memory_finish_edits",
  "memory",
  "memory_apply_patch",
] as const;

export function isMemoryTool(name: string): boolean {
  return (MEMORY_TOOL_NAMES as readonly string[]).includes(name);
}

/** Runs one memory tool; returns what the model is told (null for Letta's "None"). */
export function runMemoryTool(memory: CoreMemory, name: string, args: Args): string | null {
  switch (name) {
    case "core_memory_append": {
      const label = str(args, "label");
      memory.setValue(label, `${memory.get(label).value}\n${str(args, "content")}`);
      return null;
    }
    case "core_memory_replace": {
      const label = str(args, "label");
      const oldContent = str(args, "old_content");
      const current = memory.get(label).value;
      if (oldContent.length === 0 || !current.includes(oldContent)) {
        throw new ToolError(`Old content '${oldContent}' not found in memory block '${label}'`);
      }
      memory.setValue(label, current.split(oldContent).join(str(args, "new_content", true)));
      return null;
    }
    case "memory_replace": {
      const label = str(args, "label");
      const oldStr = expandTabs(str(args, "old_str"));
      const newStr = expandTabs(str(args, "new_str", true));
      rejectLineNumbers("old_str", oldStr);
      rejectLineNumbers("new_str", newStr);
      const current = expandTabs(memory.get(label).value);
      const occurrences = oldStr.length === 0 ? 0 : current.split(oldStr).length - 1;
      if (occurrences === 0) {
        throw new ToolError(
          `No replacement was performed, old_str \`${oldStr}\` did not appear verbatim in memory block with label \`${label}\`.`,
        );
      }
      if (occurrences > 1) {
        const lines = current
          .split("\n")
          .flatMap((line, i) => (line.includes(oldStr) ? [i + 1] : []))
          .join(", ");
        throw new ToolError(
          `No replacement was performed. Multiple occurrences of old_str \`${oldStr}\` in lines [${lines}]. Please ensure it is unique.`,
        );
      }
      memory.setValue(label, current.replace(oldStr, newStr));
      return EDIT_SUCCESS(label);
    }
    case "memory_insert": {
      const label = str(args, "label");
      const newStr = expandTabs(str(args, "new_str"));
      rejectLineNumbers("new_str", newStr);
      const lines = expandTabs(memory.get(label).value).split("\n");
      let at = args.insert_line === undefined || args.insert_line === null ? -1 : Number(args.insert_line);
      if (!Number.isInteger(at)) throw new ToolError("Argument 'insert_line' must be an integer.");
      if (at === -1) at = lines.length;
      else if (at < 0 || at > lines.length) {
        throw new ToolError(
          `Invalid \`insert_line\` parameter: ${at}. It should be within the range of lines of the memory block: [0, ${lines.length}], or -1 to append to the end of the memory block.`,
        );
      }
      memory.setValue(label, [...lines.slice(0, at), ...newStr.split("\n"), ...lines.slice(at)].join("\n"));
      return EDIT_SUCCESS(label);
    }
    case "memory_rethink": {
      const label = str(args, "label");
      const newMemory = str(args, "new_memory");
      rejectLineNumbers("new_memory", newMemory);
      if (!memory.has(label)) memory.create(label, newMemory, null);
      else memory.setValue(label, newMemory);
      return EDIT_SUCCESS(label);
    }
    case "memory_finish_edits":
      return null;
    case "memory":
      return runMemoryCommand(memory, args);
    case "memory_apply_patch":
      return applyPatch(memory, str(args, "label", true), str(args, "patch"));
    default:
      throw new ToolError(`Unknown memory tool '${name}'.`);
  }
}

function runMemoryCommand(memory: CoreMemory, args: Args): string {
  const command = str(args, "command");
  switch (command) {
    case "create": {
      const label = labelFromPath(str(args, "path"));
      const description = typeof args.description === "string" ? args.description : null;
      memory.create(label, str(args, "file_text", true), description);
      return `Memory block '${label}' created.`;
    }
    case "str_replace":
      return runMemoryTool(memory, "memory_replace", {
        label: labelFromPath(str(args, "path")),
        old_str: args.old_string ?? args.old_str,
        new_str: args.new_string ?? args.new_str ?? "",
      }) as string;
    case "insert":
      return runMemoryTool(memory, "memory_insert", {
        label: labelFromPath(str(args, "path")),
        new_str: args.insert_text ?? args.new_str,
        insert_line: args.insert_line ?? -1,
      }) as string;
    case "delete": {
      const label = labelFromPath(str(args, "path"));
      memory.detach(label);
      return `Memory block '${label}' deleted.`;
    }
    case "rename": {
      if (typeof args.old_path === "string" && typeof args.new_path === "string") {
        const from = labelFromPath(args.old_path);
        const to = labelFromPath(args.new_path);
        memory.rename(from, to);
        return `Memory block '${from}' renamed to '${to}'.`;
      }
      const label = labelFromPath(str(args, "path"));
      memory.rename(label, label, typeof args.description === "string" ? args.description : null);
      return `Memory block '${label}' description updated.`;
    }
    default:
      throw new ToolError(
        `Unknown memory command '${command}'. Supported commands: create, str_replace, insert, delete, rename.`,
      );
  }
}

/** Applies one simplified unified-diff body (lines starting with ' ', '-', '+'; '@@' splits hunks). */
function applyHunks(current: string, body: string[], label: string): string {
  const hunks: string[][] = [[]];
  for (const line of body) {
    if (line.startsWith("@@")) hunks.push([]);
    else hunks.at(-1)!.push(line);
  }
  let text = expandTabs(current);
  for (const hunk of hunks) {
    if (hunk.length === 0) continue;
    const before: string[] = [];
    const after: string[] = [];
    for (const raw of hunk) {
      const line = expandTabs(raw);
      const tag = line[0];
      const rest = line.slice(1);
      if (tag === " ") {
        before.push(rest);
        after.push(rest);
      } else if (tag === "-") before.push(rest);
      else if (tag === "+") after.push(rest);
      else if (line.length === 0) {
        before.push("");
        after.push("");
      } else
        throw new ToolError(
          `Invalid patch line for block '${label}': '${raw}' must start with ' ', '-' or '+'.`,
        );
    }
    const from = before.join("\n");
    const to = after.join("\n");
    if (from.length === 0) {
      text = text.length === 0 ? to : `${text}\n${to}`;
      continue;
    }
    const count = text.split(from).length - 1;
    if (count === 0) throw new ToolError(`Patch context not found in memory block '${label}':\n${from}`);
    if (count > 1)
      throw new ToolError(`Patch context is ambiguous (${count} matches) in memory block '${label}'.`);
    text = text.replace(from, to);
  }
  return text;
}

function applyPatch(memory: CoreMemory, label: string, patch: string): string {
  rejectLineNumbers("patch", patch);
  const lines = patch.replace(/\r\n/g, "\n").split("\n");
  if (!lines.some((l) => l.startsWith("*** "))) {
    if (label.length === 0) throw new ToolError("Argument 'label' is required for a single-block patch.");
    memory.setValue(label, applyHunks(memory.get(label).value, lines, label));
    return EDIT_SUCCESS(label);
  }
  const edited: string[] = [];
  let current: {
    kind: "add" | "update" | "delete";
    label: string;
    body: string[];
    description: string | null;
  } | null = null;
  const flush = () => {
    if (current === null) return;
    if (current.kind === "add") {
      const value = current.body.map((l) => (l.startsWith("+") ? l.slice(1) : l)).join("\n");
      memory.create(current.label, value, current.description);
    } else if (current.kind === "update") {
      memory.setValue(
        current.label,
        applyHunks(memory.get(current.label).value, current.body, current.label),
      );
    } else memory.detach(current.label);
    edited.push(current.label);
    current = null;
  };
  for (const line of lines) {
    const header = /^\*\*\* (Add|Update|Delete) Block: (.+)$/.exec(line);
    if (header) {
      flush();
      const kind = header[1]!.toLowerCase() as "add" | "update" | "delete";
      current = { kind, label: header[2]!.trim(), body: [], description: null };
      continue;
    }
    const move = /^\*\*\* Move to: (.+)$/.exec(line);
    if (move) {
      const target = current as { label: string } | null;
      if (target === null) throw new ToolError("'*** Move to:' must follow a block header.");
      flush();
      const from = edited.at(-1)!;
      memory.rename(from, move[1]!.trim());
      continue;
    }
    if (line.startsWith("*** Begin Patch") || line.startsWith("*** End Patch")) continue;
    if (current === null) {
      if (line.trim().length === 0) continue;
      throw new ToolError(`Patch text outside a block header: '${line}'`);
    }
    const c = current as { kind: string; body: string[]; description: string | null };
    if (c.kind === "add" && c.body.length === 0 && line.startsWith("Description: ")) {
      c.description = line.slice("Description: ".length);
      continue;
    }
    c.body.push(line);
  }
  flush();
  return `Patch applied to memory blocks: ${edited.join(", ")}.`;
}
