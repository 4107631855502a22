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

/** The conversation. Everything the agent wrote is rendered as text (never as HTML): it is untrusted. */
export function Conversation({ events }: { events: readonly SessionEvent[] }) {
  const entries = conversation(events);
  if (entries.length === 0) return <p class="muted">No messages yet.</p>;
  return (
    <ol class="conversation">
      {entries.map((e) => {
        switch (e.kind) {
          case 'message':
            return (
              <li key={`m-${e.id}`} class={`message role-${e.role}${e.done ? '' : ' streaming'}`} data-message={e.id}>
                <span class="who">{e.role}</span>
                <div class="text">{e.text}</div>
              </li>
            );
          case 'tool_call':
            return (
              <li key={`c-${e.seq}`} class="tool">
                <span class="who">tool call</span> <code>{e.name}</code>
                <pre>{JSON.stringify(e.args, null, 2)}</pre>
              </li>
            );
          case 'tool_result':
            return (
              <li key={`r-${e.seq}`} class={`tool ${e.ok ? '' : 'failed'}`}>
                <span class="who">tool result</span> <code>{e.name}</code> {e.ok ? 'ok' : 'failed'}
                <pre>{typeof e.output === 'string' ? e.output : JSON.stringify(e.output, null, 2)}</pre>
              </li>
            );
          case 'error':
            return (
              <li key={`e-${e.seq}`} class="error">
                <span class="who">error</span> {e.message}
              </li>
            );
        }
      })}
    </ol>
  );
}
