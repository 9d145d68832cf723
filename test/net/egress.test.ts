// The egress policy on its own: which addresses it refuses (in every spelling), what
// KELPIE_EGRESS_ALLOW accepts, and what its fetch does with redirects, credentials and the bodies
// of error responses. Real HTTP servers on loopback; the resolver is injected where a name matters.
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError, configFromEnv } from "../../src/config.ts";
import { blockedRange } from "../../src/net/addresses.ts";
import { EgressRefusedError, parseEgressAllow } from "../../src/net/egress.ts";
import { EGRESS_REDIRECTS_MAX, Egress, WITHHELD_BODY_TEXT } from "../../src/net/egress-fetch.ts";

let server: Server;
let base = "";
const seen: { url: string; headers: IncomingHttpHeaders }[] = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    seen.push({ url: req.url ?? "", headers: req.headers });
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname === "/fail") {
      res.writeHead(500, { "content-type": "application/json" });
      return res.end('{"error":"foreign-secret-text"}');
    }
    if (url.pathname === "/loop") {
      res.writeHead(302, { location: `/loop?n=${Number(url.searchParams.get("n") ?? 0) + 1}` });
      return res.end();
    }
    if (url.pathname === "/elsewhere") {
      // Same server, other origin (127.0.0.2 is loopback too, allowed below).
      res.writeHead(307, { location: `http://127.0.0.2:${(server.address() as AddressInfo).port}/landed` });
      return res.end();
    }
    res.end(`ok ${req.method} ${url.pathname}`);
  });
  await new Promise<void>((r) => server.listen(0, "0.0.0.0", r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => {
  server.close();
});

describe("blockedRange", () => {
  it("refuses loopback, private, link-local, unspecified, multicast and reserved addresses", () => {
    const cases: [string, string][] = [
      ["127.0.0.1", "loopback"],
      ["127.255.0.9", "loopback"],
      ["::1", "loopback"],
      ["0.0.0.0", "unspecified"],
      ["::", "unspecified"],
      ["10.1.2.3", "private"],
      ["172.31.255.255", "private"],
      ["192.168.0.1", "private"],
      ["100.64.0.1", "private"],
      ["fd12:3456::1", "private"],
      ["169.254.169.254", "link-local"],
      ["fe80::1", "link-local"],
      ["224.0.0.1", "multicast"],
      ["ff02::1", "multicast"],
      ["255.255.255.255", "reserved"],
      // IPv6 forms that embed an IPv4 address
      ["::ffff:127.0.0.1", "loopback"],
      ["::ffff:7f00:1", "loopback"],
      ["::ffff:a9fe:a9fe", "link-local"],
      ["::127.0.0.1", "loopback"],
      ["::ffff:0:10.0.0.1", "private"],
      ["64:ff9b::7f00:1", "loopback"],
      ["64:ff9b::169.254.169.254", "link-local"],
      ["2002:7f00:1::", "loopback"],
      ["2002:c0a8:101::1", "private"],
      ["not-an-address", "not an IP address"],
    ];
    for (const [address, label] of cases) expect(blockedRange(address), address).toBe(label);
  });

  it("lets public addresses through", () => {
    for (const address of [
      "93.184.216.34",
      "8.8.8.8",
      "2606:4700:4700::1111",
      "::ffff:8.8.8.8",
      "64:ff9b::808:808",
    ])
      expect(blockedRange(address), address).toBeUndefined();
  });
});

describe("KELPIE_EGRESS_ALLOW", () => {
  it("takes host names, wildcards, addresses and CIDRs, and names a bad entry", () => {
    const allow = parseEgressAllow([
      "llm.internal",
      "*.corp.example",
      "10.0.0.0/8",
      "::1",
      "[fd00::]/8",
      " ",
    ]);
    expect([...allow.hosts]).toEqual(["llm.internal"]);
    expect(allow.suffixes).toEqual([".corp.example"]);
    expect(allow.subnets).toEqual([
      { address: "10.0.0.0", prefix: 8, family: 4 },
      { address: "::1", prefix: 128, family: 6 },
      { address: "fd00::", prefix: 8, family: 6 },
    ]);
    for (const bad of ["10.0.0.0/33", "10.0.0.0/x", "http://host/", "a b", "host/8"])
      expect(() => parseEgressAllow([bad]), bad).toThrow(bad);
  });

  it("is read by the server configuration, a bad entry stopping the start", () => {
    expect(configFromEnv({ KELPIE_EGRESS_ALLOW: "127.0.0.1, llm.internal" }).egressAllow).toEqual([
      "127.0.0.1",
      "llm.internal",
    ]);
    expect(configFromEnv({}).egressAllow).toEqual([]);
    expect(() => configFromEnv({ KELPIE_EGRESS_ALLOW: "10.0.0.0/99" })).toThrow(ConfigError);
  });
});

describe("the egress fetch", () => {
  it("refuses a loopback URL before connecting, and a name resolving to loopback on connect", async () => {
    const egress = new Egress({
      resolve: async () => [{ address: "127.0.0.1", family: 4 }],
    });
    seen.length = 0;
    await expect(egress.fetch(`${base}/x`)).rejects.toBeInstanceOf(EgressRefusedError);
    const port = new URL(base).port;
    await expect(egress.fetch(`http://public.example:${port}/x`)).rejects.toThrow(
      "public.example (127.0.0.1) refused: it is a loopback address",
    );
    await expect(egress.fetch("ftp://example.com/")).rejects.toThrow("only http and https");
    expect(seen).toEqual([]);
    await egress.close();
  });

  it("withholds the body of an error from an endpoint the operator did not configure", async () => {
    const allowed = new Egress({ allow: ["127.0.0.1"] });
    const res = await allowed.fetch(`${base}/fail`);
    expect(res.status).toBe(500);
    expect(await res.text()).toBe(WITHHELD_BODY_TEXT);
    await allowed.close();
    // The operator's own endpoint: its error text is useful, and trusted.
    const trusted = new Egress({ trusted: [`${base}/v1`] });
    const own = await trusted.fetch(`${base}/fail`);
    expect(await own.text()).toContain("foreign-secret-text");
    await trusted.close();
  });

  it("follows redirects itself, at most EGRESS_REDIRECTS_MAX, checking each one", async () => {
    const egress = new Egress({ allow: ["127.0.0.1"] });
    await expect(egress.fetch(`${base}/loop`)).rejects.toThrow(
      `more than EGRESS_REDIRECTS_MAX (${EGRESS_REDIRECTS_MAX}) redirects`,
    );
    // 127.0.0.2 is not allowed: the redirect there is refused, and nothing is sent to it.
    seen.length = 0;
    await expect(egress.fetch(`${base}/elsewhere`)).rejects.toThrow("127.0.0.2 refused");
    expect(seen.map((s) => s.url)).toEqual(["/elsewhere"]);
    // A manual redirect is handed back as it is, as the MCP SDK asks for.
    const manual = await egress.fetch(`${base}/loop`, { redirect: "manual" });
    expect(manual.status).toBe(302);
    await egress.close();
  });

  it("drops credentials when a redirect leaves the origin", async () => {
    const egress = new Egress({ allow: ["127.0.0.0/8"] });
    seen.length = 0;
    const res = await egress.fetch(`${base}/elsewhere`, {
      method: "POST",
      body: "{}",
      headers: {
        authorization: "Bearer sk-secret",
        "x-api-key": "sk-secret",
        "content-type": "application/json",
      },
    });
    expect(await res.text()).toBe("ok POST /landed");
    expect(seen[0]?.headers.authorization).toBe("Bearer sk-secret");
    expect(seen[1]?.headers.authorization).toBeUndefined();
    expect(seen[1]?.headers["x-api-key"]).toBeUndefined();
    expect(seen[1]?.headers["content-type"]).toBe("application/json");
    await egress.close();
  });
});
