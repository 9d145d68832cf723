// A fetch that enforces the egress policy (egress.ts) on every hop: the URL is checked before
// connecting, host names are checked on resolution and the socket connects only to the checked
// addresses, redirects are followed here (at most EGRESS_REDIRECTS_MAX, each one checked again),
// response bodies are capped, and an error response from an endpoint the operator did not
// configure comes back without its body, so no foreign text is echoed into our error messages.
// The SDKs (OpenAI, Anthropic, MCP) take it as their `fetch`.
import { Agent, fetch as undiciFetch } from "undici";
import { KelpieError } from "../core/errors.ts";
import { type EgressOptions, EgressPolicy, EgressRefusedError, egressRefusalIn } from "./egress.ts";

export const EGRESS_REDIRECTS_MAX = 5;
/** Any one response body; an LLM completion or an MCP stream is far smaller. */
export const EGRESS_RESPONSE_BYTES_MAX = 64 * 1024 * 1024;
export const WITHHELD_BODY_TEXT =
  "(response body withheld: the endpoint was named by a client, not configured by the operator)";

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const NULL_BODY_STATUSES = new Set([101, 204, 205, 304]);
/** Headers kept when a redirect leaves the origin: anything else may carry a credential. */
const CROSS_ORIGIN_SAFE_HEADERS = new Set(["accept", "accept-language", "content-type", "user-agent"]);

type FetchBody = string | ArrayBuffer | ArrayBufferView | URLSearchParams | ReadableStream | null;

interface Hop {
  url: URL;
  method: string;
  headers: Headers;
  body: FetchBody;
}

function hostOf(url: URL): string {
  return url.host;
}

/** Errors a stream past `maxBytes`: never a silent cut. */
function byteCap(maxBytes: number, host: string): TransformStream<Uint8Array, Uint8Array> {
  let seen = 0;
  return new TransformStream({
    transform(chunk, controller) {
      seen += chunk.byteLength;
      if (seen > maxBytes) {
        controller.error(
          new KelpieError(
            "EGRESS_REFUSED",
            `the response from ${host} is larger than EGRESS_RESPONSE_BYTES_MAX (${maxBytes} bytes)`,
          ),
        );
        return;
      }
      controller.enqueue(chunk);
    },
  });
}

async function hopOf(input: string | URL | Request, init: RequestInit | undefined): Promise<Hop> {
  if (typeof input === "string" || input instanceof URL) {
    return {
      url: new URL(input),
      method: (init?.method ?? "GET").toUpperCase(),
      headers: new Headers(init?.headers),
      body: (init?.body ?? null) as FetchBody,
    };
  }
  const headers = new Headers(input.headers);
  for (const [name, value] of new Headers(init?.headers)) headers.set(name, value);
  const body = init?.body ?? (input.body === null ? null : await input.arrayBuffer());
  return {
    url: new URL(input.url),
    method: (init?.method ?? input.method).toUpperCase(),
    headers,
    body: body as FetchBody,
  };
}

/** The hop after a redirect to `location`, as browsers make it (RFC 9110 15.4). */
function redirected(hop: Hop, status: number, location: URL): Hop {
  let { method, body } = hop;
  const headers = new Headers(hop.headers);
  if ((status === 303 && method !== "HEAD") || ((status === 301 || status === 302) && method === "POST")) {
    method = "GET";
    body = null;
    for (const name of ["content-type", "content-length", "content-encoding", "content-language"])
      headers.delete(name);
  } else if (body instanceof ReadableStream) {
    throw new KelpieError("EGRESS_REFUSED", `redirect from ${hostOf(hop.url)} cannot resend a streamed body`);
  }
  if (location.origin !== hop.url.origin) {
    for (const name of [...headers.keys()]) if (!CROSS_ORIGIN_SAFE_HEADERS.has(name)) headers.delete(name);
  }
  return { url: location, method, headers, body };
}

export class Egress {
  readonly policy: EgressPolicy;
  /** For endpoints the operator configured: no checks. */
  private readonly plain = new Agent();
  /** For everything else: resolution goes through the policy, and the socket uses what it checked. */
  private readonly checked: Agent;

  constructor(options: EgressOptions = {}) {
    this.policy = new EgressPolicy(options);
    this.checked = new Agent({ connect: { lookup: this.policy.lookup } });
  }

