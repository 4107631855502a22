import { describe, expect, it } from 'vitest';
import type { SessionEvent } from '@mgx/client';
import { conversation } from '../src/conversation.js';

let seq = 0;
const ev = (type: SessionEvent['type'], data: Record<string, unknown>): SessionEvent => ({
  sessionId: 's',
  seq: ++seq,
  type,
  ts: seq,
  data,
});

describe('conversation', () => {
  it('joins a message from its deltas as they stream, then takes its final text', () => {
    const events = [
      ev('START', {}),
      ev('MESSAGE', { messageId: 'm1', role: 'assistant', delta: 'Hel' }),
      ev('MESSAGE', { messageId: 'm1', role: 'assistant', delta: 'lo ' }),
    ];
    expect(conversation(events)).toEqual([{ kind: 'message', seq: 2, id: 'm1', role: 'assistant', text: 'Hello ', done: false }]);
    events.push(
      ev('TOOL_CALL', { id: 'c1', name: 'shell', arguments: { cmd: 'ls' } }),
      ev('MESSAGE', { messageId: 'm1', role: 'assistant', delta: 'world' }),
      ev('MESSAGE', { messageId: 'm1', role: 'assistant', text: 'Hello world', done: true }),
      ev('TOOL_RESULT', { id: 'c1', name: 'shell', ok: false, output: 'denied' }),
      ev('ERROR', { message: 'boom' }),
    );
    const entries = conversation(events);
    expect(entries.map((e) => e.kind)).toEqual(['message', 'tool_call', 'tool_result', 'error']);
    expect(entries[0]).toMatchObject({ text: 'Hello world', done: true });
    expect(entries[1]).toMatchObject({ name: 'shell', args: { cmd: 'ls' } });
    expect(entries[2]).toMatchObject({ ok: false, output: 'denied' });
    expect(entries[3]).toMatchObject({ message: 'boom' });
  });

  it('keeps messages apart by id, in the order they began', () => {
    const entries = conversation([
      ev('MESSAGE', { messageId: 'a', role: 'assistant', delta: '1' }),
      ev('MESSAGE', { messageId: 'b', role: 'user', text: 'q', done: true }),
      ev('MESSAGE', { messageId: 'a', role: 'assistant', delta: '2' }),
    ]);
    expect(entries).toMatchObject([
      { id: 'a', text: '12', done: false },
      { id: 'b', role: 'user', text: 'q', done: true },
    ]);
  });
});
