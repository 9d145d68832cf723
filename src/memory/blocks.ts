// Core memory blocks: creation, edits and limits. A value longer than its limit is rejected with
// an error naming the field; nothing is ever truncated.
import {
  BLOCK_LABEL_LENGTH_MAX,
  BLOCK_LIMIT_CHARS_DEFAULT,
  BLOCK_LIMIT_CHARS_MAX,
} from "../core/constants.ts";
import { invalidField, KelpieError } from "../core/errors.ts";
import { checkMetadata, checkName, checkTags } from "../core/field-limits.ts";
import { newId } from "../core/ids.ts";
import type { Rng } from "../core/rng.ts";
import type { BlockRecord } from "../storage/types.ts";

/** The writable fields of a block, as Letta's CreateBlock / BlockUpdate carry them. */
export interface BlockFields {
  label?: string | undefined;
  value?: string | undefined;
  limit?: number | undefined;
  description?: string | null | undefined;
  read_only?: boolean | undefined;
  metadata?: Record<string, unknown> | null | undefined;
  is_template?: boolean | undefined;
  template_name?: string | null | undefined;
  hidden?: boolean | null | undefined;
  tags?: string[] | null | undefined;
  project_id?: string | null | undefined;
}

/** Checks a block about to be written; `loc` is where its fields sit in the request. */
export function checkBlock(block: BlockRecord, loc: (string | number)[]): void {
  if (block.label.length === 0) throw invalidField([...loc, "label"], "must not be empty");
  if (block.label.length > BLOCK_LABEL_LENGTH_MAX) {
    throw invalidField([...loc, "label"], `must be at most ${BLOCK_LABEL_LENGTH_MAX} characters`);
  }
  checkName(block.template_name, [...loc, "template_name"]);
  checkMetadata(block.metadata, [...loc, "metadata"]);
  checkTags(block.tags, [...loc, "tags"]);
  if (!Number.isInteger(block.limit) || block.limit < 1 || block.limit > BLOCK_LIMIT_CHARS_MAX) {
    throw invalidField([...loc, "limit"], `must be an integer from 1 to ${BLOCK_LIMIT_CHARS_MAX}`);
  }
  if (block.value.length > block.limit) {
    throw new KelpieError(
      "BLOCK_LIMIT_EXCEEDED",
      `Edit failed: exceeds ${block.limit} character limit (requested ${block.value.length}) for block '${block.label}'`,
      {
        issues: [
          {
            loc: [...loc, "value"],
            msg: `value has ${block.value.length} characters; the block's limit is ${block.limit}`,
            type: "value_error.block_limit",
          },
        ],
      },
    );
  }
}

export function newBlock(
  fields: BlockFields,
  nowMs: number,
  rng: Rng,
  loc: (string | number)[],
): BlockRecord {
  if (fields.label === undefined) throw invalidField([...loc, "label"], "field required", "missing");
  const block: BlockRecord = {
    id: newId("block", rng),
    label: fields.label,
    value: fields.value ?? "",
    limit: fields.limit ?? Math.max(BLOCK_LIMIT_CHARS_DEFAULT, (fields.value ?? "").length),
    description: fields.description ?? null,
    read_only: fields.read_only ?? false,
    metadata: fields.metadata ?? {},
    is_template: fields.is_template ?? false,
    template_name: fields.template_name ?? null,
    hidden: fields.hidden ?? null,
    tags: fields.tags ?? [],
    project_id: fields.project_id ?? null,
    version: 1,
    created_at_ms: nowMs,
    updated_at_ms: nowMs,
  };
  checkBlock(block, loc);
  return block;
}

/** The next version of a block with `fields` applied; checked before it is returned. */
export function updatedBlock(
  block: BlockRecord,
  fields: BlockFields,
  nowMs: number,
  loc: (string | number)[],
): BlockRecord {
  const next: BlockRecord = {
    ...block,
    label: fields.label ?? block.label,
    value: fields.value ?? block.value,
    limit: fields.limit ?? block.limit,
    description: fields.description !== undefined ? fields.description : block.description,
    read_only: fields.read_only ?? block.read_only,
    metadata: fields.metadata !== undefined ? (fields.metadata ?? {}) : block.metadata,
    is_template: fields.is_template ?? block.is_template,
    template_name: fields.template_name !== undefined ? fields.template_name : block.template_name,
    hidden: fields.hidden !== undefined ? fields.hidden : block.hidden,
    tags: fields.tags !== undefined ? (fields.tags ?? []) : block.tags,
    project_id: fields.project_id !== undefined ? fields.project_id : block.project_id,
    version: block.version + 1,
    updated_at_ms: nowMs,
  };
  checkBlock(next, loc);
  return next;
}
