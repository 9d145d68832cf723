// Letta's built-in tools: names, descriptions and JSON schemas as Letta derives them from the
// docstrings in letta/functions/function_sets/{base,multi_agent}.py, and the default tool set
// per agent type (letta/services/agent_manager.py with the lists in letta/constants.py).
// Schemas are stored without `request_heartbeat`; prompt assembly adds it for agent types that
// use heartbeats, as Letta does.
import { createHash } from "node:crypto";

export interface ToolJsonSchema {
  name: string;
  description: string;
  parameters: { type: "object"; properties: Record<string, unknown>; required: string[] };
}

export interface BuiltinTool {
  name: string;
  tool_type:
    | "letta_core"
    | "letta_memory_core"
    | "letta_multi_agent_core"
    | "letta_sleeptime_core"
    | "letta_builtin";
  description: string;
  json_schema: ToolJsonSchema;
  source_code: string | null;
  return_char_limit: number;
}

/** Letta's FUNCTION_RETURN_CHAR_LIMIT. */
export const FUNCTION_RETURN_CHARS_MAX = 50_000;

export const AGENT_TYPES: readonly string[] = [
  "memgpt_agent",
  "memgpt_v2_agent",
  "letta_v1_agent",
  "react_agent",
  "workflow_agent",
  "split_thread_agent",
  "sleeptime_agent",
  "voice_convo_agent",
  "voice_sleeptime_agent",
];

const str = (description: string) => ({ type: "string", description });
const strArray = (description: string) => ({ type: "array", items: { type: "string" }, description });
const int = (description: string) => ({ type: "integer", description });

function tool(
  name: string,
  tool_type: BuiltinTool["tool_type"],
  description: string,
  properties: Record<string, unknown>,
  required: string[],
): BuiltinTool {
  return {
    name,
    tool_type,
    description,
    json_schema: { name, description, parameters: { type: "object", properties, required } },
    source_code: null,
    return_char_limit: FUNCTION_RETURN_CHARS_MAX,
  };
}

const DATE_FORMAT_NOTE = 'ISO 8601 format: "YYYY-MM-DD" or "YYYY-MM-DDTHH:MM".';

