import { describe, expect, it } from 'vitest';
import type { ContainerStats } from '@mgx/runtime';
import { UsageMeter } from '../src/index.js';

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

/** A reading at `at` seconds after the start (t = 0). */
const reading = (at: number, over: Partial<ContainerStats> = {}): ContainerStats => ({
  at: at * 1000,
  cpuSeconds: 0,
  memoryBytes: 100 * MiB,
  memoryMaxBytes: null,
  memoryLimitBytes: 512 * MiB,
  pids: 5,
  ...over,
});

/** Half a CPU, 512 MiB, started at t = 0. */
const meter = (over: { cpuSaturatedMs?: number } = {}) =>
  new UsageMeter({ startedAt: 0, memoryLimitBytes: 512 * MiB, cpuQuota: 50_000, cpuPeriod: 100_000, ...over });

describe('UsageMeter', () => {
  it('reports CPU as a share of the quota since the previous reading, and stores a sample only when it changed materially', () => {
    const m = meter();
    // the first reading is always stored; its rate covers the start
    expect(m.add(reading(1, { cpuSeconds: 0.25 })).resource).toEqual({
      cpuPercent: 50,
      cpuSeconds: 0.25,
      memoryBytes: 100 * MiB,
      memoryLimitBytes: 512 * MiB,
      pids: 5,
    });
    // 0.5 CPU-seconds in 1 s under a 0.5-CPU quota: 100 %
    expect(m.add(reading(2, { cpuSeconds: 0.75 })).resource?.cpuPercent).toBe(100);
    // the same again, 10 MiB more (under 5 % of 512 MiB): nothing stored, but it is the latest
    const quiet = m.add(reading(3, { cpuSeconds: 1.25, memoryBytes: 110 * MiB }));
    expect(quiet.resource).toBeUndefined();
    expect(quiet.current).toMatchObject({ cpuPercent: 100, memoryBytes: 110 * MiB });
    expect(m.latest).toEqual(quiet.current);
    // memory moved by 5 % of the limit from the last stored sample
    expect(m.add(reading(4, { cpuSeconds: 1.75, memoryBytes: 126 * MiB })).resource?.memoryBytes).toBe(126 * MiB);
    // a new process
    expect(m.add(reading(5, { cpuSeconds: 2.25, memoryBytes: 126 * MiB, pids: 6 })).resource?.pids).toBe(6);
    // CPU fell by 10 points or more
    expect(m.add(reading(6, { cpuSeconds: 2.7, memoryBytes: 126 * MiB, pids: 6 })).resource?.cpuPercent).toBe(90);
    expect(m.add(reading(7, { cpuSeconds: 3.15, memoryBytes: 126 * MiB, pids: 6 })).resource).toBeUndefined();
  });

  it('raises memory_near_limit once, at 90 % of the limit', () => {
    const m = meter();
    expect(m.add(reading(1, { memoryBytes: 460 * MiB })).warnings).toEqual([]);
    const first = m.add(reading(2, { memoryBytes: 470 * MiB })).warnings;
    expect(first).toEqual([
      { kind: 'memory_near_limit', message: 'memory at 92 % of the 512 MiB limit', memoryBytes: 470 * MiB, memoryLimitBytes: 512 * MiB },
    ]);
    expect(m.add(reading(3, { memoryBytes: 500 * MiB })).warnings).toEqual([]);
    expect(m.add(reading(4, { memoryBytes: 100 * MiB })).warnings).toEqual([]);
    expect(m.add(reading(5, { memoryBytes: 500 * MiB })).warnings).toEqual([]);
  });

  it('raises cpu_saturated once, after a whole minute at the quota; a dip starts the minute again', () => {
    const m = meter();
    let cpu = 0;
    const at = (t: number, share: number) => {
      cpu += share * 0.5 * 10;
      return m.add(reading(t, { cpuSeconds: cpu })).warnings.map((w) => w.kind);
    };
    // readings every 10 s; the first only measures the start
    expect(at(10, 1)).toEqual([]);
    for (let t = 20; t <= 60; t += 10) expect(at(t, 1)).toEqual([]);
    // a dip at 70 s: 50 s at the quota do not count
    expect(at(70, 0.5)).toEqual([]);
    for (let t = 80; t <= 120; t += 10) expect(at(t, 1)).toEqual([]);
    // 70 s → 130 s: a minute at the quota
    expect(at(130, 1)).toEqual(['cpu_saturated']);
    for (let t = 150; t <= 300; t += 10) expect(at(t, 1)).toEqual([]);
  });

  it('totals: CPU time, the peak (the kernel high-water mark too), memory over time, pids and wall time', () => {
    const m = meter();
    m.add(reading(2, { cpuSeconds: 1, memoryBytes: 1 * GiB, pids: 3 }));
    m.add(reading(4, { cpuSeconds: 2, memoryBytes: 1 * GiB, memoryMaxBytes: 1.5 * GiB, pids: 9 }));
    // a reading that lost a race to a later one still counts for the peaks
    m.add(reading(3, { cpuSeconds: 1.5, memoryBytes: 1.75 * GiB, pids: 4 }));
    // 1 GiB from 0 to 4 s, and on to the exit at 6 s
    expect(m.totals(6000, false)).toEqual({ cpuSeconds: 2, memoryPeakBytes: 1.75 * GiB, memoryGiBSeconds: 6, pidsPeak: 9, wallMs: 6000 });
  });

  it('an OOM-killed session shows memory at its limit; one never read has its wall time and zeros', () => {
    const m = meter();
    m.add(reading(1, { memoryBytes: 300 * MiB }));
    expect(m.totals(2000, true).memoryPeakBytes).toBe(512 * MiB);
    expect(meter().totals(1500, false)).toEqual({ cpuSeconds: 0, memoryPeakBytes: 0, memoryGiBSeconds: 0, pidsPeak: 0, wallMs: 1500 });
    expect(meter().totals(1500, true).memoryPeakBytes).toBe(512 * MiB);
  });
});
