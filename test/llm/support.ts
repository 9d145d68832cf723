// Shared pieces for the LLM tests: a config pointing every provider at the fake server, fast retry
// settings on the real clock, and small request builders.
import { SystemClock } from "../../src/core/clock.ts";
import type { KelpieError } from "../../src/core/errors.ts";
import { SeededRng } from "../../src/core/rng.ts";
import {
  type LlmProviderDeps,
  type LlmProvidersConfig,
  llmConfigFromEnv,
  resolveLlm,
} from "../../src/llm/registry.ts";
import type { RetryNotice } from "../../src/llm/retry.ts";
import type { ChatEvent, ChatRequest, LlmProvider, ToolSpec } from "../../src/llm/types.ts";
import type { FakeLlm } from "../support/fake-llm/server.ts";

/** Small waits so retry tests run in milliseconds; retry-after (1 s from the fake) is capped to 25 ms. */
export const FAST_RETRY = { attemptsMax: 3, backoffMsBase: 5, backoffMsMax: 20, retryAfterMsMax: 25 };

export function fakeConfig(fake: FakeLlm): LlmProvidersConfig {
  return llmConfigFromEnv({
    OPENAI_API_KEY: "sk-test",
    OPENAI_BASE_URL: `${fake.url}/v1`,
    ANTHROPIC_API_KEY: "sk-ant-test",
    ANTHROPIC_BASE_URL: fake.url,
    KELPIE_OPENAI_COMPATIBLE_BASE_URL: `${fake.url}/v1`,
  });
}

export interface TestProvider {
  provider: LlmProvider;
  notices: RetryNotice[];
}

export function providerFor(
  fake: FakeLlm,
  handle: string,
  deps: Partial<LlmProviderDeps> = {},
): TestProvider {
  const notices: RetryNotice[] = [];
  const { provider } = resolveLlm(handle, fakeConfig(fake), {
    clock: new SystemClock(),
    rng: new SeededRng(7).fork("llm"),
    onRetry: (notice) => notices.push(notice),
    ...deps,
    retry: { ...FAST_RETRY, ...deps.retry },
  });
  return { provider, notices };
}

export const weatherTool: ToolSpec = {
  name: "get_weather",
  description: "Current weather for a city",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
};

export const timeTool: ToolSpec = {
  name: "get_time",
  description: "Current time in a timezone",
  parameters: { type: "object", properties: { tz: { type: "string" } }, required: ["tz"] },
};

export function chat(model: string, text: string, extra: Partial<ChatRequest> = {}): ChatRequest {
  return {
    model,
    system: "You are a test agent.",
    messages: [{ role: "user", text }],
    tools: [],
    toolChoice: "auto",
    ...extra,
  };
}

export async function eventsOf(stream: AsyncIterable<ChatEvent>): Promise<ChatEvent[]> {
  const events: ChatEvent[] = [];
  for await (const event of stream) events.push(event);
  return events;
}

export function neverAborted(): AbortSignal {
  return new AbortController().signal;
}

/** The error a promise rejects with; fails the test if it resolves. */
export async function rejectionOf<E = KelpieError>(promise: Promise<unknown>): Promise<E> {
  try {
    await promise;
  } catch (err) {
    return err as E;
  }
  throw new Error("expected the promise to reject");
}
