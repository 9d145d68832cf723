// One table of error codes: each has an HTTP status and a retryable flag, declared once and
// rendered once (api/errors.ts) in Letta's shape, `{"detail": ...}`.
import { OUTBOX_ENTRIES_PER_AGENT_MAX } from "./constants.ts";

export const ERRORS = {
  NOT_FOUND: { status: 404, retryable: false },
  AGENT_NOT_FOUND: { status: 404, retryable: false },
  BLOCK_NOT_FOUND: { status: 404, retryable: false },
  TOOL_NOT_FOUND: { status: 404, retryable: false },
  MESSAGE_NOT_FOUND: { status: 404, retryable: false },
  RUN_NOT_FOUND: { status: 404, retryable: false },
  VALIDATION: { status: 422, retryable: false },
  BAD_REQUEST: { status: 400, retryable: false },
  PAYLOAD_TOO_LARGE: { status: 413, retryable: false },
  CONFLICT: { status: 409, retryable: false },
  BLOCK_LIMIT_EXCEEDED: { status: 422, retryable: false },
  BLOCK_READ_ONLY: { status: 403, retryable: false },
  MAILBOX_FULL: { status: 429, retryable: true },
  /** TURNS_QUEUED_PER_AGENT_MAX turns already wait for the agent (its 429 carries Retry-After). */
  AGENT_BUSY: { status: 429, retryable: true },
  /** An agent has OUTBOX_ENTRIES_PER_AGENT_MAX async messages waiting for delivery. */
  OUTBOX_FULL: { status: 429, retryable: true },
  FENCED: { status: 409, retryable: true },
  SHUTTING_DOWN: { status: 503, retryable: true },
  /** Work the server bounds (python3 schema parses, local embeddings) has a full line: try later. */
  OVERLOADED: { status: 503, retryable: true },
  STORAGE_UNAVAILABLE: { status: 503, retryable: true },
  /** Another live node holds the agent's lease (a forwarded request that arrived too late). */
  AGENT_ELSEWHERE: { status: 503, retryable: true },
  /** The node that owned the agent failed while handling a forwarded request: outcome unknown. */
  OWNER_FAILED: { status: 502, retryable: true },
  LLM_ERROR: { status: 502, retryable: true },
  LLM_NOT_CONFIGURED: { status: 400, retryable: false },
  CONTEXT_WINDOW_OVERFLOW: { status: 400, retryable: false },
  MCP_UNAVAILABLE: { status: 502, retryable: true },
  /** The egress policy refused an outbound call (a private address, too many redirects, ...). */
  EGRESS_REFUSED: { status: 403, retryable: false },
  /** A stdio MCP server this server's operator has not allowed (KELPIE_MCP_STDIO_COMMANDS). */
  MCP_STDIO_FORBIDDEN: { status: 403, retryable: false },
  CANCELLED: { status: 409, retryable: false },
  INTERNAL: { status: 500, retryable: false },
} as const satisfies Record<string, { status: number; retryable: boolean }>;

export type ErrorCode = keyof typeof ERRORS;

/** One field-level problem, FastAPI-style (`loc` is the path to the field). */
export interface FieldIssue {
  loc: (string | number)[];
  msg: string;
  type: string;
}

export class KelpieError extends Error {
  override name = "KelpieError";
  readonly code: ErrorCode;
  readonly issues: FieldIssue[] | undefined;
  /** When to try again, in seconds (sent as the Retry-After header). */
  readonly retryAfterS: number | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    options?: { issues?: FieldIssue[]; cause?: unknown; retryAfterS?: number },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.issues = options?.issues;
    this.retryAfterS = options?.retryAfterS;
  }

  get status(): number {
    return ERRORS[this.code].status;
  }

  get retryable(): boolean {
    return ERRORS[this.code].retryable;
  }
}

export function isKelpieError(err: unknown): err is KelpieError {
  return err instanceof KelpieError;
}

/** An agent's outbox holds `held` undelivered entries, the most it may. */
export function outboxFull(agentId: string, held: number): KelpieError {
  return new KelpieError(
    "OUTBOX_FULL",
    `agent ${agentId} has ${held} async messages waiting for delivery (max ${OUTBOX_ENTRIES_PER_AGENT_MAX})`,
  );
}

export function notFound(kind: "agent" | "block" | "tool" | "message" | "run", id: string): KelpieError {
  const code = (
    {
      agent: "AGENT_NOT_FOUND",
      block: "BLOCK_NOT_FOUND",
      tool: "TOOL_NOT_FOUND",
      message: "MESSAGE_NOT_FOUND",
      run: "RUN_NOT_FOUND",
    } as const
  )[kind];
  const label = kind[0]!.toUpperCase() + kind.slice(1);
  return new KelpieError(code, `${label} ${id} not found`);
}

/** A request field is wrong: 422 naming the field. */
export function invalidField(loc: (string | number)[], msg: string, type = "value_error"): KelpieError {
  return new KelpieError("VALIDATION", `${loc.join(".")}: ${msg}`, { issues: [{ loc, msg, type }] });
}
