import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runSessionOnHost, type RunInput } from './host-session.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const run = (input: RunInput) => runSessionOnHost('script', input, { prompt: '', network: 'none' }, (undo) => cleanups.push(undo));
const steps = (...s: object[]) => JSON.stringify({ steps: s });

describe('script framework, runner on the host with a real ingest socket and SQLite store', () => {
  it('waits at a wait_for step until the workspace file exists, then goes on', async () => {
    let wroteAt = 0;
    const { code, events } = await run({
      prompt: steps({ say: 'ready' }, { wait_for: 'signals/go' }, { say: 'went' }),
      setup: (workspace) => {
        mkdirSync(join(workspace, 'signals'));
        // decoys first: only the file it names releases it
        setTimeout(() => {
          writeFileSync(join(workspace, 'signals-go'), '');
          writeFileSync(join(workspace, 'go'), '');
        }, 200);
        setTimeout(() => {
          wroteAt = Date.now();
          writeFileSync(join(workspace, 'signals', 'go'), '');
        }, 500);
      },
    });
    expect(code).toBe(0);
    expect(wroteAt).toBeGreaterThan(0);
    const said = events.filter((e) => e.type === 'MESSAGE' && e.data.done).map((e) => [e.data.text, e.ts]);
    expect(said.map(([text]) => text)).toEqual(['ready', 'went']);
    expect(Number(said[1]![1])).toBeGreaterThanOrEqual(wroteAt);
  });

  it('refuses a wait_for path outside the workspace', async () => {
    const { events } = await run({ prompt: steps({ wait_for: '../outside' }) });
    expect(events.at(-1)).toMatchObject({ type: 'FINISH', data: { status: 'failed', reason: 'agent_error' } });
    expect(String(events.at(-1)?.data.message)).toContain('outside the workspace');
  });
});
