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