export const BUILTIN_TOOLS: readonly BuiltinTool[] = [
  tool(
    "send_message",
    "letta_core",
    "Sends a message to the human user.",
    { message: str("Message contents. All unicode (including emojis) are supported.") },
    ["message"],
  ),
  tool(
    "conversation_search",
    "letta_core",
    "Search prior conversation history using hybrid search (text + semantic similarity).",
    {
      query: str(
        "String to search for using both text matching and semantic similarity. If not provided, returns messages based on other filters (time range, roles).",
      ),
      roles: {
        type: "array",
        items: { type: "string", enum: ["assistant", "user", "tool"] },
        description: "Optional list of message roles to filter by.",
      },
      limit: int("Maximum number of results to return. Uses system default if not specified."),
      start_date: str(
        `Filter results to messages created on or after this date (INCLUSIVE). When using date-only format (e.g., "2024-01-15"), includes messages starting from 00:00:00 of that day. ${DATE_FORMAT_NOTE}`,
      ),
      end_date: str(
        `Filter results to messages created on or before this date (INCLUSIVE). When using date-only format (e.g., "2024-01-20"), includes all messages from that entire day. ${DATE_FORMAT_NOTE}`,
      ),
    },
    [],
  ),
  tool(
    "archival_memory_insert",
    "letta_core",
    "Add information to long-term archival memory for later retrieval.\n\nUse this tool to store facts, knowledge, or context that you want to remember across all future conversations. Archival memory is permanent and searchable by semantic similarity.",
    {
      content: str("The information to store. Should be clear and self-contained."),
      tags: strArray('Optional list of category tags (e.g., ["meetings", "project-updates"])'),
    },
    ["content"],
  ),
  tool(
    "archival_memory_search",
    "letta_core",
    "Search archival memory using semantic similarity to find relevant information.\n\nThis tool searches your long-term memory storage by meaning, not exact keyword matching. Use it when you need to recall information from past conversations or knowledge you've stored.",
    {
      query: str('What you\'re looking for, described naturally (e.g., "meetings about API redesign")'),
      tags: strArray("Filter to memories with these tags. Use tag_match_mode to control matching."),
      tag_match_mode: {
        type: "string",
        enum: ["any", "all"],
        description: '"any" = match memories with ANY of the tags, "all" = match only memories with ALL tags',
      },
      top_k: int("Maximum number of results to return (default: 10)"),
      start_datetime: str(
        'Only return memories created after this time (ISO 8601: "2024-01-15" or "2024-01-15T14:30")',
      ),
      end_datetime: str("Only return memories created before this time (ISO 8601 format)"),
    },
    ["query"],
  ),
  tool(
    "core_memory_append",
    "letta_memory_core",
    "Append to the contents of core memory.",
    {
      label: str("Section of the memory to be edited."),
      content: str("Content to write to the memory. All unicode (including emojis) are supported."),
    },
    ["label", "content"],
  ),
  tool(
    "core_memory_replace",
    "letta_memory_core",
    "Replace the contents of core memory. To delete memories, use an empty string for new_content.",
    {
      label: str("Section of the memory to be edited."),
      old_content: str("String to replace. Must be an exact match."),
      new_content: str("Content to write to the memory. All unicode (including emojis) are supported."),
    },
    ["label", "old_content", "new_content"],
  ),
  tool(
    "memory",
    "letta_memory_core",
    "Memory management tool with various sub-commands for memory block operations.",
    {
      command: str(
        'The sub-command to execute. Supported commands:\n- "create": Create a new memory block\n- "str_replace": Replace text in a memory block\n- "insert": Insert text at a specific line in a memory block\n- "delete": Delete a memory block\n- "rename": Rename a memory block',
      ),
      path: str("Path to the memory block (for str_replace, insert, delete)"),
      file_text: str("The value to set in the memory block (for create)"),
      description: str("The description to set in the memory block (for create, rename)"),
      old_string: str("Old text to replace (for str_replace)"),
      new_string: str("New text to replace with (for str_replace)"),
      insert_line: int("Line number to insert at (for insert)"),
      insert_text: str("Text to insert (for insert)"),
      old_path: str("Old path for rename operation"),
      new_path: str("New path for rename operation"),
    },
    ["command"],
  ),
  tool(
    "memory_apply_patch",
    "letta_memory_core",
    'Apply a simplified unified-diff style patch to one or more memory blocks.\n\nBackwards compatible behavior:\n- If `patch` contains no "***" headers, it applies the patch to the single memory block identified by `label`.\n\nExtended, codex-style behavior (multi-block):\n- `*** Add Block: <label>`\n    - Optional next line: `Description: <text>`\n    - File contents are given by subsequent lines starting with `+`\n- `*** Delete Block: <label>`\n- `*** Update Block: <label>`\n    - Patch body is the same simplified unified diff format (lines start with " ", "-", "+")\n    - Optional "@@" lines can be used to delimit hunks\n- `*** Move to: <new_label>`\n    - Renames the most recent block referenced by an Add/Update/Delete header\n\n- Do not include line number prefixes like "12→" anywhere in the patch. Line numbers are for display only.\n- Do not include the line-number warning banner. Provide only the text to edit.\n- Tabs are normalized to spaces for matching consistency.',
    {
      label: str(
        'The label of the memory block to patch. Required for single-block mode (when patch contains no "***" headers). Set to empty string "" when using multi-block mode with "*** Add Block:", "*** Delete Block:", or "*** Update Block:" headers.',
      ),
      patch: str(
        'The unified diff-style patch to apply. Can be either: (1) a simple unified diff for single-block mode, or (2) a multi-block patch with "***" headers for creating, deleting, updating, or renaming multiple blocks.',
      ),
    },
    ["label", "patch"],
  ),
  tool(
    "memory_insert",
    "letta_sleeptime_core",
    "The memory_insert command allows you to insert text at a specific location in a memory block.",
    {
      label: str("Section of the memory to be edited, identified by its label."),
      new_str: str("The text to insert. Do not include line number prefixes."),
      insert_line: int(
        "The line number after which to insert the text (0 for beginning of file). Defaults to -1 (end of the file).",
      ),
    },
    ["label", "new_str"],
  ),
  tool(
    "memory_replace",
    "letta_sleeptime_core",
    "The memory_replace command allows you to replace a specific string in a memory block with a new string. This is used for making precise edits.\nDo NOT attempt to replace long strings, e.g. do not attempt to replace the entire contents of a memory block with a new string.",
    {
      label: str("Section of the memory to be edited, identified by its label."),
      old_str: str("The text to replace (must match exactly, including whitespace and indentation)."),
      new_str: str("The new text to insert in place of the old text. Do not include line number prefixes."),
    },
    ["label", "old_str", "new_str"],
  ),
  tool(
    "memory_rethink",
    "letta_sleeptime_core",
    "The memory_rethink command allows you to completely rewrite the contents of a memory block. Use this tool to make large sweeping changes (e.g. when you want to condense or reorganize the memory blocks), do NOT use this tool to make small precise edits (e.g. add or remove a line, replace a specific string, etc).",
    {
      label: str("The memory block to be rewritten, identified by its label."),
      new_memory: str(
        "The new memory contents with information integrated from existing memory blocks and the conversation context.",
      ),
    },
    ["label", "new_memory"],
  ),
  tool(
    "memory_finish_edits",
    "letta_sleeptime_core",
    "Call the memory_finish_edits command when you are finished making edits (integrating all new information) into the memory blocks. This function is called when the agent is done rethinking the memory.",
    {},
    [],
  ),
  tool(
    "send_message_to_agent_and_wait_for_reply",
    "letta_multi_agent_core",
    "Sends a message to a specific Letta agent within the same organization and waits for a response. The sender's identity is automatically included, so no explicit introduction is needed in the message. This function is designed for two-way communication where a reply is expected.",
    {
      message: str("The content of the message to be sent to the target agent."),
      other_agent_id: str("The unique identifier of the target Letta agent."),
    },
    ["message", "other_agent_id"],
  ),
  tool(
    "send_message_to_agents_matching_tags",
    "letta_multi_agent_core",
    "Sends a message to all agents within the same organization that match the specified tag criteria. Agents must possess *all* of the tags in `match_all` and *at least one* of the tags in `match_some` to receive the message.",
    {
      message: str("The content of the message to be sent to each matching agent."),
      match_all: strArray("A list of tags that an agent must possess to receive the message."),
      match_some: strArray("A list of tags where an agent must have at least one to qualify."),
    },
    ["message", "match_all", "match_some"],
  ),
  tool(
    "send_message_to_agent_async",
    "letta_multi_agent_core",
    "Sends a message to a specific Letta agent within the same organization. The sender's identity is automatically included, so no explicit introduction is required in the message. This function does not expect a response from the target agent, making it suitable for notifications or one-way communication.",
    {
      message: str("The content of the message to be sent to the target agent."),
      other_agent_id: str("The unique identifier of the target Letta agent."),
    },
    ["message", "other_agent_id"],
  ),
  // Letta's built-in web tools (letta/functions/function_sets/builtin.py); letta-code asks for them.
  tool(
    "web_search",
    "letta_builtin",
    "Search the web using Exa's AI-powered search engine and retrieve relevant content.",
    {
      query: str("The search query to find relevant web content"),
      num_results: int("Number of results to return (1-100)"),
      category: {
        type: "string",
        enum: [
          "company",
          "research paper",
          "news",
          "pdf",
          "github",
          "tweet",
          "personal site",
          "linkedin profile",
          "financial report",
        ],
        description: "Focus search on specific content types",
      },
      include_text: { type: "boolean", description: "Whether to retrieve full page content" },
      include_domains: strArray("List of domains to include in search results"),
      exclude_domains: strArray("List of domains to exclude from search results"),
      start_published_date: str("Only return content published after this date (ISO format)"),
      end_published_date: str("Only return content published before this date (ISO format)"),
    },
    ["query"],
  ),
  tool(
    "fetch_webpage",
    "letta_builtin",
    "Fetch a webpage and convert it to markdown/text format.",
    { url: str("The URL of the webpage to fetch and convert") },
    ["url"],
  ),
  // Kelpie's working memory: a per-agent key-value store between core blocks and archival memory.
  tool(
    "working_memory_set",
    "letta_builtin",
    "Store a value in working memory under a key, replacing any value there.\n\nWorking memory is a small key-value scratchpad that persists between conversations but is not shown in your context: read it back with working_memory_get.",
    {
      key: str("The key to store the value under."),
      value: { description: "The value to store (any JSON value: text, number, object, list)." },
      ttl_seconds: int("Optional: forget the value after this many seconds."),
    },
    ["key", "value"],
  ),
  tool(
    "working_memory_get",
    "letta_builtin",
    "Read the value stored in working memory under a key.",
    { key: str("The key to read.") },
    ["key"],
  ),
  tool(
    "working_memory_delete",
    "letta_builtin",
    "Delete a key (and its value) from working memory.",
    { key: str("The key to delete.") },
    ["key"],
  ),
  tool(
    "working_memory_list",
    "letta_builtin",
    "List the keys held in working memory, with their sizes.",
    {},
    [],
  ),
];

