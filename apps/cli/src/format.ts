import type { SessionEvent } from '@mgx/client';

const short = (v: unknown, max = 160): string => {
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  return s.length > max ? `${s.slice(0, max)}…` : s;
};

/** One event as a human-readable line; null for events folded into others (message deltas). */
export function formatEvent(ev: SessionEvent): string | null {
  const d = ev.data as Record<string, unknown>;
  const head = `#${String(ev.seq).padStart(3)} ${ev.type.padEnd(17)}`;
  switch (ev.type) {
    case 'MESSAGE':
      if (d.done) return `${head} ${String(d.role ?? 'assistant')}: ${short(d.text, 2000)}`;
      return null;
    case 'LOG':
      return `${head} [${String(d.stream ?? 'agent')}] ${short(d.text, 2000)}`;
    case 'FINISH':
      return `${head} ${String(d.status)} (${String(d.reason)})${d.message ? `: ${String(d.message)}` : ''}${d.exitCode !== undefined ? ` exit ${String(d.exitCode)}` : ''}`;
    case 'ERROR':
      return `${head} ${short(d.message ?? d)}`;
    default: {
      const body = Object.keys(d).length > 0 ? short(d) : '';
      return `${head} ${body}`.trimEnd();
    }
  }
}
