// Counters and histograms for the metrics observed on every step. prom-client's own validate the
// labels, hash them and search for the series on every call: about 7 µs each, measured inside a
// running step, and a step makes eleven. These find a series once, by a key the caller builds
// from its label values, and then only add to numbers. The prom-client registry reads them when
// scraped, in the same text format as its own metrics.
import assert from "node:assert/strict";
import type client from "prom-client";

export type Labels = Record<string, string>;

interface MetricValue {
  labels: Labels;
  value: number;
  metricName?: string;
}

/** What prom-client's Registry reads from a metric when it renders /metrics. */
interface RegistryMetric {
  name: string;
  help: string;
  type: "counter" | "histogram";
  aggregator: "sum";
  get(): Promise<{ name: string; help: string; type: string; values: MetricValue[]; aggregator: string }>;
  reset(): void;
}

abstract class HotMetric<Cell extends { labels: Labels }> implements RegistryMetric {
  readonly aggregator = "sum";
  abstract readonly type: "counter" | "histogram";
  private cells = new Map<string, Cell>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelNames: readonly string[],
    registry: client.Registry,
  ) {
    registry.registerMetric(this as unknown as client.Metric);
  }

  protected abstract newCell(labels: Labels): Cell;
  protected abstract valuesOf(cell: Cell): MetricValue[];

  /**
   * The series for one label set. `key` must be unique to the label values (callers join them);
   * `labels` is called only the first time, and must name exactly this metric's labels.
   */
  cell(key: string, labels: () => Labels): Cell {
    let cell = this.cells.get(key);
    if (cell === undefined) {
      const made = labels();
      assert.deepEqual(Object.keys(made).sort(), [...this.labelNames].sort(), `labels of ${this.name}`);
      // Labels in declared order, as prom-client prints them.
      const ordered: Labels = {};
      for (const name of this.labelNames) ordered[name] = made[name] as string;
      cell = this.newCell(ordered);
      this.cells.set(key, cell);
    }
    return cell;
  }

  async get() {
    const values: MetricValue[] = [];
    for (const cell of this.cells.values()) values.push(...this.valuesOf(cell));
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  reset(): void {
    this.cells = new Map();
  }
}

export interface CounterCell {
  labels: Labels;
  value: number;
}

export class HotCounter extends HotMetric<CounterCell> {
  readonly type = "counter";

  protected newCell(labels: Labels): CounterCell {
    return { labels, value: 0 };
  }

  protected valuesOf(cell: CounterCell): MetricValue[] {
    return [{ labels: cell.labels, value: cell.value }];
  }

  inc(cell: CounterCell, by = 1): void {
    assert(Number.isFinite(by) && by >= 0, `${this.name} can only grow`);
    cell.value += by;
  }
}

export interface HistogramCell {
  labels: Labels;
  /** Observations per bucket (not cumulative); the last one is above every bound. */
  counts: Float64Array;
  sum: number;
  count: number;
}

export class HotHistogram extends HotMetric<HistogramCell> {
  readonly type = "histogram";

  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    private readonly bounds: readonly number[],
    registry: client.Registry,
  ) {
    super(name, help, labelNames, registry);
    for (let i = 1; i < bounds.length; i++) assert((bounds[i - 1] as number) < (bounds[i] as number));
  }

  protected newCell(labels: Labels): HistogramCell {
    return { labels, counts: new Float64Array(this.bounds.length + 1), sum: 0, count: 0 };
  }

  protected valuesOf(cell: HistogramCell): MetricValue[] {
    const values: MetricValue[] = [];
    let cumulative = 0;
    const bucket = `${this.name}_bucket`;
    this.bounds.forEach((bound, i) => {
      cumulative += cell.counts[i] as number;
      values.push({ labels: { le: String(bound), ...cell.labels }, value: cumulative, metricName: bucket });
    });
    cumulative += cell.counts[this.bounds.length] as number;
    values.push({ labels: { le: "+Inf", ...cell.labels }, value: cumulative, metricName: bucket });
    values.push({ labels: cell.labels, value: cell.sum, metricName: `${this.name}_sum` });
    values.push({ labels: cell.labels, value: cell.count, metricName: `${this.name}_count` });
    return values;
  }

  observe(cell: HistogramCell, value: number): void {
    assert(Number.isFinite(value), `${this.name}: not a number: ${value}`);
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > (bounds[i] as number)) i++;
    (cell.counts as Float64Array)[i] = (cell.counts[i] as number) + 1;
    cell.sum += value;
    cell.count += 1;
  }
}
