// A throwaway PostgreSQL database per test file, on the local server (127.0.0.1:5432, trust auth).
// If the server is unreachable the tests fail loudly, unless KELPIE_TEST_SKIP_POSTGRES=1.
import postgres from "postgres";
import { afterAll, beforeAll } from "vitest";

export const POSTGRES_ADMIN_URL =
  process.env.KELPIE_TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

export function withTestDatabase(): { url(): string } {
  const name = `kelpie_test_${process.pid}_${Math.floor(Math.random() * 1e9)}`;
  const url = new URL(POSTGRES_ADMIN_URL);
  url.pathname = `/${name}`;
  beforeAll(async () => {
    const admin = postgres(POSTGRES_ADMIN_URL, { max: 1, onnotice: () => {} });
    try {
      await admin.unsafe(`CREATE DATABASE ${name}`);
    } finally {
      await admin.end();
    }
  });
  afterAll(async () => {
    const admin = postgres(POSTGRES_ADMIN_URL, { max: 1, onnotice: () => {} });
    try {
      await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    } finally {
      await admin.end();
    }
  });
  return { url: () => url.toString() };
}
