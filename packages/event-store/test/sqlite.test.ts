import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { CodedError, silentLogger } from '@mgx/config';
import { SqliteStore, StoreError, type AppendResult, type SqliteStoreOptions } from '../src/index.js';
import { newSession, storeContract } from './contract.js';

/** The file of each store the contract opened, so another handle can open on it. */
const contractFiles = new WeakMap<object, string>();
storeContract(
  'sqlite',
  async ({ retentionDays, sameAs }) => {
    const file = (sameAs && contractFiles.get(sameAs)) ?? join(mkdtempSync(join(tmpdir(), 'mgx-store-')), 'mgx.sqlite');
    const store = SqliteStore.open({ file, retentionDays });
    contractFiles.set(store, file);
    return store;
  },
  {
    // a trigger added through another connection, as another process could
    rejectEventsMarked: async (store, marker) => {
      const file = contractFiles.get(store);
      if (!file || !/^\w+$/.test(marker)) throw new Error('not a store of this suite, or a marker that is not a word');
      const other = new Database(file);
      other.exec(
        `CREATE TRIGGER reject_${marker} BEFORE INSERT ON events WHEN instr(NEW.data, '${marker}') > 0 BEGIN SELECT RAISE(ABORT, 'rejected on purpose'); END`,
      );
      return async () => {
        other.exec(`DROP TRIGGER reject_${marker}`);
        other.close();
      };
    },
  },
);

/** A store and a second connection to its file, as another process would hold; both closed after `fn`. */
async function withOtherConnection(
  options: Omit<SqliteStoreOptions, 'file'>,
  fn: (store: SqliteStore, other: Database.Database, file: string) => Promise<void>,
): Promise<void> {
  const file = join(mkdtempSync(join(tmpdir(), 'mgx-store-')), 'mgx.sqlite');
  const store = SqliteStore.open({ file, ...options });
  const other = new Database(file);
  try {
    await fn(store, other, file);
  } finally {
    other.close();
    await store.close();
  }
}

