import type { SessionStatus } from '@mgx/client';

export const TERMINAL: readonly SessionStatus[] = ['succeeded', 'failed', 'timed_out', 'cancelled'];
export const STATUSES: readonly SessionStatus[] = ['queued', 'starting', 'running', ...TERMINAL];

export const isTerminal = (s: SessionStatus) => TERMINAL.includes(s);

export function time(ms: number | null | undefined): string {
  return ms ? new Date(ms).toLocaleTimeString() : '–';
}

export function dateTime(ms: number | null | undefined): string {
  return ms ? new Date(ms).toLocaleString() : '–';
}

export function duration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || ms < 0) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${Math.round(s % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** A short, single-line view of an event's data for tables. */
export function summary(data: unknown, max = 160): string {
  const text = JSON.stringify(data) ?? '';
  return text.length > max ? `${text.slice(0, max)}…` : text;
}
