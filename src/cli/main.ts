// kelpie serve: start the server (configuration from the environment; see README).
import { existsSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, configFromEnv, exposureWarning, isLoopbackHost } from "../config.ts";
import { prettyStream } from "../observability/log-format.ts";
import { tracingFromEnv } from "../observability/tracing.ts";
import { createKelpie, KELPIE_VERSION, productionEnv } from "../server.ts";
import { ARCHIVAL_INDEX_DIR_NAME } from "../storage/open.ts";
import { BWRAP } from "../tools/sandbox/namespace.ts";
import { keysCommand } from "./keys.ts";

const SHUTDOWN_GRACE_MS = 30_000;

async function serve(): Promise<void> {
  const boot = configFromEnv(process.env);
  const env = await productionEnv(boot);
  // Stored keys (`kelpie keys create`) choose the default listen address too, so read them first.
  const config =
    boot.keyed || (await env.storage.listApiKeys()).length === 0
      ? boot
      : configFromEnv(process.env, { storedApiKeys: true });
  const exposure = exposureWarning(config);
  const kelpie = await createKelpie(env, {
    logger: {
      level: config.logLevel,
      // Secrets never reach the logs.
      redact: [
        "req.headers.authorization",
        'req.headers["x-api-key"]',
        "headers.authorization",
        'headers["x-api-key"]',
      ],
      // Readable lines in a terminal; JSON otherwise (or with KELPIE_LOG_FORMAT=json).
      ...(process.stdout.isTTY && process.env.KELPIE_LOG_FORMAT !== "json"
        ? { stream: prettyStream(process.stdout) }
        : {}),
    },
    observability: { tracing: tracingFromEnv(process.env, KELPIE_VERSION) },
    security: {
      apiKeys: config.apiKeys,
      rateLimit: config.rateLimit,
      corsOrigins: config.corsOrigins,
      metricsPublic: config.metricsPublic,
      // Names this server is reached by besides loopback and IPs: other nodes use the advertised one.
      allowedHosts: [
        ...config.allowedHosts,
        config.host,
        ...(config.cluster ? [new URL(config.cluster.advertiseUrl).hostname] : []),
      ],
    },
    requestTimeoutMs: config.requestTimeoutMs,
    sandboxAllowProcess: process.env.KELPIE_SANDBOX_ALLOW_PROCESS === "1",
    sandboxDefaults: config.sandboxDefaults,
    exaApiKey: config.exaApiKey,
    egress: { allow: config.egressAllow },
    mcpStdio: config.mcpStdio,
    ...(config.cluster ? { cluster: config.cluster } : {}),
    // Only a server with a data directory keeps graphs across restarts.
    ...(config.storage === "sqlite"
      ? { archivalIndexDir: join(config.dataDir, ARCHIVAL_INDEX_DIR_NAME) }
      : {}),
  });
  const log = kelpie.app.log;
  let closing = false;
  const shutdown = (signal: string) => {
    if (closing) return;
    closing = true;
    log.info({ signal }, "shutting down: draining in-flight operations");
    const force = setTimeout(() => process.exit(1), SHUTDOWN_GRACE_MS);
    force.unref();
    kelpie.close().then(
      () => process.exit(0),
      (err) => {
        log.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
  const sandbox = kelpie.services.customTools.sandbox.status();
  if (!sandbox.namespace) {
    // Python tools run at the wasm level by default; only tools that ask for namespace need it.
    log.info(
      "bubblewrap (bwrap) is not available: tools that ask for the namespace sandbox level cannot run (apt-get install bubblewrap)",
    );
  }
  if (sandbox.vmProblem !== null) {
    // Only tools that ask for the vm level (or a default of vm) need gVisor.
    log.info(`tools that ask for the vm sandbox level cannot run: ${sandbox.vmProblem}`);
  }
  if (sandbox.processAllowed)
    log.warn("KELPIE_SANDBOX_ALLOW_PROCESS=1: tools may run as plain processes WITHOUT isolation");
  // A default level this server cannot provide fails every tool that relies on it: say so now.
  for (const problem of sandbox.problems) log.warn(`sandbox: ${problem}`);
  if (exposure !== undefined) log.warn(exposure);
  if (!config.keyed && config.corsOrigins.includes("*"))
    log.warn(
      "KELPIE_CORS_ORIGINS=* without an API key: any web page a browser here opens can use this server",
    );
  const stdio = config.mcpStdio.commands;
  if (stdio.length > 0) {
    log.warn(
      `stdio MCP servers enabled (KELPIE_MCP_STDIO_COMMANDS): API clients may run ${stdio.includes("*") ? "ANY command" : stdio.join(", ")} on this host, sandboxed by bubblewrap${existsSync(BWRAP) ? "" : " — which is NOT installed, so they will fail (apt-get install bubblewrap)"}${config.mcpStdio.network === true ? ", sharing this host's network (KELPIE_MCP_STDIO_NETWORK=1: they reach whatever this host reaches)" : ", without network"}`,
    );
  }
  await kelpie.app.listen({ host: config.host, port: config.port });
  const reach =
    !config.keyed && isLoopbackHost(config.host)
      ? " (this machine only, as no API key is configured: to serve others, create one with 'kelpie keys create' or KELPIE_API_KEYS and restart)"
      : "";
  log.info(
    {
      version: KELPIE_VERSION,
      storage: config.storage,
      dataDir: config.storage === "sqlite" ? config.dataDir : undefined,
    },
    `kelpie listening on http://${config.host}:${config.port}${reach}`,
  );
}

const USAGE = `kelpie ${KELPIE_VERSION}
usage: kelpie serve                    start the server (see README for configuration)
       kelpie keys create [--name N]   create an API key (printed once; stored hashed)
       kelpie keys list                list API keys (ids and names)
       kelpie dst [--seeds N]          deterministic simulation (DST_SEED=n replays one seed)
       kelpie chat [--url U] [--agent ID|NAME] [--new] [--model M]
                                       chat with an agent in the terminal (kelpie chat --help)`;

const [command] = process.argv.slice(2);
try {
  if (command === "serve") await serve();
  else if (command === "keys") process.exitCode = await keysCommand(process.argv.slice(3));
  else if (command === "chat") {
    const { chatCommand } = await import("./chat.ts");
    process.exitCode = await chatCommand(process.argv.slice(3));
  } else if (command === "dst") {
    const { dstCommand } = await import("../dst/main.ts");
    process.exitCode = await dstCommand(process.argv.slice(3));
  } else if (command === "--version" || command === "version") console.log(KELPIE_VERSION);
  else {
    console.log(USAGE);
    process.exitCode = command === undefined || command === "help" || command === "--help" ? 0 : 2;
  }
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(`kelpie: ${err.message}`);
    process.exit(2);
  }
  throw err;
}
