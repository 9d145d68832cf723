// Committed messages are immutable, so the loop keeps recently used ones parsed in memory instead
// of reading the whole in-context history from storage on every step. Least recently used entries
// go first; a miss just reads storage. Only committed records are ever put here.
import type { MessageRecord, Storage } from "../storage/types.ts";

export const MESSAGE_CACHE_ENTRIES_MAX = 100_000;

export class MessageCache {
  private readonly entries = new Map<string, MessageRecord>();

  constructor(private readonly capacity = MESSAGE_CACHE_ENTRIES_MAX) {}

  put(message: MessageRecord): void {
    this.entries.delete(message.id);
    this.entries.set(message.id, message);
    if (this.entries.size > this.capacity) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }

  /** The messages with these ids, in order; ids that exist nowhere are left out. */
  async load(storage: Storage, ids: string[]): Promise<MessageRecord[]> {
    const missing: string[] = [];
    for (const id of ids) if (!this.entries.has(id)) missing.push(id);
    if (missing.length > 0) for (const m of await storage.getMessages(missing)) this.put(m);
    const out: MessageRecord[] = [];
    for (const id of ids) {
      const m = this.entries.get(id);
      if (m !== undefined) out.push(m);
    }
    return out;
  }

  get size(): number {
    return this.entries.size;
  }
}
