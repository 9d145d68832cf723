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
  // The series of every commit, found once.
  const e = storage.engine;
  const duration = metrics.storageCommitDurationSeconds.cell(e, () => ({ engine: e }));
  const outcomes = {
    ok: metrics.storageCommitsTotal.cell(`${e} ok`, () => ({ engine: e, outcome: "ok" })),
    fenced: metrics.storageCommitsTotal.cell(`${e} fenced`, () => ({ engine: e, outcome: "fenced" })),
    error: metrics.storageCommitsTotal.cell(`${e} error`, () => ({ engine: e, outcome: "error" })),
  };
  const commit = async (mutations: Mutation[], options?: CommitOptions): Promise<void> => {
    const startMs = clock.monotonicMs();
    try {
      await telemetry.span(
        "storage.commit",
        { engine: storage.engine, mutations: mutations.length },
        () => storage.commit(mutations, options),
        { leaf: true },
      );
      metrics.storageCommitsTotal.inc(outcomes.ok);
    } catch (err) {
      const fenced = isKelpieError(err) && err.code === "FENCED";
      if (fenced) metrics.fencingRejectionsTotal.inc();
      metrics.storageCommitsTotal.inc(fenced ? outcomes.fenced : outcomes.error);
      throw err;
    } finally {
      metrics.storageCommitDurationSeconds.observe(duration, (clock.monotonicMs() - startMs) / 1_000);
    }
  };
  // Every other method goes straight to the engine: bound once, on a plain object (a Proxy would
  // run a trap on every call, and storage is called many times per step).
  const instrumented: Record<PropertyKey, unknown> = {};
  for (let proto: object | null = storage; proto !== null && proto !== Object.prototype; ) {
    for (const property of Reflect.ownKeys(proto)) {
      if (property === "constructor" || property in instrumented) continue;
      const descriptor = Reflect.getOwnPropertyDescriptor(proto, property);
      if (descriptor !== undefined && typeof descriptor.value === "function") {
        instrumented[property] = (descriptor.value as (...args: unknown[]) => unknown).bind(storage);
      } else {
        // Fields and getters (engine, tiers, cluster) read through to the engine.
        Object.defineProperty(instrumented, property, {
          get: () => Reflect.get(storage, property),
          enumerable: true,
        });
      }
    }
    proto = Reflect.getPrototypeOf(proto);
  }
  instrumented.commit = commit;
  return instrumented as unknown as Storage;
}
