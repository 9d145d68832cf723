// The declared field bounds (NAME_LENGTH_MAX, SYSTEM_PROMPT_CHARS_MAX, METADATA_BYTES_MAX,
// TAGS_PER_RECORD_MAX, TAG_LENGTH_MAX) hold on every route that takes those fields and on agent
// file imports: one past the bound is a 422 naming the field; the bound itself is accepted.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  METADATA_BYTES_MAX,
  NAME_LENGTH_MAX,
  SYSTEM_PROMPT_CHARS_MAX,
  TAG_LENGTH_MAX,
  TAGS_PER_RECORD_MAX,
} from "../../src/core/constants.ts";
import { type TestApp, testApp } from "../support/app.ts";

const MODEL = "openai/gpt-4o-mini";
const longName = "n".repeat(NAME_LENGTH_MAX + 1);
const longSystem = "s".repeat(SYSTEM_PROMPT_CHARS_MAX + 1);
/** Metadata whose JSON text is exactly `bytes` long: `{"k":"…"}` is 8 bytes around the value. */
const metadataOf = (bytes: number) => ({ k: "m".repeat(bytes - 8) });
const bigMetadata = metadataOf(METADATA_BYTES_MAX + 1);
const manyTags = Array.from({ length: TAGS_PER_RECORD_MAX + 1 }, (_, i) => `t${i}`);
const longTag = "t".repeat(TAG_LENGTH_MAX + 1);
const TOOL_SOURCE =
  'def shout(text: str) -> str:\n    """Shouts.\n\n    Args:\n        text: what to shout\n    """\n    return text.upper()\n';

let t: TestApp;
beforeEach(async () => {
  t = await testApp();
});
afterEach(async () => {
  await t.kelpie.close();
});

async function refused(method: string, url: string, body: unknown, loc: (string | number)[], msg: RegExp) {
  const res = await t.req(method, url, body);
  expect(res.status, JSON.stringify(res.body).slice(0, 500)).toBe(422);
  expect(res.body.detail[0].loc).toEqual(loc);
  expect(res.body.detail[0].msg).toMatch(msg);
}

async function upload(file: object) {
  const form = new FormData();
  form.append("file", new Blob([JSON.stringify(file)]), "agent.af");
  const encoded = new Response(form);
  const res = await t.kelpie.app.inject({
    method: "POST",
    url: "/v1/agents/import",
    payload: Buffer.from(await encoded.arrayBuffer()),
    headers: { "content-type": encoded.headers.get("content-type")! },
  });
  return { status: res.statusCode, body: JSON.parse(res.body) };
}

describe("agents", () => {
  it("bound name, system, metadata and tags on create and update", async () => {
    const url = "/v1/agents/";
    await refused("POST", url, { model: MODEL, name: longName }, ["body", "name"], /at most 1024/);
    await refused("POST", url, { model: MODEL, system: longSystem }, ["body", "system"], /at most 1000000/);
    await refused(
      "POST",
      url,
      { model: MODEL, metadata: bigMetadata },
      ["body", "metadata"],
      /at most 65536/,
    );
    await refused("POST", url, { model: MODEL, tags: manyTags }, ["body", "tags"], /at most 256 are allowed/);
    await refused(
      "POST",
      url,
      { model: MODEL, tags: ["ok", longTag] },
      ["body", "tags", 1],
      /at most 256 characters/,
    );
    await refused(
      "POST",
      url,
      { model: MODEL, memory_blocks: [{ label: "human", value: "", metadata: bigMetadata }] },
      ["body", "memory_blocks", 0, "metadata"],
      /at most 65536/,
    );

    const atLimit = await t.req("POST", url, {
      model: MODEL,
      name: "n".repeat(NAME_LENGTH_MAX),
      system: "s".repeat(SYSTEM_PROMPT_CHARS_MAX),
      metadata: metadataOf(METADATA_BYTES_MAX),
      tags: Array.from({ length: TAGS_PER_RECORD_MAX }, (_, i) => `${i}`.padEnd(TAG_LENGTH_MAX, "x")),
    });
    expect(atLimit.status, JSON.stringify(atLimit.body).slice(0, 300)).toBe(200);

    const agentUrl = `/v1/agents/${atLimit.body.id}`;
    await refused("PATCH", agentUrl, { name: longName }, ["body", "name"], /at most/);
    await refused("PATCH", agentUrl, { system: longSystem }, ["body", "system"], /at most/);
    await refused("PATCH", agentUrl, { metadata: bigMetadata }, ["body", "metadata"], /at most/);
    await refused("PATCH", agentUrl, { tags: manyTags }, ["body", "tags"], /at most/);
    const after = (await t.req("GET", agentUrl)).body;
    expect(after.name).toBe("n".repeat(NAME_LENGTH_MAX));
  });
});

