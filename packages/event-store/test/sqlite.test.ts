import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SqliteStore } from '../src/index.js';
import { storeContract } from './contract.js';

storeContract('sqlite', async ({ retentionDays }) =>
  SqliteStore.open({ file: join(mkdtempSync(join(tmpdir(), 'mgx-store-')), 'mgx.sqlite'), retentionDays }),
);

describe('sqlite store', () => {
  it('shares one file between two handles (two processes) with dense seq', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'mgx-store-')), 'mgx.sqlite');
    const a = SqliteStore.open({ file, tailPollMs: 20 });
    const b = SqliteStore.open({ file, tailPollMs: 20 });
    const s = await a.createSession({
      id: 'shared1',
      tenant: 't',
      framework: 'script',
      prompt: '',
      workspaceId: 'w',
      options: {},
      env: {},
      limits: { memoryBytes: 1, cpuQuota: 1, timeoutMs: 1 },
      network: 'none',
    });
    const ac = new AbortController();
    const seen: number[] = [];
    // a tail on one handle sees appends made through the other (by polling)
    const tailing = (async () => {
      for await (const ev of a.tail(s.id, { afterSeq: 0, signal: ac.signal })) seen.push(ev.seq);
    })();
    await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).append(s.id, [{ type: 'LOG', data: { i } }])));
    await b.decide(s.id, { status: 'succeeded', reason: 'finished' });
    await b.appendFinish(s.id, { status: 'succeeded', reason: 'finished' });
    await tailing;
    expect(seen).toEqual(Array.from({ length: 22 }, (_, i) => i + 1));
    await a.close();
    await b.close();
  });

  it('says where the store is when the file cannot be opened', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mgx-store-'));
    const notADir = join(dir, 'file');
    writeFileSync(notADir, 'x');
    const file = join(notADir, 'sub', 'mgx.sqlite');
    expect(() => SqliteStore.open({ file })).toThrow(
      expect.objectContaining({ code: 'STORE_UNAVAILABLE', message: expect.stringContaining(file) }),
    );
  });

  describe('retention timer', () => {
    afterEach(() => {
      vi.useRealTimers();
    });

    it('purges expired sessions by itself, hourly, without keeping the process alive', async () => {
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
      const store = SqliteStore.open({ file: join(mkdtempSync(join(tmpdir(), 'mgx-store-')), 'mgx.sqlite'), retentionDays: 1 });
      try {
        const s = await store.createSession({
          id: 'expiring1',
          tenant: 't',
          framework: 'script',
          prompt: '',
          workspaceId: 'w',
          options: {},
          env: {},
          limits: { memoryBytes: 1, cpuQuota: 1, timeoutMs: 1 },
          network: 'none',
        });
        await store.decide(s.id, { status: 'succeeded', reason: 'finished' });
        await store.appendFinish(s.id, { status: 'succeeded', reason: 'finished' });
        // a day later the first runs have not found it expired yet
        await vi.advanceTimersByTimeAsync(23 * 3600 * 1000);
        expect(await store.getSession(s.id)).not.toBeNull();
        // past the retention, the next hourly run removes it and its events
        await vi.advanceTimersByTimeAsync(2 * 3600 * 1000);
        expect(await store.getSession(s.id)).toBeNull();
        expect(await store.read(s.id, 0, 10)).toEqual([]);
      } finally {
        await store.close();
      }
      // close() cleared the timers
      expect(vi.getTimerCount()).toBe(0);
    });

    it('purges in batches and counts every session it removed', async () => {
      const store = SqliteStore.open({ file: join(mkdtempSync(join(tmpdir(), 'mgx-store-')), 'mgx.sqlite'), retentionDays: 1 });
      const ended = Date.now() - 2 * 24 * 3600 * 1000;
      for (let i = 0; i < 1203; i++) {
        const s = await store.createSession({
          id: `old${i}`,
          tenant: 't',
          framework: 'script',
          prompt: '',
          workspaceId: 'w',
          options: {},
          env: {},
          limits: { memoryBytes: 1, cpuQuota: 1, timeoutMs: 1 },
          network: 'none',
        });
        await store.decide(s.id, { status: 'failed', reason: 'lost' }, { at: ended });
      }
      expect(await store.purgeExpired()).toBe(1203);
      expect(await store.countByStatus('failed')).toBe(0);
      await store.close();
    });
  });
});
