// A counting semaphore with a bounded line: at most `runningMax` holders at once, at most
// `waitingMax` callers waiting (first come, first served); a caller beyond both is told at once.
import { assert } from "../../core/assert.ts";

export class Slots {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(
    readonly runningMax: number,
    readonly waitingMax: number,
  ) {
    assert(
      Number.isInteger(runningMax) && runningMax >= 1,
      `runningMax must be a positive integer, got ${runningMax}`,
    );
    assert(
      Number.isInteger(waitingMax) && waitingMax >= 0,
      `waitingMax must be a non-negative integer, got ${waitingMax}`,
    );
  }

  /** Holders now, and callers in line. */
  load(): { running: number; waiting: number } {
    return { running: this.running, waiting: this.waiting.length };
  }

  /** A slot's release (call it exactly once), when one is free or once one frees; null when the line
   * is full too. */
  acquire(): Promise<() => void> | null {
    if (this.running < this.runningMax) {
      this.running++;
      return Promise.resolve(this.releaser());
    }
    if (this.waiting.length >= this.waitingMax) return null;
    return new Promise((resolve) => this.waiting.push(() => resolve(this.releaser())));
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      assert(!released, "sandbox slot released twice");
      released = true;
      const next = this.waiting.shift();
      // The slot passes straight to the next in line: the count stays, so no one can jump the queue.
      if (next !== undefined) next();
      else this.running--;
    };
  }
}
