/** Latency samples per step, in milliseconds. */
export class Recorder {
  readonly samples = new Map<string, number[]>();
  errors = 0;
  readonly errorKinds = new Map<string, number>();

  async time<T>(step: string, fn: () => Promise<T>): Promise<T> {
    const start = performance.now();
    const result = await fn();
    const list = this.samples.get(step) ?? [];
    list.push(performance.now() - start);
    this.samples.set(step, list);
    return result;
  }

  error(kind: string): void {
    this.errors++;
    this.errorKinds.set(kind, (this.errorKinds.get(kind) ?? 0) + 1);
  }
}

export interface Percentiles {
  count: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

export function percentiles(values: number[]): Percentiles {
  if (values.length === 0) return { count: 0, p50: 0, p95: 0, p99: 0, max: 0 };
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  const round = (v: number) => Math.round(v * 100) / 100;
  return { count: sorted.length, p50: round(at(0.5)), p95: round(at(0.95)), p99: round(at(0.99)), max: round(sorted.at(-1)!) };
}
