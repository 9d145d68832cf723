// Letta's built-in web tools. fetch_webpage fetches a page and turns its HTML into text;
// web_search asks Exa (EXA_API_KEY), as Letta's server does, and says clearly when no key is set.
// Large pages are cut with an explicit marker, never silently. fetch_webpage goes through the egress
// policy (src/net): a model cannot make it reach loopback, private or metadata addresses.
import type { ToolCallContext, ToolOutput, ToolRunner, ToolRunners } from "../agent/tool-calls.ts";
import { egressRefusalIn } from "../net/egress.ts";
import { readTextCapped } from "../net/egress-fetch.ts";
import { ToolError } from "./memory-tools.ts";

const WEB_FETCH_TIMEOUT_MS = 15_000;
/** Bytes of a page read at most; the rest is not downloaded, and the result says so. */
export const WEB_FETCH_BODY_BYTES_MAX = 2 * 1024 * 1024;
const WEB_PAGE_CHARS_MAX = 40_000;
const EXA_SEARCH_URL = "https://api.exa.ai/search";
const WEB_SEARCH_RESULTS_DEFAULT = 10;
const WEB_SEARCH_RESULTS_MAX = 100;

/** Elements whose content is not text. */
const RAW_TEXT_TAGS = new Set(["script", "style", "noscript", "template"]);
/** Tags that end a line of text (closing ones, and <br>). */
const LINE_BREAK_TAGS = new Set([
  "br",
  "/p",
  "/div",
  "/li",
  "/h1",
  "/h2",
  "/h3",
  "/h4",
  "/h5",
  "/h6",
  "/tr",
  "/section",
  "/article",
]);
const ENTITIES: Record<string, string> = { nbsp: " ", lt: "<", gt: ">", quot: '"', "#39": "'", amp: "&" };

/** Spaces and tabs at the ends of lines removed, runs of blank lines made one: in one pass. */
function tidyLines(text: string): string {
  const lines = text.split("\n").map((line) => {
    let end = line.length;
    while (end > 0 && (line[end - 1] === " " || line[end - 1] === "\t")) end--;
    return line.slice(0, end);
  });
  const out: string[] = [];
  let blanks = 0;
  for (const line of lines) {
    blanks = line === "" ? blanks + 1 : 0;
    if (blanks < 2) out.push(line);
  }
  return out.join("\n").trim();
}

/**
 * HTML to readable text: scripts and styles dropped, block tags become line breaks, entities
 * decoded. A single forward scan (indexOf only), so its time is linear in the page's size whatever
 * the page holds: a page of unclosed tags or comments cannot stall the server.
 */