describe("blocks", () => {
  it("bound metadata, tags and template_name on create, update and edit by label", async () => {
    await refused(
      "POST",
      "/v1/blocks/",
      { label: "b", value: "", metadata: bigMetadata },
      ["body", "metadata"],
      /at most/,
    );
    await refused(
      "POST",
      "/v1/blocks/",
      { label: "b", value: "", tags: manyTags },
      ["body", "tags"],
      /at most/,
    );
    await refused(
      "POST",
      "/v1/blocks/",
      { label: "b", value: "", template_name: longName },
      ["body", "template_name"],
      /at most/,
    );
    const block = (await t.req("POST", "/v1/blocks/", { label: "b", value: "" })).body;
    await refused(
      "PATCH",
      `/v1/blocks/${block.id}`,
      { metadata: bigMetadata },
      ["body", "metadata"],
      /at most/,
    );
    const agent = (
      await t.req("POST", "/v1/agents/", { model: MODEL, memory_blocks: [{ label: "human", value: "" }] })
    ).body;
    await refused(
      "PATCH",
      `/v1/agents/${agent.id}/core-memory/blocks/human`,
      { tags: ["ok", longTag] },
      ["body", "tags", 1],
      /at most/,
    );
  });
});

describe("tools, archives and passages", () => {
  it("bound tool names, tags and metadata_", async () => {
    const longDef = TOOL_SOURCE.replaceAll("shout", "s".repeat(NAME_LENGTH_MAX + 1));
    await refused(
      "POST",
      "/v1/tools/",
      { source_code: longDef },
      ["body", "source_code"],
      /a name holds at most/,
    );
    await refused(
      "POST",
      "/v1/tools/",
      { source_code: TOOL_SOURCE, json_schema: { name: longName, parameters: {} } },
      ["body", "json_schema", "name"],
      /at most/,
    );
    await refused(
      "POST",
      "/v1/tools/",
      { source_code: TOOL_SOURCE, tags: manyTags },
      ["body", "tags"],
      /at most/,
    );
    await refused(
      "POST",
      "/v1/tools/",
      { source_code: TOOL_SOURCE, metadata_: bigMetadata },
      ["body", "metadata_"],
      /at most 65536/,
    );
    const tool = (await t.req("POST", "/v1/tools/", { source_code: TOOL_SOURCE })).body;
    await refused(
      "PATCH",
      `/v1/tools/${tool.id}`,
      { metadata_: bigMetadata },
      ["body", "metadata_"],
      /at most/,
    );
  });

  it("bound archive names and passage metadata", async () => {
    await refused("POST", "/v1/archives/", { name: longName }, ["body", "name"], /at most/);
    const archive = (await t.req("POST", "/v1/archives/", { name: "a" })).body;
    await refused("PATCH", `/v1/archives/${archive.id}`, { name: longName }, ["body", "name"], /at most/);
    await refused(
      "POST",
      `/v1/archives/${archive.id}/passages`,
      { text: "x", metadata: bigMetadata },
      ["body", "metadata"],
      /at most/,
    );
  });
});

describe("agent file import", () => {
  const file = (over: { agent?: object; tool?: object; top?: object } = {}) => ({
    agents: [
      {
        id: "agent-0",
        name: "small",
        agent_type: "memgpt_v2_agent",
        system: "You are small.",
        block_ids: ["block-0"],
        tool_ids: ["tool-0"],
        llm_config: { model: "gpt-4o-mini", model_endpoint_type: "openai", context_window: 32000 },
        messages: [],
        in_context_message_ids: [],
        ...over.agent,
      },
    ],
    blocks: [{ id: "block-0", label: "persona", value: "I am small.", limit: 1000 }],
    tools: [
      {
        id: "tool-0",
        name: "shout",
        tool_type: "custom",
        source_type: "python",
        source_code: TOOL_SOURCE,
        ...over.tool,
      },
    ],
    ...over.top,
  });

  it("names the file's field for each bound, and creates nothing", async () => {
    const cases: [object, (string | number)[]][] = [
      [file({ agent: { name: longName } }), ["body", "file", "agents", 0, "name"]],
      [file({ agent: { system: longSystem } }), ["body", "file", "agents", 0, "system"]],
      [file({ agent: { metadata: bigMetadata } }), ["body", "file", "agents", 0, "metadata"]],
      [file({ agent: { tags: manyTags } }), ["body", "file", "agents", 0, "tags"]],
      [
        file({ top: { blocks: [{ id: "block-0", label: "persona", value: "", metadata: bigMetadata }] } }),
        ["body", "file", "blocks", 0, "metadata"],
      ],
      [file({ tool: { metadata_: bigMetadata } }), ["body", "file", "tools", 0, "metadata_"]],
      [
        file({
          agent: { archive_ids: ["archive-0"] },
          top: { archives: [{ id: "archive-0", name: longName, passages: [] }] },
        }),
        ["body", "file", "archives", 0, "name"],
      ],
    ];
    for (const [f, loc] of cases) {
      const res = await upload(f);
      expect(res.status, `${loc.join(".")}: ${JSON.stringify(res.body).slice(0, 300)}`).toBe(422);
      expect(res.body.detail[0].loc).toEqual(loc);
      expect(res.body.detail[0].msg).toMatch(/at most/);
    }
    expect((await t.req("GET", "/v1/agents/")).body).toEqual([]);
    expect((await upload(file())).status).toBe(200);
  });
});
