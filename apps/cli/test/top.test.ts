import { describe, expect, it } from 'vitest';
import type { TopRow } from '@mgx/client';
import { formatEvent } from '../src/format.js';
import { bytes, formatTop } from '../src/top.js';

const MiB = 1024 ** 2;
const row = (over: Partial<TopRow> = {}): TopRow => ({
  id: 'smx1',
  framework: 'exec',
  startedAt: 10_000,
  workerId: 'w1',
  limits: { memoryBytes: 512 * MiB, cpus: 0.5 },
  resource: { cpuPercent: 99.5, cpuSeconds: 75.25, memoryBytes: 212.3 * MiB, memoryLimitBytes: 512 * MiB, pids: 7, at: 70_000 },
  ...over,
});

describe('bytes', () => {
  it.each([
    [512, '512B'],
    [1536, '1.5KiB'],
    [212.3 * MiB, '212MiB'],
    [64 * MiB, '64MiB'],
    [1.5 * 1024 * MiB, '1.5GiB'],
  ])('%d → %s', (n, text) => expect(bytes(n)).toBe(text));
});

describe('formatTop', () => {
  it("shows CPU against the quota, memory against the limit, pids, time up and the sample's age, in aligned columns", () => {
    const lines = formatTop([row(), row({ id: 'smx2-longer', resource: null, startedAt: null })], 75_000);
    expect(lines).toEqual([
      'SESSION      FRAMEWORK  CPU %  CPUS  CPU TIME  MEM USAGE / LIMIT  MEM %  PIDS  UP  SAMPLED',
      'smx1         exec       99.5%  0.5   1m15s     212MiB / 512MiB    41.5%  7     1m  5s ago',
      'smx2-longer  exec       -      0.5   -         - / 512MiB         -      -     -   not yet',
    ]);
  });

  it('adds the tenant column when the rows carry tenants (an operator)', () => {
    const [header, line] = formatTop([row({ tenant: 'acme' })], 75_000);
    expect(header).toMatch(/^SESSION {2}TENANT {2}FRAMEWORK/);
    expect(line).toMatch(/^smx1 {5}acme {4}exec/);
  });
});

describe('formatEvent for usage', () => {
  const ev = (type: string, data: Record<string, unknown>) =>
    ({ sessionId: 's', seq: 7, type, ts: 0, data }) as Parameters<typeof formatEvent>[0];
  it('shows a sample, a warning and the usage in FINISH on one line each', () => {
    expect(
      formatEvent(ev('RESOURCE', { cpuPercent: 98.25, cpuSeconds: 3, memoryBytes: 212.3 * MiB, memoryLimitBytes: 512 * MiB, pids: 7 })),
    ).toBe('#  7 RESOURCE          cpu 98.3% · mem 212MiB / 512MiB · pids 7');
    expect(formatEvent(ev('WARNING', { kind: 'memory_near_limit', message: 'memory at 92 % of the 512 MiB limit' }))).toBe(
      '#  7 WARNING           memory_near_limit: memory at 92 % of the 512 MiB limit',
    );
    expect(
      formatEvent(
        ev('FINISH', {
          status: 'succeeded',
          reason: 'finished',
          usage: { cpuSeconds: 2.06, memoryPeakBytes: 212.3 * MiB, memoryGiBSeconds: 1, pidsPeak: 7, wallMs: 4210 },
        }),
      ),
    ).toBe('#  7 FINISH            succeeded (finished) · cpu 2.1s · peak 212MiB · 4.2s');
    expect(formatEvent(ev('FINISH', { status: 'cancelled', reason: 'cancelled' }))).toBe('#  7 FINISH            cancelled (cancelled)');
  });
});
