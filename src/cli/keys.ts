// kelpie keys create | list: API keys kept in the server's storage as SHA-256 hashes. A new key is
// printed once; it cannot be shown again. Creation is recorded in the audit log.
import { randomBytes } from "node:crypto";
import { sha256Hex } from "../api/security.ts";
import { configFromEnv } from "../config.ts";
import { SystemRng } from "../core/rng.ts";
import { openStorage } from "../storage/open.ts";

export const API_KEY_BYTES = 32;

export async function keysCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const config = configFromEnv(process.env);
  const storage = await openStorage({
    engine: config.storage,
    dataDir: config.dataDir,
    databaseUrl: config.databaseUrl,
  });
  try {
    if (sub === "create") {
      const nameAt = rest.indexOf("--name");
      const name = nameAt >= 0 ? (rest[nameAt + 1] ?? "") : "default";
      const key = `sk-kelpie-${randomBytes(API_KEY_BYTES).toString("base64url")}`;
      const rng = new SystemRng();
      const id = `key-${rng.uuid()}`;
      const nowMs = Date.now();
      await storage.commit([
        { op: "put_api_key", key: { id, name, key_sha256: sha256Hex(key), created_at_ms: nowMs } },
        {
          op: "put_audit",
          entry: {
            id: `audit-${rng.uuid()}`,
            at_ms: nowMs,
            actor: "cli",
            action: "api_key.create",
            target: id,
            detail: { name },
          },
        },
      ]);
      console.log(key);
      console.error(`created API key ${id} (${name}); it is shown once — keep it safe`);
      return 0;
    }
    if (sub === "list") {
      for (const k of await storage.listApiKeys())
        console.log(`${k.id}\t${k.name}\t${new Date(k.created_at_ms).toISOString()}`);
      return 0;
    }
    console.error("usage: kelpie keys create [--name NAME] | kelpie keys list");
    return 2;
  } finally {
    await storage.close();
  }
}
