// postgres.js 3.4.9 throws from an Immediate when a write lands on a connection whose socket has
// closed (porsager/postgres#1208): no caller can catch it and the whole process dies. A node whose
// session the server ends (idle-in-transaction timeout, a restart, a proxy) must fail the query
// instead. patches/postgres+3.4.9.patch fixes the driver; this runs the failing case in a child
// process, since the bug's symptom is the process exiting.
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { withTestDatabase } from "../support/postgres.ts";

const db = withTestDatabase();
const POSTGRES_MODULE = pathToFileURL(createRequire(import.meta.url).resolve("postgres")).href;

function runChild(script: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: "pipe" });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    child.on("exit", (code) => resolve({ code, out }));
  });
}

describe("postgres driver", () => {
  it("fails a query on a connection whose backend died, without killing the process", async () => {
    const script = `
      import postgres from ${JSON.stringify(POSTGRES_MODULE)};
      const sql = postgres(${JSON.stringify(db.url())}, { max: 3, onnotice: () => {} });
      const reserved = await sql.reserve();
      const [{ pid }] = await reserved\`select pg_backend_pid() as pid\`;
      await sql\`select pg_terminate_backend(\${pid})\`;
      await new Promise((r) => setTimeout(r, 200));
      try { await reserved\`select 1\`; console.log("answered"); }
      catch (err) { console.log("refused " + err.code); }
      reserved.release();
      console.log("pool " + (await sql\`select 3 as x\`)[0].x);
      await sql.end();
      console.log("ended");`;
    const { code, out } = await runChild(script);
    expect(out).toContain("refused CONNECTION_CLOSED");
    expect(out).toContain("pool 3");
    expect(out).toContain("ended");
    expect(code, out).toBe(0);
  });
});
