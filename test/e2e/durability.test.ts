// A real server process on SQLite: what it acknowledged survives kill -9 and reads back identical.
import { afterAll, describe, expect, it } from "vitest";
import { http, type ServerProcess, startServer, tempDataDir } from "../support/server-process.ts";

describe("durability across kill -9 (SQLite, real process)", () => {
  const data = tempDataDir();
  let server: ServerProcess | undefined;
  afterAll(async () => {
    await server?.kill();
    data.remove();
  });

  it("an agent created and patched reads back identical after SIGKILL and restart", async () => {
    server = await startServer({ dataDir: data.dir });
    const created = await http(server.url, "POST", "/v1/agents/", {
      name: "durable",
      memory_blocks: [
        { label: "persona", value: "I am durable." },
        { label: "human", value: "Ada", limit: 5000 },
      ],
      tags: ["x", "y"],
      metadata: { a: 1 },
    });
    expect(created.status).toBe(200);
    const id = created.body.id;
    const patched = await http(server.url, "PATCH", `/v1/agents/${id}`, {
      name: "renamed",
      description: "d",
    });
    expect(patched.status).toBe(200);
    const edited = await http(server.url, "PATCH", `/v1/agents/${id}/core-memory/blocks/human`, {
      value: "Ada L.",
    });
    expect(edited.status).toBe(200);
    const before = (await http(server.url, "GET", `/v1/agents/${id}`)).body;
    expect(before.name).toBe("renamed");

    await server.kill("SIGKILL");
    server = await startServer({ dataDir: data.dir });
    const after = (await http(server.url, "GET", `/v1/agents/${id}`)).body;
    expect(after).toEqual(before);
    expect(after.blocks.find((b: any) => b.label === "human").value).toBe("Ada L.");
  });
});
