// Blocks as a resource of their own (/v1/blocks). A block may be shared by several agents: it is
// one row, so an edit is seen by all of them. Concurrent edits are caught by the block's version.
import type { Env } from "../core/env.ts";
import { notFound } from "../core/errors.ts";
import type { BlockListQuery, BlockRecord } from "../storage/types.ts";
import { type BlockFields, newBlock, updatedBlock } from "./blocks.ts";

export class BlockService {
  constructor(private readonly env: Env) {}

  async create(fields: BlockFields): Promise<BlockRecord> {
    const block = newBlock(fields, this.env.clock.nowMs(), this.env.rng, ["body"]);
    await this.env.storage.commit([{ op: "put_block", block, create: true }]);
    return block;
  }

  async get(blockId: string): Promise<BlockRecord> {
    const block = await this.env.storage.getBlock(blockId);
    if (block === null) throw notFound("block", blockId);
    return block;
  }

  list(query: BlockListQuery): Promise<BlockRecord[]> {
    return this.env.storage.listBlocks(query);
  }

  count(): Promise<number> {
    return this.env.storage.countBlocks();
  }

  async update(blockId: string, fields: BlockFields): Promise<BlockRecord> {
    const block = await this.get(blockId);
    const next = updatedBlock(block, fields, this.env.clock.nowMs(), ["body"]);
    await this.env.storage.commit([{ op: "put_block", block: next, create: false }]);
    return next;
  }

  async delete(blockId: string): Promise<void> {
    await this.env.storage.commit([{ op: "delete_block", block_id: blockId }]);
  }

  async agentIds(blockId: string): Promise<string[]> {
    await this.get(blockId);
    return this.env.storage.listBlockAgentIds(blockId);
  }
}
