import type { SessionEvent } from '@mgx/client';
import { conversation } from '../conversation.js';

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
