// A Storage that times commits, counts fencing rejections and traces each commit, delegating
// everything to the engine underneath.
import type { Clock } from "../core/clock.ts";
import { isKelpieError } from "../core/errors.ts";
import type { CommitOptions, Mutation, Storage } from "../storage/types.ts";
import type { KelpieMetrics } from "./metrics.ts";
import type { Telemetry } from "./telemetry.ts";

export function instrumentStorage(
  storage: Storage,
  metrics: KelpieMetrics,
  telemetry: Telemetry,
  clock: Clock,
): Storage {
  const commit = async (mutations: Mutation[], options?: CommitOptions): Promise<void> => {
    const startMs = clock.monotonicMs();
    try {
      await telemetry.span(
        "storage.commit",
        { engine: storage.engine, mutations: mutations.length },
        () => storage.commit(mutations, options),
        { leaf: true },
      );
      metrics.storageCommitsTotal.inc({ engine: storage.engine, outcome: "ok" });
    } catch (err) {
      const fenced = isKelpieError(err) && err.code === "FENCED";
      if (fenced) metrics.fencingRejectionsTotal.inc();
      metrics.storageCommitsTotal.inc({ engine: storage.engine, outcome: fenced ? "fenced" : "error" });
      throw err;
    } finally {
      metrics.storageCommitDurationSeconds.observe(
        { engine: storage.engine },
        (clock.monotonicMs() - startMs) / 1_000,
      );
    }
  };
  // Every other method goes straight to the engine (bound once, not on every call).
  const bound = new Map<PropertyKey, unknown>([["commit", commit]]);
  return new Proxy(storage, {
    get(target, property, receiver) {
      const cached = bound.get(property);
      if (cached !== undefined) return cached;
      const value = Reflect.get(target, property, receiver);
      if (typeof value !== "function") return value;
      const fn = value.bind(target);
      bound.set(property, fn);
      return fn;
    },
  });
}