  /** A fetch with the policy on every hop (the SDKs' `fetch` option takes it as it is). */
  readonly fetch: typeof fetch = async (input, init) => {
    let hop = await hopOf(input as string | URL | Request, init);
    const mode = init?.redirect ?? "follow";
    for (let redirects = 0; ; redirects++) {
      const { trusted } = this.policy.check(hop.url);
      const res = await this.send(hop, trusted, init?.signal ?? undefined);
      const location = res.headers.get("location");
      if (mode === "manual" || !REDIRECT_STATUSES.has(res.status) || location === null)
        return this.response(res, hop.url, trusted);
      await res.body?.cancel();
      if (mode === "error")
        throw new KelpieError("EGRESS_REFUSED", `${hostOf(hop.url)} answered with a redirect (not followed)`);
      if (redirects >= EGRESS_REDIRECTS_MAX)
        throw new KelpieError(
          "EGRESS_REFUSED",
          `${hostOf(hop.url)}: more than EGRESS_REDIRECTS_MAX (${EGRESS_REDIRECTS_MAX}) redirects`,
        );
      let next: URL;
      try {
        next = new URL(location, hop.url);
      } catch {
        throw new KelpieError("EGRESS_REFUSED", `${hostOf(hop.url)} redirected to an invalid URL`);
      }
      hop = redirected(hop, res.status, next);
    }
  };

  private async send(hop: Hop, trusted: boolean, signal: AbortSignal | undefined) {
    try {
      return await undiciFetch(hop.url, {
        method: hop.method,
        headers: [...hop.headers],
        body: hop.body as never,
        redirect: "manual",
        dispatcher: trusted ? this.plain : this.checked,
        ...(hop.body instanceof ReadableStream ? { duplex: "half" as const } : {}),
        ...(signal === undefined ? {} : { signal }),
      });
    } catch (err) {
      // The socket's lookup refused the address: report that, not "fetch failed".
      throw egressRefusalIn(err) ?? err;
    }
  }

  private async response(res: Awaited<ReturnType<typeof undiciFetch>>, url: URL, trusted: boolean) {
    const headers = new Headers([...res.headers]);
    const init = { status: res.status, statusText: res.statusText, headers };
    if (!trusted && res.status >= 400) {
      await res.body?.cancel();
      for (const name of ["content-length", "content-encoding"]) headers.delete(name);
      headers.set("content-type", "text/plain; charset=utf-8");
      return new Response(WITHHELD_BODY_TEXT, init);
    }
    if (res.body === null || NULL_BODY_STATUSES.has(res.status)) return new Response(null, init);
    // fetch has already decoded the body: the encoding and length headers describe the wire form.
    if (headers.has("content-encoding")) {
      headers.delete("content-encoding");
      headers.delete("content-length");
    }
    const body = (res.body as ReadableStream<Uint8Array>).pipeThrough(
      byteCap(EGRESS_RESPONSE_BYTES_MAX, hostOf(url)),
    );
    return new Response(body, init);
  }

  async close(): Promise<void> {
    await Promise.all([this.plain.close(), this.checked.close()]);
  }
}

/** The transport of a server without network (the simulator): every call fails at once. */
export const noNetworkFetch: typeof fetch = async (input) => {
  const url = input instanceof Request ? input.url : String(input);
  throw new EgressRefusedError(`outbound call to ${url} refused: this server has no network`);
};

/**
 * Reads at most `maxBytes` of a body as UTF-8 text; `truncated` says whether more was left
 * unread (the rest is not downloaded).
 */
export async function readTextCapped(
  res: Response,
  maxBytes: number,
): Promise<{ text: string; truncated: boolean }> {
  if (res.body === null) return { text: "", truncated: false };
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  let truncated = false;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (size + value.byteLength > maxBytes) {
      chunks.push(value.subarray(0, maxBytes - size));
      size = maxBytes;
      truncated = true;
      await reader.cancel();
      break;
    }
    chunks.push(value);
    size += value.byteLength;
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const c of chunks) {
    bytes.set(c, offset);
    offset += c.byteLength;
  }
  // A multi-byte character cut at the end decodes to U+FFFD, not an exception.
  return { text: new TextDecoder().decode(bytes), truncated };
}
