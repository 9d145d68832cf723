// An in-process Kelpie over a chosen storage engine, driven with Fastify's inject().
import { SystemClock } from "../../src/core/clock.ts";
import { SystemRng } from "../../src/core/rng.ts";
import { createKelpie, type Kelpie, type KelpieOptions } from "../../src/server.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import type { Storage } from "../../src/storage/types.ts";

export interface TestApp {
  kelpie: Kelpie;
  req(method: string, url: string, body?: unknown): Promise<{ status: number; body: any }>;
}

export async function testApp(
  storage: Storage = new MemoryStorage(),
  options: KelpieOptions = {},
): Promise<TestApp> {
  const kelpie = await createKelpie({ clock: new SystemClock(), rng: new SystemRng(), storage }, options);
  return {
    kelpie,
    async req(method, url, body) {
      const res = await kelpie.app.inject({
        method: method as "GET",
        url,
        ...(body === undefined
          ? {}
          : {
              payload: typeof body === "string" ? body : JSON.stringify(body),
              headers: { "content-type": "application/json" },
            }),
      });
      let parsed: unknown = res.body;
      try {
        parsed = JSON.parse(res.body);
      } catch {}
      return { status: res.statusCode, body: parsed };
    },
  };
}
