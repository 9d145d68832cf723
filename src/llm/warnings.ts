// Request settings that no provider can honour, checked the same way by every adapter.
import type { ChatRequest, Warning } from "./types.ts";

/**
 * With no tools there is nothing to choose from: providers reject `tool_choice` then, so adapters
 * leave it out. "auto" and "none" mean the same thing without tools; anything else is reported.
 */
export function toolChoiceWarnings(req: ChatRequest): Warning[] {
  if (req.tools.length > 0 || req.toolChoice === "auto" || req.toolChoice === "none") return [];
  return [
    { type: "unsupported", setting: "toolChoice", details: "a tool was required but no tools were given" },
  ];
}
