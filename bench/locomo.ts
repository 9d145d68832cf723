// LoCoMo-format conversations (Maharana et al., ACL 2024): reading and checking a file, and the
// retrieval metrics of the memory-recall bench. The data itself is never part of this repository.
import { readFileSync } from "node:fs";

export interface Turn {
  diaId: string;
  session: number;
  speaker: string;
  text: string;
  /** The session's date and time, as ms since the epoch (UTC; LoCoMo gives no zone). */
  sessionMs: number;
}

export interface Question {
  question: string;
  category: number;
  /** dia_ids of the turns holding the answer (only those that exist in the conversation). */
  evidence: string[];
}

export interface Conversation {
  id: string;
  turns: Turn[];
  questions: Question[];
}

/** Categories searched (5 is adversarial: its answer is not in the conversation). */
export const CATEGORIES: Record<number, string> = {
  1: "multi_hop",
  2: "temporal",
  3: "open_domain",
  4: "single_hop",
};

const MONTHS = "january february march april may june july august september october november december"
  .split(" ")
  .map((m) => m.slice(0, 3));

/** "1:56 pm on 8 May, 2023" → ms since the epoch (UTC). */
export function parseSessionDate(text: string, where: string): number {
  const m = /^\s*(\d{1,2}):(\d{2})\s*(am|pm)\s+on\s+(\d{1,2})\s+([A-Za-z]+),?\s+(\d{4})\s*$/i.exec(text);
  const month = m === null ? -1 : MONTHS.indexOf(m[5]!.slice(0, 3).toLowerCase());
  if (m === null || month < 0) throw new Error(`${where}: unreadable session date '${text}'`);
  const hour = (Number(m[1]) % 12) + (m[3]!.toLowerCase() === "pm" ? 12 : 0);
  return Date.UTC(Number(m[6]), month, Number(m[4]), hour, Number(m[2]));
}

function turnText(raw: Record<string, unknown>): string {
  const text = typeof raw.text === "string" ? raw.text : "";
  const caption = typeof raw.blip_caption === "string" ? raw.blip_caption : "";
  return caption === "" ? text : `${text} [shares a photo: ${caption}]`;
}

function readTurns(sampleId: string, conv: Record<string, unknown>): Turn[] {
  const turns: Turn[] = [];
  for (const key of Object.keys(conv)) {
    const m = /^session_(\d+)$/.exec(key);
    if (m === null) continue;
    const session = Number(m[1]);
    const date = conv[`${key}_date_time`];
    if (typeof date !== "string") throw new Error(`${sampleId}: ${key} has no ${key}_date_time`);
    const sessionMs = parseSessionDate(date, `${sampleId} ${key}`);
    const list = conv[key];
    if (!Array.isArray(list)) throw new Error(`${sampleId}: ${key} is not a list of turns`);
    for (const [i, raw] of (list as Record<string, unknown>[]).entries()) {
      if (typeof raw.dia_id !== "string" || typeof raw.speaker !== "string")
        throw new Error(`${sampleId}: ${key}[${i}] needs dia_id and speaker strings`);
      const text = turnText(raw);
      if (text.trim() === "") continue;
      turns.push({ diaId: raw.dia_id, session, speaker: raw.speaker, text, sessionMs });
    }
  }
  return turns;
}

/** Reads a LoCoMo-format file; questions of categories 1–4 whose evidence names known turns. */
export function readLocomo(path: string): { conversations: Conversation[]; questionsSkipped: number } {
  const data = JSON.parse(readFileSync(path, "utf8")) as unknown;
  if (!Array.isArray(data)) throw new Error(`${path}: expected a JSON list of samples`);
  let questionsSkipped = 0;
  const conversations = (data as Record<string, unknown>[]).map((sample, i) => {
    const id = typeof sample.sample_id === "string" ? sample.sample_id : `sample-${i}`;
    if (typeof sample.conversation !== "object" || sample.conversation === null || !Array.isArray(sample.qa))
      throw new Error(`${path}: sample ${id} needs 'conversation' and 'qa'`);
    const turns = readTurns(id, sample.conversation as Record<string, unknown>);
    const known = new Set(turns.map((t) => t.diaId));
    const questions: Question[] = [];
    for (const qa of sample.qa as Record<string, unknown>[]) {
      const category = Number(qa.category);
      if (CATEGORIES[category] === undefined || typeof qa.question !== "string") continue;
      const raw = Array.isArray(qa.evidence) ? (qa.evidence as unknown[]) : [];
      const evidence = raw.flatMap((e) => String(e).split(/[;,\s]+/)).filter((e) => known.has(e));
      if (evidence.length === 0) questionsSkipped += 1;
      else questions.push({ question: qa.question, category, evidence: [...new Set(evidence)] });
    }
    return { id, turns, questions };
  });
  return { conversations, questionsSkipped };
}

// --- metrics ---------------------------------------------------------------------------------

export const RANKED_DEPTH = 10;

export interface Scores {
  turn_recall_at_1: number;
  turn_recall_at_5: number;
  turn_recall_at_10: number;
  turn_recall_all_at_10: number;
  session_recall_at_5: number;
  ndcg_at_10: number;
  mrr: number;
}

const sessionOf = (diaId: string) => diaId.split(":")[0]!;

/** One question's scores given the dia_ids a system ranked (best first, at most RANKED_DEPTH). */
export function score(ranked: string[], evidence: string[]): Scores {
  const relevant = new Set(evidence);
  const top = ranked.slice(0, RANKED_DEPTH);
  const hitAt = (k: number) => (top.slice(0, k).some((d) => relevant.has(d)) ? 1 : 0);
  const sessions = new Set(evidence.map(sessionOf));
  let dcg = 0;
  top.forEach((d, i) => {
    if (relevant.has(d)) dcg += 1 / Math.log2(i + 2);
  });
  let idcg = 0;
  for (let i = 0; i < Math.min(relevant.size, RANKED_DEPTH); i++) idcg += 1 / Math.log2(i + 2);
  const first = top.findIndex((d) => relevant.has(d));
  return {
    turn_recall_at_1: hitAt(1),
    turn_recall_at_5: hitAt(5),
    turn_recall_at_10: hitAt(10),
    turn_recall_all_at_10: evidence.every((d) => top.includes(d)) ? 1 : 0,
    session_recall_at_5: top.slice(0, 5).some((d) => sessions.has(sessionOf(d))) ? 1 : 0,
    ndcg_at_10: dcg / idcg,
    mrr: first < 0 ? 0 : 1 / (first + 1),
  };
}

function mean(all: Scores[]): Scores {
  const out = {} as Record<keyof Scores, number>;
  for (const key of Object.keys(score([], ["x"])) as (keyof Scores)[]) {
    const sum = all.reduce((s, x) => s + x[key], 0);
    out[key] = all.length === 0 ? 0 : Math.round((sum / all.length) * 1000) / 1000;
  }
  return out;
}

/** Mean scores over every question, and by category. */
export function summarize(
  rows: { category: number; scores: Scores }[],
): Scores & { by_category: Record<string, Scores & { questions: number }> } {
  const by_category: Record<string, Scores & { questions: number }> = {};
  for (const [category, name] of Object.entries(CATEGORIES)) {
    const mine = rows.filter((r) => r.category === Number(category));
    by_category[name] = { ...mean(mine.map((r) => r.scores)), questions: mine.length };
  }
  return { ...mean(rows.map((r) => r.scores)), by_category };
}
