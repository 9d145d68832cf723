// How archival search orders the union of its two halves' candidates. Each rule was kept only
// when it raised recall on real long conversations (`npm run bench -- memory-recall`, LoCoMo):
//
// 1. Weighted reciprocal rank fusion: the full-text rank counts TEXT_WEIGHT times the vector rank,
//    with a small RRF_K so the first ranks of each half stand out (turn recall@10 0.657 → 0.700;
//    the local model's vectors alone find 0.453, BM25 alone 0.675).
// 2. Names: a passage carrying a tag that the query names ("speaker:Caroline" for "what did
//    Caroline paint?") is raised as if it ranked first in another list (0.700 → 0.725).
// 3. Neighbouring passages: one archived right before or after a strong match (the question a
//    turn answers, the reply to it) shares part of its score (0.725 → 0.758).
import { queryWords } from "../storage/types.ts";

/** Reciprocal rank fusion constant: small, so a half's first ranks weigh more than its tail. */
export const RRF_K = 10;
/** The full-text half's weight against the vector half's (1). */
export const TEXT_WEIGHT = 2;
/** A passage whose tag the query names gains this many first-rank shares. */
export const NAMED_TAG_WEIGHT = 2;
/** The share of its best neighbour's score a passage gains. */
export const NEIGHBOUR_WEIGHT = 0.3;

export interface Fused {
  score: number;
  vector_score: number | null;
  text_rank: number | null;
}

export interface FusionPassage {
  archive_id: string;
  tags: string[];
}

/** Words of a tag's value (after its last ':'), if it holds a letter: "speaker:Caroline" → caroline. */
function tagWords(tag: string): string[] {
  const value = tag.slice(tag.lastIndexOf(":") + 1);
  return /\p{L}/u.test(value) ? queryWords(value) : [];
}

/**
 * Orders candidates: `vectorHits` best first (by cosine), `textRanked` best first (by BM25), both
 * already filtered; `passages` holds every candidate by seq. Returns each candidate's fused entry.
 */
export function fuse(
  query: string,
  vectorHits: { seq: number; score: number }[],
  textRanked: number[],
  passages: Map<number, FusionPassage>,
): Map<number, Fused> {
  const fused = new Map<number, Fused>();
  const share = (rank: number) => 1 / (RRF_K + rank + 1);
  vectorHits.forEach((hit, rank) => {
    fused.set(hit.seq, { score: share(rank), vector_score: hit.score, text_rank: null });
  });
  textRanked.forEach((seq, rank) => {
    const entry = fused.get(seq) ?? { score: 0, vector_score: null, text_rank: null };
    entry.score += TEXT_WEIGHT * share(rank);
    entry.text_rank = rank + 1;
    fused.set(seq, entry);
  });
  raiseNamed(query, fused, passages, NAMED_TAG_WEIGHT * share(0));
  shareWithNeighbours(fused, passages);
  return fused;
}

function raiseNamed(
  query: string,
  fused: Map<number, Fused>,
  passages: Map<number, FusionPassage>,
  gain: number,
): void {
  const words = new Set(queryWords(query));
  const named = new Map<string, boolean>();
  const isNamed = (tag: string) => {
    let hit = named.get(tag);
    if (hit === undefined) {
      const own = tagWords(tag);
      hit = own.length > 0 && own.every((w) => words.has(w));
      named.set(tag, hit);
    }
    return hit;
  };
  for (const [seq, entry] of fused) {
    if (passages.get(seq)?.tags.some(isNamed)) entry.score += gain;
  }
}

/** Neighbours are passages of the same archive stored one after the other (adjacent seqs). */
function shareWithNeighbours(fused: Map<number, Fused>, passages: Map<number, FusionPassage>): void {
  const before = new Map([...fused].map(([seq, f]) => [seq, f.score]));
  for (const [seq, entry] of fused) {
    const archive = passages.get(seq)?.archive_id;
    let best = 0;
    for (const other of [seq - 1, seq + 1]) {
      if (passages.get(other)?.archive_id === archive) best = Math.max(best, before.get(other) ?? 0);
    }
    entry.score += NEIGHBOUR_WEIGHT * best;
  }
}
