import type { SessionEvent } from '@mgx/client';

/** A value of an event's data as text: strings as they are, anything else as JSON. */
const text = (v: unknown): string => (typeof v === 'string' ? v : (JSON.stringify(v) ?? ''));

const short = (v: unknown, max = 160): string => {
  const s = text(v);
  return s.length > max ? `${s.slice(0, max)}…` : s;
};

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
      return `${head} ${text(d.status)} (${text(d.reason)})${d.message ? `: ${text(d.message)}` : ''}${d.exitCode !== undefined ? ` exit ${text(d.exitCode)}` : ''}`;
    case 'ERROR':
      return `${head} ${short(d.message ?? d)}`;
    default: {
      const body = Object.keys(d).length > 0 ? short(d) : '';
      return `${head} ${body}`.trimEnd();
    }
  }
}
