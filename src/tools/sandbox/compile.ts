// A JavaScript or TypeScript tool as a plain script, for the V8 isolate and for node under
// bubblewrap alike: TypeScript's types stripped by esbuild, and `export` dropped so the tool's
// function is a top-level declaration the runner can call by name.
import type { SandboxLanguage } from "./limits.ts";

export async function toScript(language: SandboxLanguage, source: string): Promise<string> {
  const js =
    language === "typescript"
      ? (await import("esbuild")).transformSync(source, { loader: "ts", format: "esm" }).code
      : source;
  return js.replace(/^export\s+/gm, "");
}
