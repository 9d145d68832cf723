// Prompt assembly: the agent's system prompt, then EVERY core memory block (label, description,
// characters used of the limit, read-only mark, value), then memory metadata — one system message,
// rebuilt for each step so the model always sees its memory as committed.
import type { BlockRecord } from "../storage/types.ts";

export interface MemoryMetadata {
  nowMs: number;
  blocksUpdatedAtMs: number;
  recallMessagesCount: number;
  archivalPassagesCount: number;
}

function escapeTag(label: string): string {
  return label.replace(/[^A-Za-z0-9_.-]/g, "_");
}

export function compileMemoryBlocks(blocks: BlockRecord[]): string {
  const lines: string[] = [
    "<memory_blocks>",
    "The following memory blocks are currently engaged in your core memory unit:",
    "",
  ];
  for (const block of blocks) {
    const tag = escapeTag(block.label);
    lines.push(`<${tag}>`);
    if (block.description) lines.push("<description>", block.description, "</description>");
    lines.push(
      "<metadata>",
      ...(block.read_only ? ["- read_only=true"] : []),
      `- chars_current=${block.value.length}`,
      `- chars_limit=${block.limit}`,
      "</metadata>",
      "<value>",
      block.value,
      "</value>",
      `</${tag}>`,
      "",
    );
  }
  lines.push("</memory_blocks>");
  return lines.join("\n");
}

export function compileMemoryMetadata(meta: MemoryMetadata): string {
  return [
    "<memory_metadata>",
    `- The current system date is: ${new Date(meta.nowMs).toISOString()}`,
    `- Memory blocks were last modified: ${new Date(meta.blocksUpdatedAtMs).toISOString()}`,
    `- ${meta.recallMessagesCount} previous messages between you and the user are stored in recall memory (use tools to access them)`,
    `- ${meta.archivalPassagesCount} total memories you created are stored in archival memory (use tools to access them)`,
    "</memory_metadata>",
  ].join("\n");
}

/** The whole system message for one step. */
export function compileSystemMessage(system: string, blocks: BlockRecord[], meta: MemoryMetadata): string {
  return [system.trimEnd(), "", compileMemoryBlocks(blocks), "", compileMemoryMetadata(meta)].join("\n");
}
