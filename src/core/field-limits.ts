// The bounds on fields several resources share (names, system prompts, metadata, tags), each a
// 422 naming the field; checked in the services, so the API routes and agent-file imports agree.
import {
  METADATA_BYTES_MAX,
  NAME_LENGTH_MAX,
  SYSTEM_PROMPT_CHARS_MAX,
  TAG_LENGTH_MAX,
  TAGS_PER_RECORD_MAX,
} from "./constants.ts";
import { invalidField } from "./errors.ts";

type Loc = (string | number)[];

export function checkName(name: string | null | undefined, loc: Loc): void {
  if (typeof name === "string" && name.length > NAME_LENGTH_MAX) {
    throw invalidField(loc, `is ${name.length} characters; a name holds at most ${NAME_LENGTH_MAX}`);
  }
}

export function checkSystemPrompt(system: string | null | undefined, loc: Loc): void {
  if (typeof system === "string" && system.length > SYSTEM_PROMPT_CHARS_MAX) {
    throw invalidField(
      loc,
      `is ${system.length} characters; a system prompt holds at most ${SYSTEM_PROMPT_CHARS_MAX}`,
    );
  }
}

export function checkMetadata(metadata: unknown, loc: Loc): void {
  if (metadata === null || metadata === undefined) return;
  const bytes = Buffer.byteLength(JSON.stringify(metadata), "utf8");
  if (bytes > METADATA_BYTES_MAX) {
    throw invalidField(loc, `is ${bytes} bytes as JSON; metadata holds at most ${METADATA_BYTES_MAX}`);
  }
}

export function checkTags(tags: readonly unknown[] | null | undefined, loc: Loc): void {
  if (tags === null || tags === undefined) return;
  if (tags.length > TAGS_PER_RECORD_MAX) {
    throw invalidField(loc, `has ${tags.length} tags; at most ${TAGS_PER_RECORD_MAX} are allowed`);
  }
  for (const [i, tag] of tags.entries()) {
    if (typeof tag !== "string" || tag.length > TAG_LENGTH_MAX) {
      throw invalidField([...loc, i], `must be a string of at most ${TAG_LENGTH_MAX} characters`);
    }
  }
}
