// An agent's tool environment variables (`tool_exec_environment_variables`, and `secrets`, its newer
// name): secrets handed to the agent's sandboxed tools. Stored as [{key, value}]; a client writes
// them as Letta's requests do (an object of strings) or as AgentState shows them (a list of
// {key, value}), and reads them masked (core/secrets.ts).
import { invalidField } from "../core/errors.ts";
import { maskSecret, unmaskSecret } from "../core/secrets.ts";

export const ENV_VAR_FIELDS = ["tool_exec_environment_variables", "secrets"] as const;

export interface EnvVar {
  key: string;
  value: string;
}

/** The variables as stored, in order (rows written before the list form kept the request's object). */
export function envVarsOf(stored: unknown): Map<string, string> {
  const vars = new Map<string, string>();
  if (Array.isArray(stored)) {
    for (const item of stored) {
      if (item !== null && typeof item === "object" && typeof (item as { key?: unknown }).key === "string") {
        vars.set((item as { key: string }).key, String((item as { value?: unknown }).value ?? ""));
      }
    }
  } else if (stored !== null && typeof stored === "object") {
    for (const [key, value] of Object.entries(stored)) if (typeof value === "string") vars.set(key, value);
  }
  return vars;
}

/** A written value of one of ENV_VAR_FIELDS, checked, with masked values standing for the stored ones. */
export function envVarsInput(given: unknown, stored: unknown, loc: (string | number)[]): EnvVar[] | null {
  if (given === null) return null;
  const before = envVarsOf(stored);
  const entries: [string, unknown, (string | number)[]][] = [];
  if (Array.isArray(given)) {
    for (const [i, item] of given.entries()) {
      const key = (item as { key?: unknown } | null)?.key;
      if (typeof key !== "string" || key.length === 0)
        throw invalidField([...loc, i, "key"], "must be a non-empty string");
      entries.push([key, (item as { value?: unknown }).value, [...loc, i, "value"]]);
    }
  } else if (typeof given === "object") {
    for (const [key, value] of Object.entries(given)) entries.push([key, value, [...loc, key]]);
  } else {
    throw invalidField(loc, "must be an object of strings");
  }
  return entries.map(([key, value, at]) => {
    if (typeof value !== "string") throw invalidField(at, "must be a string");
    return { key, value: unmaskSecret(value, before.get(key), at) as string };
  });
}

/** How AgentState shows the variables: Letta's AgentEnvironmentVariable, value masked. */
export function presentEnvVars(stored: unknown, agentId: string): Record<string, unknown>[] {
  return [...envVarsOf(stored)].map(([key, value]) => ({
    key,
    value: maskSecret(value),
    description: null,
    agent_id: agentId,
  }));
}