export function htmlToText(html: string): string {
  const lower = html.toLowerCase();
  let out = "";
  let i = 0;
  while (i < html.length) {
    const lt = html.indexOf("<", i);
    if (lt === -1) {
      out += html.slice(i);
      break;
    }
    out += html.slice(i, lt);
    if (html.startsWith("<!--", lt)) {
      const end = html.indexOf("-->", lt + 4);
      i = end === -1 ? html.length : end + 3;
      continue;
    }
    const gt = html.indexOf(">", lt + 1);
    if (gt === -1) {
      out += html.slice(lt);
      break;
    }
    const name = /^\/?[a-z0-9]*/.exec(lower.slice(lt + 1, Math.min(gt, lt + 12)))?.[0] ?? "";
    i = gt + 1;
    if (RAW_TEXT_TAGS.has(name)) {
      const close = lower.indexOf(`</${name}`, i);
      const closeEnd = close === -1 ? -1 : html.indexOf(">", close);
      i = closeEnd === -1 ? html.length : closeEnd + 1;
    } else if (LINE_BREAK_TAGS.has(name)) out += "\n";
    else if (name === "li") out += "- ";
  }
  return tidyLines(out.replace(/&(nbsp|lt|gt|quot|#39|amp);/g, (_, e: string) => ENTITIES[e] ?? ""));
}

function capped(text: string): string {
  if (text.length <= WEB_PAGE_CHARS_MAX) return text;
  return `${text.slice(0, WEB_PAGE_CHARS_MAX)}\n[truncated by Kelpie: the page has ${text.length} characters; the first ${WEB_PAGE_CHARS_MAX} are shown]`;
}

/** Why a fetch failed, without anything the foreign server sent. */
function failure(err: unknown): string {
  const refusal = egressRefusalIn(err);
  if (refusal !== undefined) return refusal.message;
  const cause = err instanceof Error && err.cause instanceof Error ? err.cause : err;
  const code = (cause as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : err instanceof Error ? err.message : String(err);
}

export class WebTools implements ToolRunner {
  /** `fetchPage` is the egress-policy fetch (src/net/egress-fetch.ts); Exa's fixed URL uses the global fetch. */
  constructor(
    private readonly exaApiKey: string | undefined,
    private readonly fetchPage: typeof fetch,
  ) {}

  register(runners: ToolRunners): void {
    runners.registerName("fetch_webpage", this);
    runners.registerName("web_search", this);
  }

  async run(name: string, args: Record<string, unknown>, ctx: ToolCallContext): Promise<ToolOutput> {
    const signal = AbortSignal.any([ctx.signal, AbortSignal.timeout(WEB_FETCH_TIMEOUT_MS)]);
    if (name === "fetch_webpage") {
      if (typeof args.url !== "string") throw new ToolError("Missing required argument 'url'.");
      let url: URL;
      try {
        url = new URL(args.url);
      } catch {
        throw new ToolError(`Argument 'url' is not a URL: '${args.url}'.`);
      }
      if (url.protocol !== "http:" && url.protocol !== "https:") {
        throw new ToolError("Argument 'url' must be an http or https URL.");
      }
      let res: Response;
      try {
        res = await this.fetchPage(url, { signal });
      } catch (err) {
        throw new ToolError(`Fetching ${url.href} failed: ${failure(err)}`);
      }
      if (!res.ok) {
        await res.body?.cancel();
        // Status and host only: the page's own error text is not the tool's to repeat.
        throw new ToolError(`Fetching ${url.href} failed: HTTP ${res.status} from ${url.host}.`);
      }
      let body: { text: string; truncated: boolean };
      try {
        body = await readTextCapped(res, WEB_FETCH_BODY_BYTES_MAX);
      } catch (err) {
        throw new ToolError(`Reading ${url.href} failed: ${failure(err)}`);
      }
      const type = res.headers.get("content-type") ?? "";
      const text = capped(type.includes("html") ? htmlToText(body.text) : body.text);
      return {
        ok: true,
        value: body.truncated
          ? `${text}\n[truncated by Kelpie: the response is larger than ${WEB_FETCH_BODY_BYTES_MAX} bytes; only the first ${WEB_FETCH_BODY_BYTES_MAX} were read]`
          : text,
      };
    }
    if (typeof args.query !== "string") throw new ToolError("Missing required argument 'query'.");
    if (this.exaApiKey === undefined) {
      throw new ToolError("web_search is not available: the server has no EXA_API_KEY set.");
    }
    const numResults = args.num_results == null ? WEB_SEARCH_RESULTS_DEFAULT : Number(args.num_results);
    if (!Number.isInteger(numResults) || numResults < 1 || numResults > WEB_SEARCH_RESULTS_MAX) {
      throw new ToolError(`Argument 'num_results' must be an integer from 1 to ${WEB_SEARCH_RESULTS_MAX}.`);
    }
    const res = await fetch(EXA_SEARCH_URL, {
      method: "POST",
      signal,
      headers: { "content-type": "application/json", "x-api-key": this.exaApiKey },
      body: JSON.stringify({
        query: args.query,
        numResults,
        ...(args.category ? { category: args.category } : {}),
        ...(args.include_domains ? { includeDomains: args.include_domains } : {}),
        ...(args.exclude_domains ? { excludeDomains: args.exclude_domains } : {}),
        ...(args.start_published_date ? { startPublishedDate: args.start_published_date } : {}),
        ...(args.end_published_date ? { endPublishedDate: args.end_published_date } : {}),
        contents: args.include_text === true ? { text: true } : { highlights: true },
      }),
    });
    const text = await res.text();
    if (!res.ok)
      throw new ToolError(`web_search failed: Exa answered HTTP ${res.status}: ${text.slice(0, 500)}`);
    return { ok: true, value: capped(text) };
  }
}