describe('sqlite store', () => {
  it('shares one file between two handles (two processes) with dense seq', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'mgx-store-')), 'mgx.sqlite');
    const a = SqliteStore.open({ file, tailPollMs: 20 });
    const b = SqliteStore.open({ file, tailPollMs: 20 });
    const s = await a.createSession(newSession('shared1'));
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

  it("a decided session keeps its tenant's slot, its place under the cap and its workspace until its FINISH (its container torn down)", async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'mgx-store-')), 'mgx.sqlite');
    const a = SqliteStore.open({ file });
    const b = SqliteStore.open({ file });
    try {
      const first = await a.createSession(newSession('held1', { workspaceId: 'ws1' }));
      const sameWorkspace = await a.createSession(newSession('held2', { workspaceId: 'ws1', tenant: 'other' }));
      const sameTenant = await a.createSession(newSession('held3', { workspaceId: 'ws2' }));
      const ws = { workspaces: { shared: false } };
      expect((await a.claimNext('wa', { ...ws, maxPerTenant: 1 }))?.id).toBe(first.id);
      await a.markRunning(first.id, 1, 2);
      await a.decide(first.id, { status: 'succeeded', reason: 'finished' });
      // decided, still tearing down: nothing of what it held is free, for any worker
      for (const st of [a, b]) {
        expect(await st.claimNext('wa', { ...ws, maxPerTenant: 1, excludeTenants: ['other'] })).toBeNull();
        expect(await st.claimNext('wa', { ...ws, excludeTenants: ['t'] })).toBeNull();
        expect(await st.claimNext('wb', { maxClaimed: 1 })).toBeNull();
      }
      await a.appendFinish(first.id, { status: 'succeeded', reason: 'finished' });
      expect((await b.claimNext('wa', { ...ws, maxPerTenant: 1 }))?.id).toBe(sameWorkspace.id);
      expect((await b.claimNext('wb', { ...ws, maxPerTenant: 1 }))?.id).toBe(sameTenant.id);
    } finally {
      await a.close();
      await b.close();
    }
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

  describe('driver failures are StoreErrors', () => {
    /** What `call` rejected with: a STORE_UNAVAILABLE StoreError that keeps the driver's error. */
    const unavailable = async (call: Promise<unknown>, driverCode?: string): Promise<StoreError> => {
      const err: unknown = await call.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(StoreError);
      expect(err).toBeInstanceOf(CodedError);
      const e = err as StoreError;
      expect(e.code).toBe('STORE_UNAVAILABLE');
      expect(e.cause).toBeInstanceOf(Error);
      if (driverCode) expect(e.cause).toMatchObject({ code: driverCode });
      return e;
    };

    it('a write that finds the file locked by another connection past the busy timeout', async () => {
      await withOtherConnection({ busyTimeoutMs: 50 }, async (store, other, file) => {
        const s = await store.createSession(newSession('locked1'));
        other.exec('BEGIN IMMEDIATE');
        const e = await unavailable(store.append(s.id, [{ type: 'LOG', data: {} }]), 'SQLITE_BUSY');
        expect(e.message).toContain(file);
        await unavailable(store.decide(s.id, { status: 'failed', reason: 'lost' }), 'SQLITE_BUSY');
        other.exec('ROLLBACK');
        // the lock gone, the store serves again and nothing was half-written
        expect((await store.append(s.id, [{ type: 'LOG', data: {} }])).stored.map((ev) => ev.seq)).toEqual([2]);
      });
    });

    it('every read of a store whose tables are gone', async () => {
      await withOtherConnection({ retentionDays: 1 }, async (store, other) => {
        const s = await store.createSession(newSession('broken1'));
        other.exec('DROP TABLE events; DROP TABLE sessions');
        await unavailable(store.getSession(s.id), 'SQLITE_ERROR');
        await unavailable(store.listSessions({ tenant: 't', limit: 10 }), 'SQLITE_ERROR');
        await unavailable(store.countByStatus('queued'), 'SQLITE_ERROR');
        await unavailable(store.findByStatus(['queued']), 'SQLITE_ERROR');
        await unavailable(store.findUnfinished(), 'SQLITE_ERROR');
        await unavailable(store.read(s.id, 0, 10), 'SQLITE_ERROR');
        await unavailable(store.getFinishEvent(s.id), 'SQLITE_ERROR');
        await unavailable(store.lastRid(s.id), 'SQLITE_ERROR');
        await unavailable(store.purgeExpired(), 'SQLITE_ERROR');
      });
    });

    it('reads, writes and tails of a closed store', async () => {
      const store = SqliteStore.open({ file: join(mkdtempSync(join(tmpdir(), 'mgx-store-')), 'mgx.sqlite') });
      const s = await store.createSession(newSession('closed1'));
      await store.close();
      await unavailable(store.getSession(s.id));
      await unavailable(store.read(s.id, 0, 10));
      await unavailable(store.append(s.id, [{ type: 'LOG', data: {} }]));
      const tail = store.tail(s.id, { afterSeq: 0, signal: new AbortController().signal });
      await unavailable(
        (async () => {
          for await (const ev of tail) void ev;
        })(),
      );
    });
  });

  describe('group commit of appends', () => {
    it('stores the appends of one turn together, each on its own: one that fails leaves the others stored', async () => {
      await withOtherConnection({}, async (store, other) => {
        const a = await store.createSession(newSession('group1'));
        const b = await store.createSession(newSession('group2'));
        other.exec(`CREATE TRIGGER reject_poison BEFORE INSERT ON events WHEN instr(NEW.data, 'poison') > 0
          BEGIN SELECT RAISE(ABORT, 'rejected on purpose'); END`);
        const many = Array.from({ length: 150 }, (_, i) => ({ type: 'LOG' as const, rid: i + 3, data: { i } }));
        const results = await Promise.allSettled([
          store.append(a.id, [{ type: 'LOG', rid: 1, data: { n: 1 } }]),
          // its first 64 events are fine (one INSERT), the next is refused: none of them is stored
          store.append(b.id, [
            ...Array.from({ length: 64 }, (_, i) => ({ type: 'LOG' as const, rid: i + 1, data: { n: 'fine' } })),
            { type: 'LOG', rid: 65, data: { n: 'poison' } },
          ]),
          store.append('group-missing', [{ type: 'LOG', data: {} }]),
          store.append(a.id, [{ type: 'LOG', rid: 2, data: { n: 2 } }]),
          // more rows than one INSERT statement takes, and a re-sent rid among them
          store.append(a.id, [{ type: 'LOG', rid: 2, data: { n: 'again' } }, ...many]),
        ]);
        expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled', 'fulfilled']);
        expect((results[1] as PromiseRejectedResult).reason).toMatchObject({ code: 'STORE_UNAVAILABLE' });
        expect((results[2] as PromiseRejectedResult).reason).toMatchObject({ code: 'STORE_SESSION_NOT_FOUND' });
        const last = (results[4] as PromiseFulfilledResult<AppendResult>).value;
        expect(last.duplicates).toBe(1);
        expect(last.stored.map((e) => e.seq)).toEqual(Array.from({ length: 150 }, (_, i) => i + 4));
        const storedA = await store.read(a.id, 0, 1000);
        expect(storedA.map((e) => e.seq)).toEqual(Array.from({ length: 153 }, (_, i) => i + 1));
        expect(storedA.slice(1, 3).map((e) => e.data)).toEqual([{ n: 1 }, { n: 2 }]);
        expect(storedA.slice(3).map((e) => e.data.i)).toEqual(many.map((e) => e.data.i));
        expect(await store.lastRid(a.id)).toBe(152);
        expect((await store.read(b.id, 0, 10)).map((e) => e.type)).toEqual(['SESSION_QUEUED']);
        expect(await store.lastRid(b.id)).toBe(0);
        other.exec('DROP TRIGGER reject_poison');
      });
    });

    it('fails every append of the turn when the transaction itself fails, storing none of them', async () => {
      await withOtherConnection({ busyTimeoutMs: 50 }, async (store, other) => {
        const a = await store.createSession(newSession('group3'));
        const b = await store.createSession(newSession('group4'));
        other.exec('BEGIN IMMEDIATE');
        const results = await Promise.allSettled([
          store.append(a.id, [{ type: 'LOG', rid: 1, data: {} }]),
          store.append(b.id, [{ type: 'LOG', rid: 1, data: {} }]),
        ]);
        other.exec('ROLLBACK');
        for (const r of results) expect(r).toMatchObject({ status: 'rejected', reason: { code: 'STORE_UNAVAILABLE' } });
        expect(await store.lastRid(a.id)).toBe(0);
        expect(await store.lastRid(b.id)).toBe(0);
        // the runner re-sends them: stored once
        expect((await store.append(a.id, [{ type: 'LOG', rid: 1, data: {} }])).stored.map((e) => e.seq)).toEqual([2]);
      });
    });

    it('stores the appends already made when it closes', async () => {
      const file = join(mkdtempSync(join(tmpdir(), 'mgx-store-')), 'mgx.sqlite');
      const store = SqliteStore.open({ file });
      const s = await store.createSession(newSession('group5'));
      const appended = store.append(s.id, [{ type: 'LOG', rid: 1, data: { last: true } }]);
      await store.close();
      expect((await appended).stored.map((e) => e.seq)).toEqual([2]);
      const again = SqliteStore.open({ file });
      expect((await again.read(s.id, 0, 10)).map((e) => e.data)).toEqual([expect.anything(), { last: true }]);
      await again.close();
    });
  });

  describe('retention timer', () => {
    afterEach(() => {
      vi.useRealTimers();
    });

    it('purges expired sessions by itself, hourly, without keeping the process alive', async () => {
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
      const store = SqliteStore.open({ file: join(mkdtempSync(join(tmpdir(), 'mgx-store-')), 'mgx.sqlite'), retentionDays: 1 });
      try {
        const s = await store.createSession(newSession('expiring1'));
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

    it('logs a failed run with its error, and keeps running', async () => {
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval'] });
      const warned: { obj: object; msg: string | undefined }[] = [];
      const logger = { ...silentLogger, warn: (obj: object, msg?: string) => void warned.push({ obj, msg }) };
      await withOtherConnection({ retentionDays: 1, logger }, async (_store, other) => {
        other.exec('DROP TABLE events; DROP TABLE sessions');
        await vi.advanceTimersByTimeAsync(3600 * 1000);
        // the first run, a minute after opening, and the hourly one
        expect(warned).toHaveLength(2);
        expect(warned[0]?.obj).toMatchObject({ err: expect.objectContaining({ code: 'STORE_UNAVAILABLE' }) });
        expect((warned[0]?.obj as { err: StoreError }).err).toBeInstanceOf(StoreError);
      });
    });

    it('purges in batches and counts every session it removed', async () => {
      const store = SqliteStore.open({ file: join(mkdtempSync(join(tmpdir(), 'mgx-store-')), 'mgx.sqlite'), retentionDays: 1 });
      const ended = Date.now() - 2 * 24 * 3600 * 1000;
      for (let i = 0; i < 1203; i++) {
        const s = await store.createSession(newSession(`old${i}`));
        await store.decide(s.id, { status: 'failed', reason: 'lost' }, { at: ended });
      }
      expect(await store.purgeExpired()).toBe(1203);
      expect(await store.countByStatus('failed')).toBe(0);
      await store.close();
    });
  });
});
