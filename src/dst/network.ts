// The simulated network between the workload's clients and the server nodes. Every one-way message
// takes a seeded delay; inside fault windows messages are dropped, held back for seconds, or given
// jitter large enough to overtake earlier ones; a partitioned node neither receives nor sends (a
// message in flight when the partition starts is lost too). Delivery is a scheduler event, so the
// order of arrivals is a function of the seed. Between nodes (forwarded requests) every message
// takes a seeded delay too, and a node cut off from the other nodes neither sends to nor receives
// from any of them.
import type { Rng } from "../core/rng.ts";
import type { ActiveFaults, FaultCounters } from "./faults.ts";
import type { SimScheduler } from "./scheduler.ts";

export const NETWORK_DELAY_MS_MIN = 1;
export const NETWORK_DELAY_MS_MAX = 20;
export const NETWORK_EXTRA_DELAY_MS_MAX = 3_000;
export const NETWORK_REORDER_JITTER_MS_MAX = 1_500;
export const NETWORK_LOSS_PROBABILITY = 0.3;
export const NETWORK_DELAY_PROBABILITY = 0.5;

export interface NetworkDeps {
  scheduler: SimScheduler;
  rng: Rng;
  faults: ActiveFaults;
  counters: FaultCounters;
  trace: (line: string) => void;
}

export class SimNetwork {
  private readonly partitioned = new Set<number>();
  /** Nodes cut off from the other nodes (not from the clients). */
  private readonly isolated = new Set<number>();
  /** Latest scheduled arrival per node and direction, to tell when a message overtakes an earlier one. */
  private readonly lastArrivalMs = new Map<string, number>();
  messagesSent = 0;
  messagesDropped = 0;

  constructor(private readonly deps: NetworkDeps) {}

  /** Called when a node is partitioned (the load balancer resets the connections it held). */
  readonly onPartition: ((nodeId: number) => void)[] = [];

  partition(nodeId: number): void {
    this.partitioned.add(nodeId);
    for (const listener of this.onPartition) listener(nodeId);
  }

  heal(nodeId: number): void {
    this.partitioned.delete(nodeId);
  }

  isPartitioned(nodeId: number): boolean {
    return this.partitioned.has(nodeId);
  }

  /** Called when a node is cut off from the other nodes (connections between them reset). */
  readonly onIsolate: ((nodeId: number) => void)[] = [];

  isolate(nodeId: number): void {
    this.isolated.add(nodeId);
    for (const listener of this.onIsolate) listener(nodeId);
  }

  rejoin(nodeId: number): void {
    this.isolated.delete(nodeId);
  }

  /** Whether two nodes can reach each other now. */
  linked(a: number, b: number): boolean {
    return !this.isolated.has(a) && !this.isolated.has(b);
  }

  /**
   * Sends one message from one node to another; `deliver` runs on arrival, or never when a
   * partition between them drops it (at sending or on arrival).
   */
  sendBetweenNodes(from: number, to: number, label: string, deliver: () => void): void {
    const { scheduler, rng, trace } = this.deps;
    this.messagesSent++;
    const drop = () => {
      this.messagesDropped++;
      trace(`net drop ${label} (node partition)`);
    };
    if (!this.linked(from, to)) {
      drop();
      return;
    }
    const delayMs = NETWORK_DELAY_MS_MIN + rng.int(NETWORK_DELAY_MS_MAX - NETWORK_DELAY_MS_MIN);
    scheduler.schedule(delayMs, () => {
      if (this.linked(from, to)) deliver();
      else drop();
    });
  }

  /**
   * Sends one message on the link between a client and a node; `deliver` runs on arrival, or never
   * when the message is lost. `label` names it in the trace.
   */
  send(link: { client: number; node: number; toNode: boolean }, label: string, deliver: () => void): void {
    const { scheduler, rng, faults, counters, trace } = this.deps;
    const nowMs = scheduler.nowMs();
    this.messagesSent++;
    const drop = (why: string) => {
      this.messagesDropped++;
      trace(`net drop ${label} (${why})`);
    };
    if (this.partitioned.has(link.node)) {
      drop("partition");
      return;
    }
    if (faults.isOpen("network_loss", nowMs) && rng.next() < NETWORK_LOSS_PROBABILITY) {
      counters.count("network_loss");
      trace(`fault network_loss ${label}`);
      drop("loss");
      return;
    }
    let delayMs = NETWORK_DELAY_MS_MIN + rng.int(NETWORK_DELAY_MS_MAX - NETWORK_DELAY_MS_MIN);
    if (faults.isOpen("network_delay", nowMs) && rng.next() < NETWORK_DELAY_PROBABILITY) {
      const extraMs = 1 + rng.int(NETWORK_EXTRA_DELAY_MS_MAX);
      delayMs += extraMs;
      counters.count("network_delay");
      trace(`fault network_delay ${label} +${extraMs}ms`);
    }
    // Order is judged per node and direction: the node's ingress (or egress) sees messages from all
    // clients, so reordering means one arriving before another that was sent earlier.
    const key = `${link.node}:${link.toNode ? "in" : "out"}`;
    if (faults.isOpen("network_reorder", nowMs)) delayMs += rng.int(NETWORK_REORDER_JITTER_MS_MAX);
    const arrivalMs = nowMs + delayMs;
    const lastMs = this.lastArrivalMs.get(key) ?? 0;
    if (arrivalMs < lastMs) {
      // Counted only when the jitter really made this message overtake an earlier one.
      counters.count("network_reorder");
      trace(`fault network_reorder ${label} arrives ${lastMs - arrivalMs}ms before an earlier message`);
    }
    this.lastArrivalMs.set(key, Math.max(lastMs, arrivalMs));
    scheduler.schedule(delayMs, () => {
      if (this.partitioned.has(link.node)) drop("partition");
      else deliver();
    });
  }
}
