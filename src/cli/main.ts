// kelpie serve: start the server (configuration from the environment; see README).
import { join } from "node:path";
import { ConfigError, configFromEnv } from "../config.ts";
import { prettyStream } from "../observability/log-format.ts";
import { tracingFromEnv } from "../observability/tracing.ts";
import { createKelpie, KELPIE_VERSION, productionEnv } from "../server.ts";
import { ARCHIVAL_INDEX_DIR_NAME } from "../storage/open.ts";
import { keysCommand } from "./keys.ts";

const SHUTDOWN_GRACE_MS = 30_000;

async function serve(): Promise<void> {
  const config = configFromEnv(process.env);
  const env = await productionEnv(config);
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
    },
    requestTimeoutMs: config.requestTimeoutMs,
    sandboxAllowProcess: process.env.KELPIE_SANDBOX_ALLOW_PROCESS === "1",
    sandboxDefaults: config.sandboxDefaults,
    exaApiKey: config.exaApiKey,
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
    log.warn(
      "bubblewrap (bwrap) is not available: Python tools cannot run in the namespace sandbox (apt-get install bubblewrap)",
    );
  }
  if (sandbox.processAllowed)
    log.warn("KELPIE_SANDBOX_ALLOW_PROCESS=1: tools may run as plain processes WITHOUT isolation");
  // A default level this server cannot provide fails every tool that relies on it: say so now.
  for (const problem of sandbox.problems) log.warn(`sandbox: ${problem}`);
  await kelpie.app.listen({ host: config.host, port: config.port });
  log.info(
    {
      version: KELPIE_VERSION,
      storage: config.storage,
      dataDir: config.storage === "sqlite" ? config.dataDir : undefined,
    },
    `kelpie listening on http://${config.host}:${config.port}`,
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