export const WORKING_MEMORY_TOOL_NAMES = [
  "working_memory_set",
  "working_memory_get",
  "working_memory_delete",
  "working_memory_list",
] as const;

const BY_NAME = new Map(BUILTIN_TOOLS.map((t) => [t.name, t]));

export function builtinTool(name: string): BuiltinTool | undefined {
  return BY_NAME.get(name);
}

// letta/constants.py
const BASE_TOOLS = [
  "send_message",
  "conversation_search",
  "archival_memory_insert",
  "archival_memory_search",
];
const BASE_MEMORY_TOOLS = ["core_memory_append", "core_memory_replace"];
const BASE_MEMORY_TOOLS_V2 = ["memory_replace", "memory_insert"];
const BASE_SLEEPTIME_TOOLS = ["memory_replace", "memory_insert", "memory_rethink", "memory_finish_edits"];
const MULTI_AGENT_TOOLS = [
  "send_message_to_agent_and_wait_for_reply",
  "send_message_to_agents_matching_tags",
  "send_message_to_agent_async",
];

/** The tools an agent of this type gets at creation (Letta's agent_manager.create_agent rules). */
export function defaultToolNames(
  agentType: string,
  opts: { includeBaseTools: boolean; includeMultiAgentTools: boolean },
): string[] {
  const names: string[] = [];
  if (opts.includeBaseTools) {
    switch (agentType) {
      case "sleeptime_agent":
        names.push(...BASE_SLEEPTIME_TOOLS);
        break;
      case "memgpt_v2_agent":
        names.push(...BASE_TOOLS, ...BASE_MEMORY_TOOLS_V2);
        break;
      case "letta_v1_agent":
        names.push(...BASE_TOOLS.filter((n) => n !== "send_message"), ...BASE_MEMORY_TOOLS_V2);
        break;
      case "react_agent":
      case "workflow_agent":
        break;
      default:
        names.push(...BASE_TOOLS, ...BASE_MEMORY_TOOLS);
    }
  }
  if (opts.includeMultiAgentTools) names.push(...MULTI_AGENT_TOOLS);
  return [...new Set(names)];
}

