// npm run bench -- <name>: runs one benchmark; its last line is one JSON object of its figures.
const BENCHES: Record<string, () => Promise<Record<string, unknown>>> = {
  "cold-activation": async () => (await import("./cold-activation.ts")).run(),
  "agent-memory": async () => (await import("./agent-memory.ts")).run(),
  "agent-create": async () => (await import("./agent-create.ts")).run(),
  "step-overhead": async () => (await import("./step-overhead.ts")).run(),
  "steps-throughput": async () => (await import("./steps-throughput.ts")).run(),
  "mcp-call": async () => (await import("./mcp-call.ts")).run(),
  "ops-overhead": async () => (await import("./ops-overhead.ts")).run(),
  "sandbox-start": async () => (await import("./sandbox-start.ts")).run(),
  "dst-throughput": async () => (await import("./dst-throughput.ts")).run(),
  "archival-search": async () => (await import("./archival-search.ts")).run(),
  "memory-recall": async () => (await import("./memory-recall.ts")).run(),
  failover: async () => (await import("./failover.ts")).run(),
};

const name = process.argv[2];
const bench = name === undefined ? undefined : BENCHES[name];
if (bench === undefined) {
  console.error(`usage: npm run bench -- <name>\nnames: ${Object.keys(BENCHES).join(", ")}`);
  process.exit(2);
}
const figures = await bench();
console.log(JSON.stringify({ bench: name, ...figures }));
process.exit(0);
