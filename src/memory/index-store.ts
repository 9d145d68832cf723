// Saved HNSW graphs, so a restart reloads an archive's graph instead of rebuilding it (minutes of
// work at a million passages). Each archive has two files under one directory: the graph usearch
// writes and a JSON sidecar saying what it holds. Files are only ever a hint: the caller checks a
// loaded graph against storage and rebuilds from storage whenever they disagree.
import { createHash } from "node:crypto";
import {
  closeSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { assert } from "../core/assert.ts";
import type { VectorIndex } from "./vector-index.ts";

/** Bumped whenever the files' layout changes; files of another format are rebuilt. */
export const INDEX_FILE_FORMAT = 1;
const GRAPH_SUFFIX = ".usearch";
const SIDECAR_SUFFIX = ".usearch.json";
const TEMP_SUFFIX = ".tmp";
/** The graph file is hashed in chunks of this many bytes (a large graph never sits in memory twice). */
const HASH_CHUNK_BYTES = 8 * 1024 * 1024;
const ARCHIVE_ID_PATTERN = /^[A-Za-z0-9_-]+$/;

export interface GraphSidecar {
  /** Passages in the graph. */
  count: number;
  /** Highest passage seq the graph had seen; rows after it are added from storage on load. */
  max_seq: number;
  dimension: number;
  format: number;
  /**
   * Size and SHA-256 of the graph file: usearch's loader aborts the process on some truncated
   * files instead of throwing, so a graph is only handed to it once these match.
   */
  bytes: number;
  sha256: string;
}

function digest(path: string): { bytes: number; sha256: string } {
  const hash = createHash("sha256");
  const chunk = Buffer.allocUnsafe(HASH_CHUNK_BYTES);
  const fd = openSync(path, "r");
  let bytes = 0;
  try {
    for (;;) {
      const n = readSync(fd, chunk, 0, chunk.length, null);
      if (n === 0) break;
      hash.update(chunk.subarray(0, n));
      bytes += n;
    }
  } finally {
    closeSync(fd);
  }
  return { bytes, sha256: hash.digest("hex") };
}

function isSidecar(value: unknown): value is GraphSidecar {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  const count = (k: string) => Number.isSafeInteger(v[k]) && (v[k] as number) >= 0;
  return (
    count("count") &&
    count("max_seq") &&
    count("bytes") &&
    Number.isSafeInteger(v.dimension) &&
    (v.dimension as number) > 0 &&
    v.format === INDEX_FILE_FORMAT &&
    typeof v.sha256 === "string"
  );
}

export class IndexStore {
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  graphPath(archiveId: string): string {
    assert(ARCHIVE_ID_PATTERN.test(archiveId), "archive ids must be safe file names");
    return join(this.dir, `${archiveId}${GRAPH_SUFFIX}`);
  }

  private sidecarPath(archiveId: string): string {
    assert(ARCHIVE_ID_PATTERN.test(archiveId), "archive ids must be safe file names");
    return join(this.dir, `${archiveId}${SIDECAR_SUFFIX}`);
  }

  /** Writes the archive's graph and sidecar; a crash at any point leaves the old pair, or none. */
  save(archiveId: string, index: VectorIndex, maxSeq: number): void {
    assert(index.mode === "hnsw", "only HNSW graphs are saved");
    const graph = this.graphPath(archiveId);
    const sidecar = this.sidecarPath(archiveId);
    try {
      index.saveGraph(graph + TEMP_SUFFIX);
      const file = digest(graph + TEMP_SUFFIX);
      const meta: GraphSidecar = {
        count: index.size,
        max_seq: maxSeq,
        dimension: index.dimension,
        format: INDEX_FILE_FORMAT,
        ...file,
      };
      writeFileSync(sidecar + TEMP_SUFFIX, JSON.stringify(meta));
      // The sidecar goes first and comes back last: in between, a graph without one is ignored.
      rmSync(sidecar, { force: true });
      renameSync(graph + TEMP_SUFFIX, graph);
      renameSync(sidecar + TEMP_SUFFIX, sidecar);
    } catch (err) {
      rmSync(graph + TEMP_SUFFIX, { force: true });
      rmSync(sidecar + TEMP_SUFFIX, { force: true });
      throw err;
    }
  }

  /** The sidecar of the archive's saved graph when both files are there and whole, else null. */
  read(archiveId: string): GraphSidecar | null {
    let meta: unknown;
    try {
      meta = JSON.parse(readFileSync(this.sidecarPath(archiveId), "utf8"));
    } catch {
      return null;
    }
    if (!isSidecar(meta)) return null;
    let file: { bytes: number; sha256: string };
    try {
      file = digest(this.graphPath(archiveId));
    } catch {
      return null;
    }
    return file.bytes === meta.bytes && file.sha256 === meta.sha256 ? meta : null;
  }

  remove(archiveId: string): void {
    for (const path of [this.graphPath(archiveId), this.sidecarPath(archiveId)]) {
      rmSync(path, { force: true });
      rmSync(path + TEMP_SUFFIX, { force: true });
    }
  }
}
