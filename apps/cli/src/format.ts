import type { SessionEvent } from '@mgx/client';
import { bytes } from './top.js';

/** A value of an event's data as text: strings as they are, anything else as JSON. */
const text = (v: unknown): string => (typeof v === 'string' ? v : (JSON.stringify(v) ?? ''));

const short = (v: unknown, max = 160): string => {
  const s = text(v);
  return s.length > max ? `${s.slice(0, max)}…` : s;
};

/** FINISH's usage, as ` · cpu 2.1s · peak 212MiB · 4.2s`, or nothing when it has none. */
function usageOf(u: unknown): string {
  if (u === null || typeof u !== 'object') return '';
  const { cpuSeconds, memoryPeakBytes, wallMs } = u as Record<string, unknown>;
  if (typeof cpuSeconds !== 'number' || typeof memoryPeakBytes !== 'number' || typeof wallMs !== 'number') return '';
  return ` · cpu ${cpuSeconds.toFixed(1)}s · peak ${bytes(memoryPeakBytes)} · ${(wallMs / 1000).toFixed(1)}s`;
}

/** One event as a human-readable line; null for events folded into others (message deltas). */
export function formatEvent(ev: SessionEvent): string | null {
  const d = ev.data;
  const head = `#${String(ev.seq).padStart(3)} ${ev.type.padEnd(17)}`;
  switch (ev.type) {
    case 'MESSAGE':
      if (d.done) return `${head} ${text(d.role ?? 'assistant')}: ${short(d.text, 2000)}`;
      return null;
    case 'LOG':
      return `${head} [${text(d.stream ?? 'agent')}] ${short(d.text, 2000)}`;
    case 'FINISH':
      return `${head} ${text(d.status)} (${text(d.reason)})${d.message ? `: ${text(d.message)}` : ''}${d.exitCode !== undefined ? ` exit ${text(d.exitCode)}` : ''}${usageOf(d.usage)}`;
    case 'RESOURCE': {
      const cpu = typeof d.cpuPercent === 'number' ? `cpu ${d.cpuPercent.toFixed(1)}%` : '';
      const mem = typeof d.memoryBytes === 'number' ? `mem ${bytes(d.memoryBytes)} / ${bytes(Number(d.memoryLimitBytes ?? 0))}` : '';
      return `${head} ${[cpu, mem, `pids ${text(d.pids)}`].filter(Boolean).join(' · ')}`;
    }
    case 'WARNING':
      return `${head} ${text(d.kind)}: ${short(d.message)}`;
    case 'ERROR':
      return `${head} ${short(d.message ?? d)}`;
    default: {
      const body = Object.keys(d).length > 0 ? short(d) : '';
      return `${head} ${body}`.trimEnd();
    }
  }
}
