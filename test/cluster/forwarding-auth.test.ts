// Forwarding between nodes, attacked through a real node process (PostgreSQL, API key on). One
// agent is leased to a fake owner: a node row whose advertised address is a capture server, so
// the test sees exactly what the real node forwards. A client must not be able to (a) make the
// node forward to a host it names in an absolute-form request line, (b) make the node serve an
// agent it does not hold by sending the cluster's own headers, or (c) pass a forged, expired or
// replayed-elsewhere credential; (d) a second real node still forwards to the first and is served.
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server } from "node:http";
import { connect } from "node:net";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  bodyDigest,
  CLUSTER_AUTH_SKEW_MS,
  CLUSTER_SIGNATURE_HEADER,
  FORWARDED_BY_HEADER,
  NodeAuth,
} from "../../src/cluster/node-auth.ts";
import { ManualClock, SystemClock } from "../../src/core/clock.ts";
import { PostgresStorage } from "../../src/storage/postgres.ts";
import { withTestDatabase } from "../support/postgres.ts";
import { storedAgent } from "../support/records.ts";
import { http, type ServerProcess, startServer, tempDataDir } from "../support/server-process.ts";

const API_KEY = "sk-forwarding-auth-test-key";
const AUTH = { authorization: `Bearer ${API_KEY}` };
const FAKE_OWNER = "fake-owner";
const NODE_B = "auth-b";

interface Captured {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  body: Buffer;
}

/** An HTTP server that records every request and answers 200 with a marker. */
async function captureServer(name: string): Promise<{ url: string; seen: Captured[]; server: Server }> {
  const seen: Captured[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      seen.push({
        method: req.method ?? "",
        url: req.url ?? "",
        headers: req.headers,
        body: Buffer.concat(chunks),
      });
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ served_by: name }));
    });
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("no address");
  return { url: `http://127.0.0.1:${address.port}`, seen, server };
}

