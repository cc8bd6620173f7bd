// Summarises an interleaved A/B (bench/ab.sh): per scenario, the median rate, CPU, PostgreSQL CPU,
// queries, RSS and p50/p99 per step of each side, B's median relative to A's, and each run's peak RSS.
// Usage: tsx bench/ab-summary.ts <dir with a-*.json and b-*.json>
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { median, type BenchReport, type ScenarioResult } from './run.js';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: tsx bench/ab-summary.ts <dir>');
  process.exit(2);
}
const reports = (side: 'a' | 'b') =>
  readdirSync(dir).filter((f) => f.endsWith('.json') && f.includes(`-${side}-`)).map((f) => JSON.parse(readFileSync(path.join(dir, f), 'utf8')) as BenchReport);
const sides = { a: reports('a'), b: reports('b') };
const tessera = (list: BenchReport[], scenario: string) => list.flatMap((r) => r.results.filter((x) => x.scenario === scenario && x.target === 'tessera' && x.phase === 'base' && x.round > 0));
const scenarios = [...new Set(sides.a.flatMap((r) => r.results.filter((x) => x.target === 'tessera' && x.round > 0).map((x) => x.scenario)))];
const r2 = (v: number) => Math.round(v * 100) / 100;
const med = (list: ScenarioResult[], f: (x: ScenarioResult) => number | null | undefined) => r2(median(list.map(f).filter((v): v is number => typeof v === 'number')));
console.log(`A: ${sides.a.length} runs, B: ${sides.b.length} runs (medians over every round of every run)\n`);
console.log('| scenario | measure | A | B | B/A |\n|---|---|---:|---:|---:|');
for (const scenario of scenarios) {
  const a = tessera(sides.a, scenario);
  const b = tessera(sides.b, scenario);
  const row = (name: string, f: (x: ScenarioResult) => number | null | undefined) => {
    const va = med(a, f);
    const vb = med(b, f);
    console.log(`| ${scenario} | ${name} | ${va} | ${vb} | ${va ? r2(vb / va) : '–'} |`);
  };
  row('per second', (x) => x.perSecond);
  row('CPU ms/flow', (x) => x.cpuSecondsPerFlow * 1000);
  row('of it, kernel ms/flow', (x) => (x.systemCpuSecondsPerFlow === undefined ? null : x.systemCpuSecondsPerFlow * 1000));
  row('PostgreSQL CPU ms/flow', (x) => (x.postgresCpuSecondsPerFlow === null ? null : x.postgresCpuSecondsPerFlow * 1000));
  row('queries/flow', (x) => x.dbQueriesPerFlow);
  row('RSS MiB', (x) => x.rssMiB);
  const ratioA = sides.a.flatMap((r) => r.comparisons.filter((c) => c.scenario === scenario).flatMap((c) => c.ratios));
  const ratioB = sides.b.flatMap((r) => r.comparisons.filter((c) => c.scenario === scenario).flatMap((c) => c.ratios));
  if (ratioA.length && ratioB.length) console.log(`| ${scenario} | ratio to reference | ${r2(median(ratioA) * 1000) / 1000} | ${r2(median(ratioB) * 1000) / 1000} | ${r2(median(ratioB) / median(ratioA))} |`);
  for (const step of Object.keys(a[0]?.steps ?? {})) {
    row(`${step} p50 ms`, (x) => x.steps[step]?.p50);
    row(`${step} p99 ms`, (x) => x.steps[step]?.p99);
  }
}
const peaks = (list: BenchReport[]) => list.map((r) => r.peakRssMiB.tessera);
console.log(`\nTessera's peak RSS per run (MiB): A ${peaks(sides.a).join(', ')} (median ${median(peaks(sides.a))}); B ${peaks(sides.b).join(', ')} (median ${median(peaks(sides.b))})`);
