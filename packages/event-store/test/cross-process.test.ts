import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import type { SessionEvent } from '@mgx/agent-sdk';
import { SqliteStore } from '../src/index.js';
import { newSession } from './contract.js';

const ROOT = join(import.meta.dirname, '..', '..', '..');
const FIXTURE = join(import.meta.dirname, 'fixtures', 'other-process.ts');

/** Runs the fixture as another process on `file` and waits for it to exit. */
async function otherProcess(file: string, action: 'append' | 'cancel', ...ids: string[]): Promise<void> {
  await promisify(execFile)(process.execPath, ['--import', 'tsx', FIXTURE, file, action, ...ids], { cwd: ROOT });
}

// polls far longer than any test runs: only the change check can deliver what the other process wrote
const NEVER_MS = 600_000;

describe('sqlite store shared by two processes', () => {
  let store: SqliteStore | undefined;
  let file: string;
  const open = () => (store = SqliteStore.open({ file, tailPollMs: NEVER_MS }));

  afterEach(async () => {
    await store?.close();
    store = undefined;
  });

  it("wakes a tail with another process's append, without waiting for its poll", async () => {
    file = join(mkdtempSync(join(tmpdir(), 'mgx-store-')), 'mgx.sqlite');
    const a = open();
    const s = await a.createSession(newSession('x1'));
    const ac = new AbortController();
    const seen: SessionEvent[] = [];
    const first = new Promise<void>((resolve) => {
      void (async () => {
        for await (const ev of a.tail(s.id, { afterSeq: 1, signal: ac.signal })) {
          seen.push(ev);
          resolve();
        }
      })();
    });
    const before = a.changesSeen;
    await otherProcess(file, 'append', s.id);
    await first;
    ac.abort();
    expect(seen.map((e) => [e.seq, e.type, e.data.from])).toEqual([[2, 'LOG', 'other process']]);
    expect(a.changesSeen).toBeGreaterThan(before);
  });

  it("reports another process's cancel request to the worker that claimed the session, and only to it", async () => {
    file = join(mkdtempSync(join(tmpdir(), 'mgx-store-')), 'mgx.sqlite');
    const a = open();
    await a.createSession(newSession('mine'));
    await a.createSession(newSession('theirs'));
    expect((await a.claimNext('w1'))?.id).toBe('mine');
    expect((await a.claimNext('w2'))?.id).toBe('theirs');
    await a.markRunning('mine', Date.now(), Date.now() + 60_000);
    const heard: string[] = [];
    const cancelled = new Promise<void>((resolve) => {
      const stop = a.watchCancels('w1', (id) => {
        heard.push(id);
        stop();
        resolve();
      });
    });
    await otherProcess(file, 'cancel', 'theirs', 'mine');
    await cancelled;
    expect(heard).toEqual(['mine']);
    expect((await a.getSession('mine'))?.cancelRequested).toBe(true);
  });

  it('reports nothing for a session decided before the cancel request', async () => {
    file = join(mkdtempSync(join(tmpdir(), 'mgx-store-')), 'mgx.sqlite');
    const a = open();
    await a.createSession(newSession('done'));
    await a.createSession(newSession('live'));
    await a.claimNext('w1');
    await a.claimNext('w1');
    await a.decide('done', { status: 'succeeded', reason: 'finished' });
    const heard: string[] = [];
    const seen = new Promise<void>((resolve) => {
      const stop = a.watchCancels('w1', (id) => {
        heard.push(id);
        stop();
        resolve();
      });
    });
    // one process, in order: the request on the decided session is refused, the live one reported
    await otherProcess(file, 'cancel', 'done', 'live');
    await seen;
    expect(heard).toEqual(['live']);
  });
});
