// The small agent file (.af, Letta's v2 format) the workload imports: one agent, one block, one
// message in context, no tools beyond the defaults. Its name is set per import (the `name` form
// field), so the checker finds what each import made.

export const IMPORTED_BLOCK_LABEL = "imported";

export function smallAgentFile(): string {
  return JSON.stringify({
    agents: [
      {
        id: "agent-0",
        name: "dst-imported",
        agent_type: "memgpt_agent",
        system: "You are a simulated agent.",
        block_ids: ["block-0"],
        tool_ids: [],
        tags: ["dst"],
        llm_config: {
          model: "gpt-4o-mini",
          model_endpoint_type: "openai",
          handle: "openai/gpt-4o-mini",
          context_window: 128000,
        },
        embedding_config: null,
        in_context_message_ids: ["message-0"],
        messages: [
          {
            type: "message",
            id: "message-0",
            role: "user",
            content: [{ type: "text", text: "imported hello" }],
            agent_id: "agent-0",
            tool_calls: null,
            tool_call_id: null,
            tool_returns: [],
            created_at: "2025-01-01T00:00:00+00:00",
          },
        ],
        tool_rules: [],
        include_base_tools: true,
      },
    ],
    groups: [],
    blocks: [{ id: "block-0", label: IMPORTED_BLOCK_LABEL, value: "from a file", limit: 2000, metadata: {} }],
    files: [],
    sources: [],
    tools: [],
    mcp_servers: [],
    metadata: {},
    created_at: "2025-01-01T00:00:00+00:00",
  });
}

/** A multipart/form-data body carrying the file and form fields, as a client uploads it. */
export function multipartBody(file: string, fields: Record<string, string>, boundary: string): Buffer {
  const parts: string[] = [];
  for (const [name, value] of Object.entries(fields))
    parts.push(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`);
  parts.push(
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="dst.af"\r\n` +
      `Content-Type: application/octet-stream\r\n\r\n${file}\r\n`,
  );
  parts.push(`--${boundary}--\r\n`);
  return Buffer.from(parts.join(""), "utf8");
}
