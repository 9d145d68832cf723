// Everything that is not pure computation reaches runtime, agent, memory and cluster code
// through one Env, so the simulator can build one whose time, randomness and I/O it controls.
import type { Storage } from "../storage/types.ts";
import type { Clock } from "./clock.ts";
import type { Rng } from "./rng.ts";

export interface Env {
  clock: Clock;
  rng: Rng;
  storage: Storage;
}