/** memgpt-style agents chain steps through `request_heartbeat`; newer loops continue on any tool call. */
export function usesHeartbeats(agentType: string): boolean {
  return agentType === "memgpt_agent" || agentType === "memgpt_v2_agent" || agentType === "sleeptime_agent";
}

export const REQUEST_HEARTBEAT_DESCRIPTION =
  "Request an immediate heartbeat after function execution. Set to `True` if you want to send a follow-up message or run a follow-up function.";

/** The schema with Letta's `request_heartbeat` parameter added (the input is not changed). */
export function withHeartbeat(schema: ToolJsonSchema): ToolJsonSchema {
  return {
    ...schema,
    parameters: {
      ...schema.parameters,
      properties: {
        ...schema.parameters.properties,
        request_heartbeat: { type: "boolean", description: REQUEST_HEARTBEAT_DESCRIPTION },
      },
      required: [...schema.parameters.required.filter((r) => r !== "request_heartbeat"), "request_heartbeat"],
    },
  };
}

/** A stable `tool-<uuid>` for a built-in, derived from its name (UUIDv5-style, SHA-1). */
export function builtinToolId(name: string): string {
  const bytes = createHash("sha1").update(`kelpie-builtin-tool:${name}`).digest().subarray(0, 16);
  bytes[6] = (bytes[6]! & 0x0f) | 0x50;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = bytes.toString("hex");
  return `tool-${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
