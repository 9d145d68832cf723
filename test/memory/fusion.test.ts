// The order archival search gives its candidates: weighted rank fusion, a raise for passages whose
// tag the query names, and a share of a strong neighbour's score.
import { describe, expect, it } from "vitest";
import { type FusionPassage, fuse, RRF_K, TEXT_WEIGHT } from "../../src/memory/fusion.ts";

const passages = (entries: [number, string, string[]][]) =>
  new Map<number, FusionPassage>(entries.map(([seq, archive_id, tags]) => [seq, { archive_id, tags }]));
const order = (fused: Map<number, { score: number }>) =>
  [...fused].sort((a, b) => b[1].score - a[1].score || a[0] - b[0]).map(([seq]) => seq);

describe("fusion", () => {
  it("weighs the full-text rank above the vector rank", () => {
    const fused = fuse(
      "lake",
      [{ seq: 10, score: 0.9 }],
      [20],
      passages([
        [10, "a", []],
        [20, "a", []],
      ]),
    );
    expect(order(fused)).toEqual([20, 10]);
    expect(fused.get(20)!.score).toBeCloseTo(TEXT_WEIGHT / (RRF_K + 1));
    expect(fused.get(20)).toMatchObject({ text_rank: 1, vector_score: null });
  });

  it("raises passages carrying a tag the query names, not those naming someone else", () => {
    const stored = passages([
      [10, "a", ["speaker:Melanie"]],
      [20, "a", ["speaker:Caroline"]],
      [30, "a", ["session:1"]],
    ]);
    const fused = fuse("What did Caroline paint in session 1?", [], [10, 30, 20], stored);
    expect(order(fused)[0]).toBe(20);
    // A tag without letters ("1") names nothing.
    expect(fused.get(30)!.score).toBeCloseTo(TEXT_WEIGHT / (RRF_K + 2));
  });

  it("gives a passage part of its neighbour's score, only within one archive", () => {
    const stored = passages([
      [10, "a", []],
      [11, "a", []],
      [12, "b", []],
      [20, "a", []],
    ]);
    const fused = fuse("q", [], [10, 20, 11, 12], stored);
    // 11 follows the best match 10; 12 is next to 11 but in another archive.
    expect(order(fused).indexOf(11)).toBeLessThan(order(fused).indexOf(20));
    expect(fused.get(12)!.score).toBeCloseTo(TEXT_WEIGHT / (RRF_K + 4));
  });
});
