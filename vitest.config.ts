import { defineConfig } from "vitest/config";

/**
 * Tests that bound how long something takes the server (its event loop's delay, a parse in linear
 * time, a sandbox's wall clock): they run last, one file at a time, so the bound measures the
 * server and not the other test files contending for a two-core machine's CPU.
 */
const ALONE = [
  "test/tools/event-loop-load.test.ts",
  "test/tools/js-schema.test.ts",
  "test/tools/vm-sandbox.test.ts",
  "test/tools/sandbox-bounds.test.ts",
  "test/memory/local-embedder.test.ts",
];

export default defineConfig({
  test: {
    // Installs the system packages the run's tests need, or stops the run with one line.
    globalSetup: ["test/setup/ensure-system-packages.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    projects: [
      { extends: true, test: { name: "main", include: ["test/**/*.test.ts"], exclude: ALONE } },
      {
        extends: true,
        test: { name: "alone", include: ALONE, fileParallelism: false, sequence: { groupOrder: 1 } },
      },
    ],
  },
});