/** Sends `head` (request line and headers, CRLF-separated, no final blank line) and `body` as they are. */
function rawRequest(url: string, head: string, body: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((ok, fail) => {
    const socket = connect(Number(port), hostname, () => {
      socket.write(
        `${head}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    });
    let answer = "";
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => (answer += d));
    socket.on("end", () => ok(answer));
    socket.on("error", fail);
  });
}

describe("cluster: forwarded requests are authenticated (real node processes)", () => {
  const db = withTestDatabase();
  const dirs = [tempDataDir(), tempDataDir()];
  let owner: Awaited<ReturnType<typeof captureServer>>;
  let evil: Awaited<ReturnType<typeof captureServer>>;
  let sql: postgres.Sql;
  let storage: PostgresStorage;
  let b: ServerProcess | undefined;
  let a: ServerProcess | undefined;
  /** Leased to the fake owner. */
  const agentId = `agent-${randomUUID()}`;
  /**
   * Leased to nobody: a write to an agent runs in its mailbox under its lease, so a forwarded
   * request is served by the node it lands on only when that node can hold the agent.
   */
  const freeAgentId = `agent-${randomUUID()}`;
  const env = () => ({
    KELPIE_STORAGE: "postgres",
    KELPIE_DATABASE_URL: db.url(),
    KELPIE_API_KEYS: API_KEY,
    OPENAI_API_KEY: "sk-test",
    OPENAI_BASE_URL: "http://127.0.0.1:9/v1",
  });
  const workingRow = async (key: string, agent = agentId) =>
    (await sql`SELECT key FROM working_memory WHERE agent_id = ${agent} AND key = ${key}`).length;
  /** The key node B signs with, as another node holding the database's secret would have it. */
  const clusterKey = async () =>
    new Uint8Array((await sql`SELECT secret FROM cluster_secret WHERE id = 1`)[0]!.secret as Buffer);

  beforeAll(async () => {
    owner = await captureServer("owner");
    evil = await captureServer("evil");
    b = await startServer({ dataDir: dirs[0]!.dir, env: { ...env(), KELPIE_NODE_ID: NODE_B } });
    sql = postgres(db.url(), { max: 2, onnotice: () => {} });
    storage = new PostgresStorage({ url: db.url(), maxConnections: 2 });
    await storage.commit([
      { op: "put_agent", agent: storedAgent(agentId), create: true },
      { op: "put_agent", agent: storedAgent(freeAgentId), create: true },
    ]);
    // The fake owner: live for an hour by the database's clock, holding the agent's lease.
    await sql`
      INSERT INTO cluster_nodes (node_id, advertise_url, incarnation, heartbeat_at, started_at)
      VALUES (${FAKE_OWNER}, ${owner.url}, 1, now() + interval '1 hour', now())`;
    await sql`
      INSERT INTO agent_fences (agent_id, token, node_id, incarnation, lease_expires_at)
      VALUES (${agentId}, 1, ${FAKE_OWNER}, 1, now() + interval '1 hour')
      ON CONFLICT (agent_id) DO UPDATE SET token = agent_fences.token + 1, node_id = EXCLUDED.node_id,
        incarnation = 1, lease_expires_at = EXCLUDED.lease_expires_at`;
  });
  afterAll(async () => {
    await b?.kill();
    await a?.kill();
    await storage?.close();
    await sql?.end();
    owner?.server.close();
    evil?.server.close();
    for (const d of dirs) d.remove();
  });

  it("(a) an absolute-form request line naming another host is forwarded to the owner only, path and query alone", async () => {
    const before = owner.seen.length;
    const path = `/v1/agents/${agentId}/working-memory/absolute?probe=1`;
    const answer = await rawRequest(
      b!.url,
      [
        `PUT ${evil.url}${path} HTTP/1.1`,
        `Host: ${new URL(b!.url).host}`,
        "Content-Type: application/json",
        `Authorization: Bearer ${API_KEY}`,
      ].join("\r\n"),
      JSON.stringify({ value: "absolute" }),
    );
    expect(answer).toMatch(/^HTTP\/1\.1 200/);
    expect(answer).toContain('"served_by":"owner"');
    expect(evil.seen).toEqual([]);
    expect(owner.seen.length).toBe(before + 1);
    const got = owner.seen.at(-1)!;
    expect(got.url).toBe(path);
    expect(got.headers.host).toBe(new URL(owner.url).host);
    expect(await workingRow("absolute")).toBe(0);
  });

  it("(b) a client's forwarded-by and not-serving headers make no difference: the write goes to the owner, signed by the node", async () => {
    const before = owner.seen.length;
    const body = JSON.stringify({ value: "forged" });
    const res = await fetch(`${b!.url}/v1/agents/${agentId}/working-memory/forged`, {
      method: "PUT",
      headers: {
        ...AUTH,
        "content-type": "application/json",
        [FORWARDED_BY_HEADER]: FAKE_OWNER,
        "x-kelpie-not-serving": "lapsed",
        "proxy-authorization": "Basic for-the-proxy",
      },
      body,
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ served_by: "owner" });
    // Node B wrote nothing itself: the owner had the request.
    expect(await workingRow("forged")).toBe(0);
    expect(owner.seen.length).toBe(before + 1);
    const got = owner.seen.at(-1)!;
    // The client's key went along (the owner checks it too); its cluster and proxy headers did not.
    expect(got.headers.authorization).toBe(AUTH.authorization);
    expect(got.headers["x-kelpie-not-serving"]).toBeUndefined();
    expect(got.headers["proxy-authorization"]).toBeUndefined();
    expect(got.headers[FORWARDED_BY_HEADER]).toBe(NODE_B);
    // The owner can check node B's credential over exactly the bytes it received.
    const ownerAuth = new NodeAuth(await clusterKey(), FAKE_OWNER, new SystemClock());
    expect(
      ownerAuth.verify(got.headers, {
        method: got.method,
        target: got.url,
        bodySha256: bodyDigest(got.body),
      }),
    ).toEqual({ kind: "valid", from: NODE_B });
    expect(JSON.parse(got.body.toString())).toEqual({ value: "forged" });
  });

  it("a same-origin browser write is checked here and forwarded without the page's Origin and Sec-Fetch headers", async () => {
    const before = owner.seen.length;
    const res = await fetch(`${b!.url}/v1/agents/${agentId}/working-memory/browser`, {
      method: "PUT",
      headers: {
        ...AUTH,
        "content-type": "application/json",
        origin: b!.url,
        "sec-fetch-site": "same-origin",
        "sec-fetch-mode": "cors",
      },
      body: JSON.stringify({ value: "from the page" }),
    });
    expect(res.status).toBe(200);
    expect(owner.seen.length).toBe(before + 1);
    const got = owner.seen.at(-1)!;
    expect(got.headers.origin).toBeUndefined();
    expect(got.headers["sec-fetch-site"]).toBeUndefined();
    expect(got.headers["sec-fetch-mode"]).toBeUndefined();
    // A foreign page's write is refused here, before routing: the owner never sees it.
    const foreign = await fetch(`${b!.url}/v1/agents/${agentId}/working-memory/browser`, {
      method: "PUT",
      headers: { ...AUTH, "content-type": "application/json", origin: "http://evil.example" },
      body: JSON.stringify({ value: "from evil" }),
    });
    expect(foreign.status).toBe(403);
    expect(owner.seen.length).toBe(before + 1);
  });

  it("(c) a valid credential makes the node serve the request; a forged, expired or misdirected one is refused", async () => {
    const path = (k: string) => `/v1/agents/${freeAgentId}/working-memory/${k}`;
    const send = (k: string, headers: Record<string, string>, body = JSON.stringify({ value: { k } })) =>
      fetch(`${b!.url}${path(k)}`, {
        method: "PUT",
        headers: { ...AUTH, "content-type": "application/json", ...headers },
        body,
      });
    const signed = (k: string, auth: NodeAuth, to = NODE_B, body = JSON.stringify({ value: { k } })) =>
      auth.sign(to, { method: "PUT", target: path(k), bodySha256: bodyDigest(Buffer.from(body)) });
    const before = owner.seen.length;

    // Signed with a secret that is not the cluster's: a forgery.
    const forger = new NodeAuth(Buffer.alloc(32, 3), FAKE_OWNER, new SystemClock());
    const forged = await send("c-forged", signed("c-forged", forger));
    expect(forged.status).toBe(401);
    expect((await forged.json()).detail).toMatch(/cluster credential.*signature/);
    const garbage = await send("c-garbage", {
      ...signed("c-garbage", forger),
      [CLUSTER_SIGNATURE_HEADER]: "not-a-signature",
    });
    expect(garbage.status).toBe(401);

    const key = await clusterKey();
    const asOwner = new NodeAuth(key, FAKE_OWNER, new SystemClock());
    const expiredClock = new ManualClock(Date.now() - CLUSTER_AUTH_SKEW_MS - 5_000);
    const expired = await send("c-expired", signed("c-expired", new NodeAuth(key, FAKE_OWNER, expiredClock)));
    expect(expired.status).toBe(401);
    expect((await expired.json()).detail).toMatch(/expired/);
    // Signed for another node, or over another body: refused.
    expect((await send("c-other", signed("c-other", asOwner, "node-z"))).status).toBe(401);
    const swapped = JSON.stringify({ value: { k: "swapped" } });
    expect((await send("c-body", signed("c-body", asOwner), swapped)).status).toBe(401);
    for (const k of ["c-forged", "c-garbage", "c-expired", "c-other", "c-body"])
      expect(await workingRow(k, freeAgentId), k).toBe(0);

    // Signed by a node holding the cluster's secret: served here, not forwarded again.
    const valid = await send("c-valid", signed("c-valid", asOwner));
    expect(valid.status).toBe(200);
    expect((await valid.json()).value).toEqual({ k: "c-valid" });
    expect(await workingRow("c-valid", freeAgentId)).toBe(1);
    expect(owner.seen.length).toBe(before);
  });

  it("(d) two real nodes share the database's secret: a write sent to one is forwarded to and served by the other", async () => {
    a = await startServer({ dataDir: dirs[1]!.dir, env: { ...env(), KELPIE_NODE_ID: "auth-a" } });
    const created = await http(
      a.url,
      "POST",
      "/v1/agents/",
      { name: "forwarded", model: "openai/gpt-4o-mini" },
      { headers: AUTH },
    );
    expect(created.status, JSON.stringify(created.body)).toBe(200);
    const id = created.body.id as string;
    const put = (url: string, key: string) =>
      http(url, "PUT", `/v1/agents/${id}/working-memory/${key}`, { value: { key } }, { headers: AUTH });
    // Node A takes the lease with a write of its own; one sent to B is then forwarded to A.
    expect((await put(a.url, "on-a")).status).toBe(200);
    const owned = async () =>
      (await sql`SELECT node_id FROM agent_fences WHERE agent_id = ${id}`)[0]?.node_id ?? null;
    expect(await owned()).toBe("auth-a");
    const viaB = await put(b!.url, "via-b");
    expect(viaB.status, JSON.stringify(viaB.body)).toBe(200);
    expect(viaB.body.value).toEqual({ key: "via-b" });
    expect(await owned()).toBe("auth-a");
    // Reads are served where they land.
    const listed = await http(b!.url, "GET", `/v1/agents/${id}/working-memory`, undefined, { headers: AUTH });
    expect(listed.body.map((e: { key: string }) => e.key).sort()).toEqual(["on-a", "via-b"]);
  });
});
