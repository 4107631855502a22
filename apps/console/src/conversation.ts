import type { SessionEvent } from '@mgx/client';

/** One entry of the conversation: a message (its deltas joined as they stream), a tool call or result, an error. */
export type Entry =
  | { kind: 'message'; seq: number; id: string; role: string; text: string; done: boolean }
  | { kind: 'tool_call'; seq: number; id: string; name: string; args: unknown }
  | { kind: 'tool_result'; seq: number; id: string; name: string; ok: boolean; output: unknown }
  | { kind: 'error'; seq: number; message: string };

const str = (v: unknown) => (typeof v === 'string' ? v : v === undefined ? '' : JSON.stringify(v));

/**
 * Folds events into conversation entries, in the order they began. A MESSAGE's deltas are
 * appended to its entry; its final `text`, when it comes, replaces them.
 */
export function conversation(events: readonly SessionEvent[]): Entry[] {
  const entries: Entry[] = [];
  const messages = new Map<string, Extract<Entry, { kind: 'message' }>>();
  for (const ev of events) {
    const d = ev.data;
    if (ev.type === 'MESSAGE') {
      const id = str(d.messageId) || `seq-${ev.seq}`;
      let m = messages.get(id);
      if (!m) {
        m = { kind: 'message', seq: ev.seq, id, role: str(d.role) || 'assistant', text: '', done: false };
        messages.set(id, m);
        entries.push(m);
      }
      if (typeof d.delta === 'string') m.text += d.delta;
      if (d.done === true || typeof d.text === 'string') {
        if (typeof d.text === 'string') m.text = d.text;
        m.done = d.done === true || m.done;
      }
    } else if (ev.type === 'TOOL_CALL') {
      entries.push({ kind: 'tool_call', seq: ev.seq, id: str(d.id), name: str(d.name), args: d.arguments });
    } else if (ev.type === 'TOOL_RESULT') {
      entries.push({ kind: 'tool_result', seq: ev.seq, id: str(d.id), name: str(d.name), ok: d.ok === true, output: d.output });
    } else if (ev.type === 'ERROR') {
      entries.push({ kind: 'error', seq: ev.seq, message: str(d.message) || JSON.stringify(d) });
    }
  }
  return entries;
}
