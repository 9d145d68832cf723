// Request schemas shared by the routes. Bodies are validated without type coercion (a string is
// not silently an array); query strings are coerced, as HTTP query values are always text.
import { PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX } from "../core/constants.ts";
import type { Order, PageQuery } from "../storage/types.ts";

export const nullable = (schema: Record<string, unknown>) => ({ anyOf: [schema, { type: "null" }] });
export const stringArray = { type: "array", items: { type: "string" } } as const;
export const jsonObject = { type: "object" } as const;

export function pageQuerySchema(order: Order, limitDefault = PAGE_LIMIT_DEFAULT) {
  return {
    limit: { type: "integer", minimum: 1, maximum: PAGE_LIMIT_MAX, default: limitDefault },
    after: { type: "string", minLength: 1 },
    before: { type: "string", minLength: 1 },
    order: { type: "string", enum: ["asc", "desc"], default: order },
    order_by: { type: "string" },
  } as const;
}

export interface PageQueryString {
  limit: number;
  after?: string;
  before?: string;
  order: Order;
}

export function pageOf(q: PageQueryString): PageQuery {
  return { limit: q.limit, after: q.after, before: q.before, order: q.order };
}

export const blockFieldsSchema = {
  label: { type: "string" },
  value: { type: "string" },
  limit: { type: "integer" },
  description: nullable({ type: "string" }),
  read_only: { type: "boolean" },
  metadata: nullable(jsonObject),
  is_template: { type: "boolean" },
  template_name: nullable({ type: "string" }),
  hidden: nullable({ type: "boolean" }),
  tags: nullable(stringArray),
  project_id: nullable({ type: "string" }),
} as const;

/** Cursor query for a list already in memory: no default limit, so a plain GET still returns all of it. */
export const cursorQuerySchema = {
  type: "object",
  properties: {
    limit: { type: "integer", minimum: 1, maximum: PAGE_LIMIT_MAX },
    after: { type: "string", minLength: 1 },
    before: { type: "string", minLength: 1 },
    order: { type: "string", enum: ["asc", "desc"] },
    order_by: { type: "string" },
  },
} as const;

export interface CursorQueryString {
  limit?: number;
  after?: string;
  before?: string;
  order?: Order;
}

/**
 * Letta's cursor pagination over a list held in memory (in its natural order, "asc"). The SDKs
 * page with `after=<last id>` until a page is empty, so an id past the end (or unknown) gives [].
 */
export function pageOfList<T extends { id: string }>(items: T[], q: CursorQueryString): T[] {
  let out = q.order === "desc" ? [...items].reverse() : items;
  if (q.after !== undefined) {
    const i = out.findIndex((x) => x.id === q.after);
    out = i < 0 ? [] : out.slice(i + 1);
  }
  if (q.before !== undefined) {
    const i = out.findIndex((x) => x.id === q.before);
    out = i < 0 ? [] : out.slice(q.limit === undefined ? 0 : Math.max(0, i - q.limit), i);
  }
  return q.limit === undefined ? out : out.slice(0, q.limit);
}
