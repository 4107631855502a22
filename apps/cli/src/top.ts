import type { TopRow } from '@mgx/client';
import { age } from './workers.js';

/** Bytes in the largest binary unit that keeps the number readable: 512KiB, 212.3MiB, 1.5GiB. */
export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 || v >= 100 || Number.isInteger(v) ? Math.round(v) : v.toFixed(1)}${units[i]}`;
}

/** CPU time as 12.3s, 4m05s, 2h13m. */
function cpuTime(seconds: number): string {
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const s = Math.floor(seconds);
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/**
 * Running sessions as a table like `docker stats`: CPU as a share of the session's quota,
 * memory against its limit, pids, time up, and how old the sample is (a sample is stored only
 * when something changed materially, so an old one means a steady session).
 */
export function formatTop(rows: TopRow[], now: number): string[] {
  const withTenant = rows.some((r) => r.tenant !== undefined);
  const header = [
    'SESSION',
    ...(withTenant ? ['TENANT'] : []),
    'FRAMEWORK',
    'CPU %',
    'CPUS',
    'CPU TIME',
    'MEM USAGE / LIMIT',
    'MEM %',
    'PIDS',
    'UP',
    'SAMPLED',
  ];
  const table = [
    header,
    ...rows.map((r) => {
      const s = r.resource;
      const limit = s?.memoryLimitBytes || r.limits.memoryBytes;
      return [
        r.id,
        ...(withTenant ? [r.tenant ?? ''] : []),
        r.framework,
        s ? `${s.cpuPercent.toFixed(1)}%` : '-',
        String(r.limits.cpus),
        s ? cpuTime(s.cpuSeconds) : '-',
        `${s ? bytes(s.memoryBytes) : '-'} / ${bytes(limit)}`,
        s && limit > 0 ? `${((s.memoryBytes / limit) * 100).toFixed(1)}%` : '-',
        s ? String(s.pids) : '-',
        r.startedAt !== null ? age(r.startedAt, now) : '-',
        s ? `${age(s.at, now)} ago` : 'not yet',
      ];
    }),
  ];
  const widths = header.map((_, i) => Math.max(...table.map((r) => r[i]?.length ?? 0)));
  // the last column is not padded: no trailing spaces
  return table.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  '));
}
