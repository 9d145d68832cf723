// Letta's built-in web tools. fetch_webpage fetches a page and turns its HTML into text;
// web_search asks Exa (EXA_API_KEY), as Letta's server does, and says clearly when no key is set.
// Large pages are cut with an explicit marker, never silently.
import type { ToolCallContext, ToolOutput, ToolRunner, ToolRunners } from "../agent/tool-calls.ts";
import { ToolError } from "./memory-tools.ts";

const WEB_FETCH_TIMEOUT_MS = 15_000;
const WEB_PAGE_CHARS_MAX = 40_000;
const EXA_SEARCH_URL = "https://api.exa.ai/search";
const WEB_SEARCH_RESULTS_DEFAULT = 10;
const WEB_SEARCH_RESULTS_MAX = 100;

/** HTML to readable text: scripts and styles dropped, block tags become line breaks, entities decoded. */
export function htmlToText(html: string): string {
  return html
    .replace(/<(script|style|noscript|template)[^>]*>[\s\S]*?<\/\1>/gi, "")
    .replace(/<!--[\s\S]*?-->/g, "")
    .replace(/<(br|\/p|\/div|\/li|\/h[1-6]|\/tr|\/section|\/article)[^>]*>/gi, "\n")
    .replace(/<li[^>]*>/gi, "- ")
    .replace(/<[^>]+>/g, "")
    .replace(/&nbsp;/g, " ")
    .replace(/&lt;/g, "<")
    .replace(/&gt;/g, ">")
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&amp;/g, "&")
    .replace(/[ \t]+\n/g, "\n")
    .replace(/\n{3,}/g, "\n\n")
    .trim();
}

function capped(text: string): string {
  if (text.length <= WEB_PAGE_CHARS_MAX) return text;
  return `${text.slice(0, WEB_PAGE_CHARS_MAX)}\n[truncated by Kelpie: the page has ${text.length} characters; the first ${WEB_PAGE_CHARS_MAX} are shown]`;
}

export class WebTools implements ToolRunner {
  constructor(private readonly exaApiKey: string | undefined) {}

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
      const res = await fetch(url, { signal, redirect: "follow" });
      const body = await res.text();
      if (!res.ok) throw new ToolError(`Fetching ${url.href} failed: HTTP ${res.status}.`);
      const type = res.headers.get("content-type") ?? "";
      return { ok: true, value: capped(type.includes("html") ? htmlToText(body) : body) };
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
