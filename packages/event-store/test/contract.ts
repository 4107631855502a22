import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { SessionEvent } from '@mgx/agent-sdk';
import { StoreError, StoreErrorCode, type NewSession, type Outcome, type Store } from '../src/index.js';

/** A small session for adapter-specific tests: `id` and anything in `over` set, the rest minimal. */
export function newSession(id: string, over: Partial<NewSession> = {}): NewSession {
  return {
    id,
    tenant: 't',
    framework: 'script',
    prompt: '',
    workspaceId: 'w',
    options: {},
    env: {},
    limits: { memoryBytes: 1, cpuQuota: 1, timeoutMs: 1 },
    network: 'none',
    ...over,
  };
}

export interface ContractStoreOptions {
  /** The retention the store is opened with (the suite uses 30 days, and 0 for keep-forever). */
  retentionDays: number;
  /**
   * Open another handle on the data of this store (as another process, or a restart with other
   * settings, would) instead of a fresh one. Both stay open until the test ends.
   */
  sameAs?: Store;
}

/** Real failures of the database behind a store, caused from outside it (no hook in the adapter). */
export interface ContractFaults {
  /**
   * Until the returned function runs, the database refuses to store any event whose data holds
   * `marker` (SQLite: a trigger; MongoDB: a collection validator), so a batch fails part-way.
   */
  rejectEventsMarked(store: Store, marker: string): Promise<() => Promise<void>>;
}

/**
 * The contract every store adapter passes, run against each one (SQLite here, MongoDB when
 * MONGODB_URI is set). `open` gives a fresh, empty store, or with `sameAs` another handle on an
 * open store's data; its `close` disposes of it. `faults` makes the database fail on purpose.
 */
export function storeContract(name: string, open: (options: ContractStoreOptions) => Promise<Store>, faults?: ContractFaults): void {
  describe(`store contract: ${name}`, () => {
    let store: Store;
    const opened: Store[] = [];
    const openStore = async (options: ContractStoreOptions): Promise<Store> => {
      const s = await open(options);
      opened.push(s);
      return s;
    };
    beforeEach(async () => {
      store = await openStore({ retentionDays: 30 });
    });
    afterEach(async () => {
      for (const s of opened.splice(0).reverse()) await s.close();
    });
    /** A second instance on the store's backing store: another worker process of the fleet. */
    const second = async (): Promise<Store> => {
      return openStore({ retentionDays: 30, sameAs: store });
    };

    const session = (over: Partial<NewSession> = {}): NewSession => {
      const id = `s${randomBytes(6).toString('hex')}`;
      return {
        id,
        tenant: 't1',
        framework: 'script',
        prompt: 'hi',
        workspaceId: id,
        options: {},
        env: {},
        limits: { memoryBytes: 256 * 1024 ** 2, cpuQuota: 100000, timeoutMs: 60_000 },
        network: 'none',
        ...over,
      };
    };

    it('creates a queued session with SESSION_QUEUED as seq 1', async () => {
      const s = await store.sessions.createSession(session());
      expect(s.status).toBe('queued');
      expect(s.lastSeq).toBe(1);
      const events = await store.events.read(s.id, 0, 10);
      expect(events.map((e) => [e.seq, e.type])).toEqual([[1, 'SESSION_QUEUED']]);
    });

    it('refuses a second session with the same id', async () => {
      const s = session();
      await store.sessions.createSession(s);
      await expect(store.sessions.createSession(s)).rejects.toMatchObject({ code: 'STORE_SESSION_EXISTS' });
    });

    it('appends in order with dense seq, reads after a seq, and honours the limit', async () => {
      const s = await store.sessions.createSession(session());
      const r = await store.events.append(
        s.id,
        Array.from({ length: 10 }, (_, i) => ({ type: 'LOG' as const, data: { i } })),
      );
      expect(r.stored.map((e) => e.seq)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
      expect((await store.events.read(s.id, 0, 100)).map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
      const after = await store.events.read(s.id, 5, 3);
      expect(after.map((e) => [e.seq, e.data.i])).toEqual([
        [6, 4],
        [7, 5],
        [8, 6],
      ]);
      expect(await store.events.read(s.id, 11, 10)).toEqual([]);
    });

    it('keeps seq dense per session under concurrent appends from many sessions', async () => {
      const sessions = await Promise.all(Array.from({ length: 8 }, () => store.sessions.createSession(session())));
      await Promise.all(
        sessions.flatMap((s) =>
          Array.from({ length: 25 }, (_, i) =>
            store.events.append(s.id, [
              { type: 'LOG', data: { i } },
              { type: 'LOG', data: { i } },
            ]),
          ),
        ),
      );
      for (const s of sessions) {
        const seqs = (await store.events.read(s.id, 0, 1000)).map((e) => e.seq);
        expect(seqs).toEqual(Array.from({ length: 51 }, (_, i) => i + 1));
      }
    });

    it('stores a re-sent runner event once (idempotent by rid)', async () => {
      const s = await store.sessions.createSession(session());
      const batch = [1, 2, 3].map((rid) => ({ type: 'LOG' as const, data: { rid }, rid }));
      expect((await store.events.append(s.id, batch)).stored).toHaveLength(3);
      const again = await store.events.append(s.id, [...batch, { type: 'LOG', data: { rid: 4 }, rid: 4 }]);
      expect(again.duplicates).toBe(3);
      expect(again.stored.map((e) => e.data.rid)).toEqual([4]);
      expect(await store.events.lastRid(s.id)).toBe(4);
      expect((await store.events.read(s.id, 0, 100)).length).toBe(5);
    });

    (faults ? it : it.skip)('stores a batch that failed part-way once it is re-sent: nothing lost, nothing twice, seq dense', async () => {
      const s = await store.sessions.createSession(session());
      const marker = `reject${randomBytes(6).toString('hex')}`;
      const batch = [1, 2, 3, 4, 5].map((rid) => ({ type: 'LOG' as const, data: rid === 3 ? { rid, marker } : { rid }, rid }));
      const heal = await faults!.rejectEventsMarked(store, marker);
      try {
        await expect(store.events.append(s.id, batch)).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
        // what the failed write left: at most the part of the batch before the failure, and
        // counters that claim no more than is stored
        const left = await store.events.read(s.id, 0, 100);
        const kept = left.slice(1).map((e) => e.data.rid as number);
        expect([[], [1], [1, 2]]).toContainEqual(kept);
        expect(left.map((e) => e.seq)).toEqual(left.map((_, i) => i + 1));
        expect((await store.sessions.getSession(s.id))?.lastSeq).toBe(left.at(-1)?.seq);
        expect(await store.events.lastRid(s.id)).toBe(kept.at(-1) ?? 0);
      } finally {
        await heal();
      }
      // the runner re-sends the batch
      const retry = await store.events.append(s.id, batch);
      expect(retry.stored.length + retry.duplicates).toBe(5);
      const all = await store.events.read(s.id, 0, 100);
      expect(all.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6]);
      expect(all.slice(1).map((e) => e.data.rid)).toEqual([1, 2, 3, 4, 5]);
      expect(await store.events.lastRid(s.id)).toBe(5);
      expect((await store.sessions.getSession(s.id))?.lastSeq).toBe(6);
      // and the stream goes on from there
      expect((await store.events.append(s.id, [{ type: 'LOG', data: {}, rid: 6 }])).stored.map((e) => e.seq)).toEqual([7]);
    });

    it('refuses appends to a session that does not exist', async () => {
      await expect(store.events.append('nope', [{ type: 'LOG', data: {} }])).rejects.toMatchObject({ code: 'STORE_SESSION_NOT_FOUND' });
    });

    it('finds FINISH, and stores nothing after it', async () => {
      const s = await store.sessions.createSession(session());
      expect(await store.events.getFinishEvent(s.id)).toBeNull();
      await expect(store.sessions.appendFinish(s.id, { status: 'succeeded', reason: 'finished' })).rejects.toMatchObject({
        code: 'STORE_NOT_DECIDED',
      });
      await store.sessions.decide(s.id, { status: 'succeeded', reason: 'finished' });
      const finish = await store.sessions.appendFinish(s.id, { status: 'succeeded', reason: 'finished' });
      expect(finish.type).toBe('FINISH');
      expect((await store.events.getFinishEvent(s.id))?.seq).toBe(finish.seq);
      // FINISH is stored once, whoever asks again
      expect((await store.sessions.appendFinish(s.id, { status: 'failed', reason: 'lost' })).seq).toBe(finish.seq);
      const late = await store.events.append(s.id, [{ type: 'LOG', data: {} }]);
      expect(late).toMatchObject({ closed: true, stored: [] });
      expect((await store.sessions.getSession(s.id))?.finishSeq).toBe(finish.seq);
    });

    it("keeps FINISH's usage on the session, and finds a session's last event of a type", async () => {
      const s = await store.sessions.createSession(session());
      expect(await store.events.lastOfType(s.id, 'RESOURCE')).toBeNull();
      await store.events.append(s.id, [
        { type: 'RESOURCE', data: { memoryBytes: 1 } },
        { type: 'LOG', data: {} },
        { type: 'RESOURCE', data: { memoryBytes: 2 } },
        { type: 'LOG', data: {} },
      ]);
      expect(await store.events.lastOfType(s.id, 'RESOURCE')).toMatchObject({ seq: 4, data: { memoryBytes: 2 } });
      expect((await store.sessions.getSession(s.id))?.usage ?? null).toBeNull();
      await store.sessions.decide(s.id, { status: 'succeeded', reason: 'finished' });
      const usage = { cpuSeconds: 2.5, memoryPeakBytes: 300, memoryGiBSeconds: 1.25, pidsPeak: 7, wallMs: 4000, tokens: { input: 3 } };
      const finish = await store.sessions.appendFinish(s.id, { status: 'succeeded', reason: 'finished', usage });
      expect(finish.data.usage).toEqual(usage);
      expect((await store.sessions.getSession(s.id))?.usage).toEqual(usage);
    });

    it("sums finished sessions' usage per tenant and status over a range of end times", async () => {
      const end = async (
        tenant: string,
        at: number,
        outcome: Outcome,
        usage?: { cpuSeconds: number; memoryGiBSeconds: number; wallMs: number },
      ) => {
        const s = await store.sessions.createSession(session({ tenant }));
        await store.sessions.decide(s.id, outcome, { at });
        const u = usage && { ...usage, memoryPeakBytes: 1, pidsPeak: 1 };
        await store.sessions.appendFinish(s.id, { status: outcome.status, reason: outcome.reason, ...(u ? { usage: u } : {}) });
      };
      const ok: Outcome = { status: 'succeeded', reason: 'finished' };
      const failed: Outcome = { status: 'failed', reason: 'agent_error' };
      await end('a', 1000, ok, { cpuSeconds: 1, memoryGiBSeconds: 0.5, wallMs: 2000 });
      await end('a', 1500, ok, { cpuSeconds: 2, memoryGiBSeconds: 0.25, wallMs: 3000 });
      await end('a', 1800, failed, { cpuSeconds: 0.5, memoryGiBSeconds: 0.125, wallMs: 500 });
      await end('b', 1200, failed, { cpuSeconds: 4, memoryGiBSeconds: 1, wallMs: 8000 });
      // cancelled while queued: no container, no usage
      await end('b', 1300, { status: 'cancelled', reason: 'cancelled' });
      // outside the range
      await end('a', 999, ok, { cpuSeconds: 100, memoryGiBSeconds: 100, wallMs: 100_000 });
      await end('b', 2000, ok, { cpuSeconds: 100, memoryGiBSeconds: 100, wallMs: 100_000 });
      // decided, FINISH not stored yet: not counted until it is
      const open = await store.sessions.createSession(session({ tenant: 'a' }));
      await store.sessions.decide(open.id, ok, { at: 1100 });

      const all = await store.sessions.usageByTenant({ from: 1000, to: 2000 });
      expect(all).toEqual([
        {
          tenant: 'a',
          sessions: 3,
          cpuSeconds: 3.5,
          memoryGiBSeconds: 0.875,
          wallSeconds: 5.5,
          byStatus: {
            succeeded: { sessions: 2, cpuSeconds: 3, memoryGiBSeconds: 0.75, wallSeconds: 5 },
            failed: { sessions: 1, cpuSeconds: 0.5, memoryGiBSeconds: 0.125, wallSeconds: 0.5 },
          },
        },
        {
          tenant: 'b',
          sessions: 2,
          cpuSeconds: 4,
          memoryGiBSeconds: 1,
          wallSeconds: 8,
          byStatus: {
            failed: { sessions: 1, cpuSeconds: 4, memoryGiBSeconds: 1, wallSeconds: 8 },
            cancelled: { sessions: 1, cpuSeconds: 0, memoryGiBSeconds: 0, wallSeconds: 0 },
          },
        },
      ]);
      expect(await store.sessions.usageByTenant({ from: 1000, to: 2000, tenant: 'b' })).toEqual([all[1]]);
      expect(await store.sessions.usageByTenant({ from: 1000, to: 2000, tenant: 'nobody' })).toEqual([]);
      expect(await store.sessions.usageByTenant({ from: 5000, to: 6000 })).toEqual([]);
    });

    it('decides a terminal state exactly once when transitions race', async () => {
      for (let round = 0; round < 20; round++) {
        const s = await store.sessions.createSession(session());
        const results = await Promise.all([
          store.sessions.decide(s.id, { status: 'succeeded', reason: 'finished' }),
          store.sessions.decide(s.id, { status: 'timed_out', reason: 'timeout' }, { events: [{ type: 'TIMEOUT', data: {} }] }),
          store.sessions.decide(s.id, { status: 'cancelled', reason: 'cancelled' }, { events: [{ type: 'CANCELLED', data: {} }] }),
        ]);
        expect(results.filter((r) => r.won)).toHaveLength(1);
        const winner = results.find((r) => r.won)!;
        const final = await store.sessions.getSession(s.id);
        expect(final?.status).toBe(winner.session.status);
        // only the winner's events are stored
        const types = (await store.events.read(s.id, 0, 100)).map((e) => e.type);
        expect(types.filter((t) => t === 'TIMEOUT' || t === 'CANCELLED').length).toBe(winner.session.status === 'succeeded' ? 0 : 1);
      }
    });

    it('decides only from the states it is told to', async () => {
      const s = await store.sessions.createSession(session());
      await store.sessions.claimNext('w1');
      const r = await store.sessions.decide(s.id, { status: 'cancelled', reason: 'cancelled' }, { from: ['queued'] });
      expect(r.won).toBe(false);
      expect(r.session.status).toBe('starting');
    });

    it('claims queued sessions oldest first, each exactly once', async () => {
      const ids: string[] = [];
      for (let i = 0; i < 10; i++) ids.push((await store.sessions.createSession(session())).id);
      const claims = await Promise.all(Array.from({ length: 14 }, (_, i) => store.sessions.claimNext(`w${i % 3}`)));
      const claimed = claims.filter((c) => c !== null).map((c) => c.id);
      expect(claimed).toHaveLength(10);
      expect(new Set(claimed).size).toBe(10);
      expect([...claimed].sort()).toEqual([...ids].sort());
      expect(await store.sessions.claimNext('w9')).toBeNull();
    });

    it('claims past the tenants it is told to skip, oldest first otherwise', async () => {
      const a1 = await store.sessions.createSession(session({ tenant: 'busy' }));
      const a2 = await store.sessions.createSession(session({ tenant: 'busy' }));
      const b1 = await store.sessions.createSession(session({ tenant: 'idle' }));
      expect((await store.sessions.claimNext('w1', { excludeTenants: ['busy'] }))?.id).toBe(b1.id);
      expect(await store.sessions.claimNext('w1', { excludeTenants: ['busy'] })).toBeNull();
      expect((await store.sessions.claimNext('w1', { excludeTenants: [] }))?.id).toBe(a1.id);
      expect((await store.sessions.claimNext('w1'))?.id).toBe(a2.id);
    });

    it("keeps a session's env and limits as given", async () => {
      const s = await store.sessions.createSession(
        session({ env: { A: '1', B: 'two words' }, limits: { memoryBytes: 1, cpuQuota: 2, timeoutMs: 3, idleTimeoutMs: 4 } }),
      );
      expect(await store.sessions.getSession(s.id)).toMatchObject({
        env: { A: '1', B: 'two words' },
        limits: { memoryBytes: 1, cpuQuota: 2, timeoutMs: 3, idleTimeoutMs: 4 },
      });
    });

    it('moves a claimed session through starting and running, and back to the queue', async () => {
      const s = await store.sessions.createSession(session());
      const c = await store.sessions.claimNext('w1');
      expect(c).toMatchObject({ id: s.id, status: 'starting', workerId: 'w1' });
      expect(await store.sessions.requeue(s.id)).toBe('done');
      expect((await store.sessions.getSession(s.id))?.status).toBe('queued');
      await store.sessions.claimNext('w1');
      expect(await store.sessions.setContainer(s.id, 'c1')).toBe('done');
      expect(await store.sessions.markRunning(s.id, 1000, 61_000)).toBe('done');
      expect(await store.sessions.markRunning(s.id, 1000, 61_000)).toBe('decided');
      expect(await store.sessions.getSession(s.id)).toMatchObject({
        status: 'running',
        containerId: 'c1',
        startedAt: 1000,
        deadlineAt: 61_000,
      });
      expect((await store.sessions.findByStatus(['running'], 'w1')).map((x) => x.id)).toEqual([s.id]);
      expect(await store.sessions.findByStatus(['running'], 'w2')).toEqual([]);
    });

    it("lists a tenant's sessions newest first, with cursor pages and status filters", async () => {
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push((await store.sessions.createSession(session({ tenant: 'pager' }))).id);
      await store.sessions.createSession(session({ tenant: 'other' }));
      const p1 = await store.sessions.listSessions({ tenant: 'pager', limit: 2 });
      const p2 = await store.sessions.listSessions({ tenant: 'pager', limit: 2, cursor: p1.nextCursor! });
      const p3 = await store.sessions.listSessions({ tenant: 'pager', limit: 2, cursor: p2.nextCursor! });
      expect([...p1.items, ...p2.items, ...p3.items].map((s) => s.id)).toEqual([...ids].reverse());
      expect(p3.nextCursor).toBeNull();
      await store.sessions.decide(ids[0]!, { status: 'failed', reason: 'lost' });
      const failed = await store.sessions.listSessions({ tenant: 'pager', limit: 10, status: ['failed'] });
      expect(failed.items.map((s) => s.id)).toEqual([ids[0]]);
      // without a tenant (an operator's view): every tenant's sessions, newest first
      const everyone = await store.sessions.listSessions({ limit: 100 });
      expect(everyone.items.map((s) => s.tenant).slice(0, 6)).toEqual(['other', 'pager', 'pager', 'pager', 'pager', 'pager']);
    });

    it('tails a session from mid-stream with no gap and no duplicate, ending after FINISH', async () => {
      const s = await store.sessions.createSession(session());
      await store.events.append(
        s.id,
        Array.from({ length: 5 }, (_, i) => ({ type: 'LOG' as const, data: { i } })),
      );
      const ac = new AbortController();
      const seen: SessionEvent[] = [];
      const tailing = (async () => {
        for await (const ev of store.events.tail(s.id, { afterSeq: 3, signal: ac.signal })) seen.push(ev);
      })();
      // appends racing the subscriber's backfill
      for (let i = 0; i < 20; i++) await store.events.append(s.id, [{ type: 'LOG', data: { live: i } }]);
      await store.sessions.decide(s.id, { status: 'succeeded', reason: 'finished' });
      await store.sessions.appendFinish(s.id, { status: 'succeeded', reason: 'finished' });
      await tailing;
      expect(seen.map((e) => e.seq)).toEqual(Array.from({ length: 24 }, (_, i) => i + 4));
      expect(seen.at(-1)?.type).toBe('FINISH');
    });

    it('tails in the batches it stored: a burst arrives as one batch, and the last ends with FINISH', async () => {
      const s = await store.sessions.createSession(session());
      await store.events.append(
        s.id,
        Array.from({ length: 40 }, (_, i) => ({ type: 'LOG' as const, data: { i } })),
      );
      const ac = new AbortController();
      const batches: SessionEvent[][] = [];
      const tailing = (async () => {
        for await (const b of store.events.tailBatches(s.id, { afterSeq: 0, signal: ac.signal })) batches.push(b);
      })();
      while (batches.length === 0) await new Promise((r) => setTimeout(r, 5));
      await store.events.append(
        s.id,
        Array.from({ length: 10 }, (_, i) => ({ type: 'LOG' as const, data: { live: i } })),
      );
      await store.sessions.decide(s.id, { status: 'succeeded', reason: 'finished' });
      await store.sessions.appendFinish(s.id, { status: 'succeeded', reason: 'finished' });
      await tailing;
      // the whole backlog (the session's own first event and the 40) is one read
      expect(batches[0]!.map((e) => e.seq)).toEqual(Array.from({ length: 41 }, (_, i) => i + 1));
      expect(batches.every((b) => b.length > 0)).toBe(true);
      expect(batches.flat().map((e) => e.seq)).toEqual(Array.from({ length: 52 }, (_, i) => i + 1));
      expect(batches.at(-1)!.at(-1)!.type).toBe('FINISH');
    });

    it('stops a tail when its signal aborts', async () => {
      const s = await store.sessions.createSession(session());
      const ac = new AbortController();
      const seen: number[] = [];
      const tailing = (async () => {
        for await (const ev of store.events.tail(s.id, { afterSeq: 0, signal: ac.signal })) seen.push(ev.seq);
      })();
      await new Promise((r) => setTimeout(r, 50));
      ac.abort();
      await tailing;
      expect(seen).toEqual([1]);
    });

    it('records cancel requests only for sessions not yet ended, and lists decided sessions lacking FINISH', async () => {
      const s = await store.sessions.createSession(session());
      expect((await store.sessions.requestCancel(s.id))?.cancelRequested).toBe(true);
      // a cancel-requested session is not claimed
      expect(await store.sessions.claimNext('w1')).toBeNull();
      await store.sessions.decide(s.id, { status: 'cancelled', reason: 'cancelled' });
      expect(await store.sessions.requestCancel(s.id)).toBeNull();
      expect((await store.sessions.findUnfinished()).map((x) => x.id)).toContain(s.id);
      await store.sessions.appendFinish(s.id, { status: 'cancelled', reason: 'cancelled' });
      expect((await store.sessions.findUnfinished()).map((x) => x.id)).not.toContain(s.id);
    });

    it('purges sessions that ended longer ago than the retention, with their events, and keeps the rest', async () => {
      const day = 24 * 3600 * 1000;
      const t0 = Date.now();
      const running = await store.sessions.createSession(session());
      expect((await store.sessions.claimNext('w1'))?.id).toBe(running.id);
      await store.sessions.markRunning(running.id, t0, t0 + 60_000);
      const queued = await store.sessions.createSession(session());
      const ended = async (at: number) => {
        const s = await store.sessions.createSession(session());
        await store.events.append(s.id, [{ type: 'LOG', data: { line: 'x' }, rid: 1 }]);
        await store.sessions.decide(s.id, { status: 'succeeded', reason: 'finished' }, { at });
        await store.sessions.appendFinish(s.id, { status: 'succeeded', reason: 'finished' });
        return s;
      };
      const old = await ended(t0 - day);
      const recent = await ended(t0);
      // Seen from 30 days minus an hour ahead, `old` ended 30 days and 23 hours ago, `recent` 29
      // days and 23 hours ago. Looking ahead rather than deciding in the far past keeps every
      // expiry time in the future, so a server-side expiry (MongoDB TTL) cannot race the count.
      const later = t0 + 30 * day - 3600 * 1000;
      expect(await store.purgeExpired(later)).toBe(1);
      expect(await store.sessions.getSession(old.id)).toBeNull();
      expect(await store.events.read(old.id, 0, 100)).toEqual([]);
      expect(await store.events.getFinishEvent(old.id)).toBeNull();
      expect(await store.events.lastRid(old.id)).toBe(0);
      for (const kept of [recent, running, queued]) {
        expect((await store.sessions.getSession(kept.id))?.id).toBe(kept.id);
        expect((await store.events.read(kept.id, 0, 100)).length).toBeGreaterThan(0);
      }
      expect((await store.events.read(recent.id, 0, 100)).map((e) => e.type)).toEqual(['SESSION_QUEUED', 'LOG', 'FINISH']);
      // nothing is left to purge, and running or queued sessions never are, however old
      expect(await store.purgeExpired(later)).toBe(0);
      expect(await store.purgeExpired(t0 + 1000 * day)).toBe(1);
      expect((await store.sessions.findByStatus(['queued', 'running'])).map((s) => s.id).sort()).toEqual([queued.id, running.id].sort());
    });

    it('registers workers with a lease, renews it only for the current epoch, and lists them', async () => {
      const id = `w${randomBytes(4).toString('hex')}`;
      const info = { id, hostname: 'host-a', engine: 'podman 4.3.1', capacity: 4, version: '0.1.0' };
      const t0 = 1_000_000;
      const first = await store.workers.register(info, 30_000, t0);
      expect(first.previous).toBeNull();
      expect(first.worker).toMatchObject({
        ...info,
        state: 'alive',
        inUse: 0,
        startedAt: t0,
        heartbeatAt: t0,
        leaseUntil: t0 + 30_000,
        epoch: 1,
      });
      expect(await store.workers.heartbeat(id, 1, { inUse: 3, state: 'draining' }, 30_000, t0 + 5000)).toEqual({
        kept: true,
        drainRequested: false,
      });
      expect(await store.workers.get(id)).toMatchObject({ state: 'draining', inUse: 3, heartbeatAt: t0 + 5000, leaseUntil: t0 + 35_000 });
      // a restart within the lease: a new epoch, and the old one's heartbeats are refused
      const second = await store.workers.register({ ...info, capacity: 8 }, 30_000, t0 + 6000);
      expect(second.previous).toMatchObject({ state: 'draining', epoch: 1, leaseUntil: t0 + 35_000 });
      expect(second.worker).toMatchObject({ state: 'alive', capacity: 8, epoch: 2, inUse: 0, drainRequested: false });
      expect(second.worker.url).toBeUndefined();
      // the URL it advertises is kept, and replaced (or dropped) by the next registration
      const third = await store.workers.register({ ...info, url: 'http://10.0.0.5:8080' }, 30_000, t0 + 6500);
      expect(third.worker.url).toBe('http://10.0.0.5:8080');
      expect((await store.workers.get(id))?.url).toBe('http://10.0.0.5:8080');
      const fourth = await store.workers.register(info, 30_000, t0 + 6600);
      expect(fourth.worker.url).toBeUndefined();
      expect((await store.workers.heartbeat(id, 1, { inUse: 1, state: 'alive' }, 30_000, t0 + 7000)).kept).toBe(false);
      expect((await store.workers.heartbeat(id, fourth.worker.epoch, { inUse: 1, state: 'alive' }, 30_000, t0 + 7000)).kept).toBe(true);
      expect((await store.workers.list()).map((w) => w.id)).toContain(id);
      expect(await store.workers.get('nobody')).toBeNull();
    });

    it('declares a worker dead once, only after its lease; a dead worker renews nothing until it registers again', async () => {
      const id = `w${randomBytes(4).toString('hex')}`;
      const t0 = 2_000_000;
      await store.workers.register({ id, hostname: 'h', engine: 'e', capacity: 1, version: 'v' }, 10_000, t0);
      expect(await store.workers.markDead(id, t0 + 9_999)).toBe(false);
      const race = await Promise.all(Array.from({ length: 8 }, () => store.workers.markDead(id, t0 + 10_001)));
      expect(race.filter(Boolean)).toHaveLength(1);
      expect((await store.workers.get(id))?.state).toBe('dead');
      expect((await store.workers.heartbeat(id, 1, { inUse: 0, state: 'alive' }, 10_000, t0 + 10_002)).kept).toBe(false);
      const back = await store.workers.register({ id, hostname: 'h', engine: 'e', capacity: 1, version: 'v' }, 10_000, t0 + 20_000);
      expect(back.previous?.state).toBe('dead');
      expect(back.worker).toMatchObject({ state: 'alive', epoch: 2 });
      // a graceful stop releases the lease: nothing to declare dead
      await store.workers.deregister(id, 2);
      expect((await store.workers.get(id))?.state).toBe('stopped');
      expect(await store.workers.markDead(id, t0 + 100_000)).toBe(false);
    });

    it("carries an operator's drain request to the worker's next heartbeat, until it registers again", async () => {
      const id = `w${randomBytes(4).toString('hex')}`;
      const info = { id, hostname: 'h', engine: 'e', capacity: 1, version: 'v' };
      const t0 = Date.now();
      const other = await second();
      const { worker } = await store.workers.register(info, 60_000, t0);
      expect(worker.drainRequested).toBe(false);
      expect(await store.workers.heartbeat(id, worker.epoch, { inUse: 0, state: 'alive' }, 60_000, t0)).toEqual({
        kept: true,
        drainRequested: false,
      });
      // asked through another handle (an API process), heard by the worker's own
      expect(await other.workers.requestDrain(id)).toMatchObject({ id, state: 'alive', drainRequested: true });
      expect(await store.workers.heartbeat(id, worker.epoch, { inUse: 1, state: 'draining' }, 60_000, t0 + 1)).toEqual({
        kept: true,
        drainRequested: true,
      });
      // asking again while it drains is no error
      expect(await other.workers.requestDrain(id)).toMatchObject({ state: 'draining', drainRequested: true });
      // a refused heartbeat carries nothing
      expect(await store.workers.heartbeat(id, worker.epoch + 1, { inUse: 1, state: 'draining' }, 60_000, t0 + 2)).toEqual({
        kept: false,
        drainRequested: false,
      });
      // started again (an operator's choice): a fresh registration is not draining
      const again = await store.workers.register(info, 60_000, t0 + 3);
      expect(again.worker.drainRequested).toBe(false);
      expect((await store.workers.heartbeat(id, again.worker.epoch, { inUse: 0, state: 'alive' }, 60_000, t0 + 4)).drainRequested).toBe(
        false,
      );
    });

    it('refuses a drain request for an unknown worker, and for a stopped or dead one', async () => {
      const codeOf = (p: Promise<unknown>) =>
        p.then(
          () => 'no error',
          (err: unknown) => (err instanceof StoreError ? err.code : String(err)),
        );
      expect(await codeOf(store.workers.requestDrain('nobody'))).toBe(StoreErrorCode.WORKER_NOT_FOUND);
      const t0 = Date.now();
      const stopped = await store.workers.register({ id: 'ds', hostname: 'h', engine: 'e', capacity: 1, version: 'v' }, 60_000, t0);
      await store.workers.deregister('ds', stopped.worker.epoch);
      expect(await codeOf(store.workers.requestDrain('ds'))).toBe(StoreErrorCode.WORKER_NOT_LIVE);
      await store.workers.register({ id: 'dd', hostname: 'h', engine: 'e', capacity: 1, version: 'v' }, 1000, t0 - 10_000);
      expect(await store.workers.markDead('dd', t0)).toBe(true);
      expect(await codeOf(store.workers.requestDrain('dd'))).toBe(StoreErrorCode.WORKER_NOT_LIVE);
      expect((await store.workers.get('dd'))?.drainRequested).toBe(false);
    });

    describe("a worker's writes on its claims", () => {
      const info = (id: string) => ({ id, hostname: 'h', engine: 'e', capacity: 2, version: 'v' });

      it('refuse a worker declared dead: the settlement requeues, another worker claims, and the zombie changes nothing', async () => {
        const other = await second();
        const t0 = Date.now();
        const a = `za${randomBytes(3).toString('hex')}`;
        const b = `zb${randomBytes(3).toString('hex')}`;
        const s = await store.sessions.createSession(session());
        const { worker: wa } = await store.workers.register(info(a), 1000, t0);
        expect(await store.sessions.claimNext(a, { lease: { epoch: wa.epoch, now: t0 } })).toMatchObject({ id: s.id, workerId: a });
        const zombie = { workerId: a, epoch: wa.epoch };
        // a paused past its lease: another process declares it dead
        expect(await other.workers.markDead(a, t0 + 1001)).toBe(true);
        expect(await store.sessions.setContainer(s.id, 'c-zombie', zombie)).toBe('lost');
        expect(await store.sessions.markRunning(s.id, t0, t0 + 60_000, zombie)).toBe('lost');
        expect(await store.sessions.getSession(s.id)).toMatchObject({ status: 'starting', workerId: a, containerId: null });
        // the settlement puts the claim back (it names the dead worker, with no epoch)
        expect(await other.sessions.requeue(s.id, { workerId: a })).toBe('done');
        const { worker: wb } = await other.workers.register(info(b), 60_000, t0);
        const owner = { workerId: b, epoch: wb.epoch };
        expect(await other.sessions.claimNext(b, { lease: { epoch: wb.epoch } })).toMatchObject({ id: s.id, workerId: b });
        // the zombie resumes: none of its writes lands on b's claim
        expect(await store.sessions.setContainer(s.id, 'c-zombie', zombie)).toBe('lost');
        expect(await store.sessions.setContainer(s.id, 'c-zombie', { workerId: a })).toBe('lost');
        expect(await store.sessions.requeue(s.id, zombie)).toBe('lost');
        expect(await other.sessions.setContainer(s.id, 'c-b', owner)).toBe('done');
        expect(await store.sessions.markRunning(s.id, t0, t0 + 1, zombie)).toBe('lost');
        expect(await other.sessions.markRunning(s.id, t0 + 5, t0 + 60_005, owner)).toBe('done');
        const decided = await store.sessions.decide(
          s.id,
          { status: 'failed', reason: 'runtime_error', message: 'zombie' },
          { claimedBy: zombie },
        );
        expect(decided.won).toBe(false);
        expect(await store.sessions.getSession(s.id)).toMatchObject({
          status: 'running',
          workerId: b,
          containerId: 'c-b',
          startedAt: t0 + 5,
          deadlineAt: t0 + 60_005,
          reason: null,
        });
        // b's own decision still wins
        expect((await other.sessions.decide(s.id, { status: 'succeeded', reason: 'finished' }, { claimedBy: owner })).won).toBe(true);
      });

      it('refuse an older epoch of the same worker, and say `decided` when the session is still its own but ended', async () => {
        const t0 = Date.now();
        const w = `ze${randomBytes(3).toString('hex')}`;
        const first = await store.workers.register(info(w), 60_000, t0);
        const s1 = await store.sessions.createSession(session());
        expect(await store.sessions.claimNext(w, { lease: { epoch: first.worker.epoch } })).toMatchObject({ id: s1.id });
        const old = { workerId: w, epoch: first.worker.epoch };
        // the same MGX_OWNER registered again (a restart, or the lease lost and taken again)
        const second = await store.workers.register(info(w), 60_000, t0);
        const now = { workerId: w, epoch: second.worker.epoch };
        expect(await store.sessions.setContainer(s1.id, 'c-old', old)).toBe('lost');
        expect(await store.sessions.markRunning(s1.id, t0, t0 + 1, old)).toBe('lost');
        expect(await store.sessions.requeue(s1.id, old)).toBe('lost');
        // the new life adopts it under its own epoch; draining does not stop its writes
        expect(await store.workers.heartbeat(w, second.worker.epoch, { inUse: 1, state: 'draining' }, 60_000, t0)).toMatchObject({
          kept: true,
        });
        expect(await store.sessions.setContainer(s1.id, 'c-new', now)).toBe('done');
        // a cancel decided it while it started: still this worker's, so `decided`, not `lost`
        expect((await store.sessions.decide(s1.id, { status: 'cancelled', reason: 'cancelled' })).won).toBe(true);
        expect(await store.sessions.markRunning(s1.id, t0, t0 + 1, now)).toBe('decided');
        expect(await store.sessions.requeue(s1.id, now)).toBe('decided');
        expect(await store.sessions.getSession(s1.id)).toMatchObject({ status: 'cancelled', containerId: 'c-new', startedAt: null });
        // a stopped worker's writes are refused too, and a session that does not exist is lost
        await store.workers.deregister(w, second.worker.epoch);
        const s2 = await store.sessions.createSession(session());
        await store.sessions.claimNext(w);
        expect(await store.sessions.setContainer(s2.id, 'c', now)).toBe('lost');
        expect(await store.sessions.setContainer('missing', 'c', now)).toBe('lost');
        // without a claim named, the status alone decides (tools and tests that play a worker)
        expect(await store.sessions.markRunning(s2.id, t0, t0 + 1)).toBe('done');
      });
    });

    describe('fleet claims', () => {
      /** Decided and finished: a claimed session holds its slots and workspace until its FINISH (its container is gone). */
      const ended = async (st: Store, id: string, outcome: Outcome) => {
        await st.sessions.decide(id, outcome);
        await st.sessions.appendFinish(id, outcome);
      };
      const claimIds = async (st: Store, worker: string, options: Parameters<Store['sessions']['claimNext']>[1], n: number) => {
        const ids: (string | null)[] = [];
        for (let i = 0; i < n; i++) ids.push((await st.sessions.claimNext(worker, options))?.id ?? null);
        return ids;
      };

      it('holds the per-tenant limit across two workers on two store instances, skipping only the full tenant', async () => {
        const other = await second();
        const a = [];
        for (let i = 0; i < 4; i++) a.push(await store.sessions.createSession(session({ tenant: 'ta' })));
        const b1 = await store.sessions.createSession(session({ tenant: 'tb' }));
        const b2 = await store.sessions.createSession(session({ tenant: 'tb' }));
        const opts = { maxPerTenant: 2 };
        expect((await store.sessions.claimNext('w1', opts))?.id).toBe(a[0]!.id);
        expect((await other.sessions.claimNext('w2', opts))?.id).toBe(a[1]!.id);
        // ta is full fleet-wide: the other tenant's sessions go ahead, oldest first
        expect((await store.sessions.claimNext('w1', opts))?.id).toBe(b1.id);
        expect((await other.sessions.claimNext('w2', opts))?.id).toBe(b2.id);
        expect(await store.sessions.claimNext('w1', opts)).toBeNull();
        // running still counts; an ended session frees its slot, and so does a requeued claim
        await other.sessions.markRunning(a[1]!.id, 1, 2);
        expect(await other.sessions.claimNext('w2', opts)).toBeNull();
        await ended(store, a[0]!.id, { status: 'succeeded', reason: 'finished' });
        expect((await other.sessions.claimNext('w2', opts))?.id).toBe(a[2]!.id);
        expect(await store.sessions.claimNext('w1', opts)).toBeNull();
        expect(await other.sessions.requeue(a[2]!.id)).toBe('done');
        expect((await store.sessions.claimNext('w1', opts))?.id).toBe(a[2]!.id);
        // excludeTenants still applies on top of the limit
        await ended(store, b1.id, { status: 'failed', reason: 'lost' });
        const b3 = await store.sessions.createSession(session({ tenant: 'tb' }));
        expect(await store.sessions.claimNext('w1', { ...opts, excludeTenants: ['tb'] })).toBeNull();
        expect((await store.sessions.claimNext('w1', opts))?.id).toBe(b3.id);
        // without a limit the rest is claimed as before
        expect((await other.sessions.claimNext('w2'))?.id).toBe(a[3]!.id);
      });

      it('never exceeds the per-tenant limit when claims from two instances race', async () => {
        const other = await second();
        const tenants = ['r1', 'r2', 'r3'];
        for (let i = 0; i < 5; i++) for (const tenant of tenants) await store.sessions.createSession(session({ tenant }));
        const claims = await Promise.all(
          Array.from({ length: 16 }, (_, i) => (i % 2 ? other : store).sessions.claimNext(`w${i % 4}`, { maxPerTenant: 2 })),
        );
        const raced = claims.filter((c) => c !== null);
        for (const tenant of tenants) expect(raced.filter((c) => c.tenant === tenant).length).toBeLessThanOrEqual(2);
        // what the race left (a claim may find a tenant full while another's claim is in flight) is claimed now
        const rest = await claimIds(store, 'w9', { maxPerTenant: 2 }, 7);
        expect(rest.at(-1)).toBeNull();
        const claimed = await store.sessions.findByStatus(['starting']);
        expect(claimed.map((c) => c.id).sort()).toEqual([...raced.map((c) => c.id), ...rest.filter((id) => id !== null)].sort());
        for (const tenant of tenants) expect(claimed.filter((c) => c.tenant === tenant)).toHaveLength(2);
      });

      it('caps claimed sessions fleet-wide', async () => {
        const other = await second();
        for (let i = 0; i < 5; i++) await store.sessions.createSession(session({ tenant: `c${i}` }));
        const opts = { maxClaimed: 3 };
        const first = await claimIds(store, 'w1', opts, 2);
        const next = await claimIds(other, 'w2', opts, 2);
        expect(first.every((id) => id !== null)).toBe(true);
        expect(next[0]).not.toBeNull();
        expect(next[1]).toBeNull();
        await store.sessions.markRunning(first[0]!, 1, 2);
        expect(await store.sessions.claimNext('w1', opts)).toBeNull();
        await ended(other, first[0]!, { status: 'cancelled', reason: 'cancelled' });
        expect(await other.sessions.claimNext('w2', opts)).not.toBeNull();
        expect(await other.sessions.claimNext('w2', opts)).toBeNull();
        // a larger cap (or none) lets the rest through
        expect(await store.sessions.claimNext('w1', { maxClaimed: 5 })).not.toBeNull();
      });

      it('claims only under a valid lease: current epoch, alive, unexpired', async () => {
        const now = Date.now();
        const info = (id: string) => ({ id, hostname: 'h', engine: 'e', capacity: 2, version: 'v' });
        for (let i = 0; i < 3; i++) await store.sessions.createSession(session());
        // never registered
        expect(await store.sessions.claimNext('ghost', { lease: { epoch: 1 } })).toBeNull();
        const { worker } = await store.workers.register(info('lw'), 60_000, now);
        expect(await store.sessions.claimNext('lw', { lease: { epoch: worker.epoch } })).toMatchObject({ workerId: 'lw' });
        // a stale epoch: the worker registered again since
        const again = await store.workers.register(info('lw'), 60_000, now);
        expect(await store.sessions.claimNext('lw', { lease: { epoch: worker.epoch } })).toBeNull();
        // an expired lease, though nobody declared the worker dead yet
        expect(await store.sessions.claimNext('lw', { lease: { epoch: again.worker.epoch, now: now + 60_001 } })).toBeNull();
        // draining
        expect((await store.workers.heartbeat('lw', again.worker.epoch, { inUse: 1, state: 'draining' }, 60_000, now)).kept).toBe(true);
        expect(await store.sessions.claimNext('lw', { lease: { epoch: again.worker.epoch } })).toBeNull();
        expect((await store.workers.heartbeat('lw', again.worker.epoch, { inUse: 1, state: 'alive' }, 60_000, now)).kept).toBe(true);
        expect(await store.sessions.claimNext('lw', { lease: { epoch: again.worker.epoch } })).not.toBeNull();
        // dead
        const short = await store.workers.register(info('dw'), 1000, now - 10_000);
        expect(await store.workers.markDead('dw', now)).toBe(true);
        expect(await store.sessions.claimNext('dw', { lease: { epoch: short.worker.epoch, now: now - 9_999 } })).toBeNull();
        // stopped
        const stopping = await store.workers.register(info('sw'), 60_000, now);
        await store.workers.deregister('sw', stopping.worker.epoch);
        expect(await store.sessions.claimNext('sw', { lease: { epoch: stopping.worker.epoch } })).toBeNull();
        // what was refused is still queued
        expect((await store.sessions.findByStatus(['queued'])).length).toBe(1);
      });

      it('gives up a new workspace when its first claim goes back to the queue, and keeps one a session ran on', async () => {
        const other = await second();
        const ws = { workspaces: { shared: false } };
        const fresh = `ws-${randomBytes(4).toString('hex')}`;
        const s1 = await store.sessions.createSession(session({ workspaceId: fresh }));
        expect((await store.sessions.claimNext('wa', ws))?.id).toBe(s1.id);
        expect(await store.sessions.requeue(s1.id)).toBe('done');
        // nothing ran there: another worker may take it
        expect(await store.sessions.workspaceHolder(fresh)).toBeNull();
        expect((await other.sessions.claimNext('wb', ws))?.id).toBe(s1.id);
        await other.sessions.markRunning(s1.id, 1, 2);
        await ended(other, s1.id, { status: 'succeeded', reason: 'finished' });
        // a later session there that is requeued leaves the holder as it is
        const s2 = await store.sessions.createSession(session({ workspaceId: fresh }));
        expect((await other.sessions.claimNext('wb', ws))?.id).toBe(s2.id);
        expect(await other.sessions.requeue(s2.id)).toBe('done');
        expect(await store.sessions.workspaceHolder(fresh)).toBe('wb');
        expect(await store.sessions.claimNext('wa', ws)).toBeNull();
      });

      it('keeps a workspace on the worker that holds it, one session at a time, in queue order', async () => {
        const other = await second();
        const ws = { workspaces: { shared: false } };
        const ws1 = `ws-${randomBytes(4).toString('hex')}`;
        const ws2 = `ws-${randomBytes(4).toString('hex')}`;
        const x1 = await store.sessions.createSession(session({ workspaceId: ws1 }));
        const x2 = await store.sessions.createSession(session({ workspaceId: ws1 }));
        const y1 = await store.sessions.createSession(session({ workspaceId: ws2 }));
        expect(await store.sessions.workspaceHolder(ws1)).toBeNull();
        expect((await store.sessions.claimNext('wa', ws))?.id).toBe(x1.id);
        expect(await other.sessions.workspaceHolder(ws1)).toBe('wa');
        // x2 waits while x1 is claimed; y1 (a new workspace) goes to whoever claims first
        expect((await other.sessions.claimNext('wb', ws))?.id).toBe(y1.id);
        expect(await store.sessions.workspaceHolder(ws2)).toBe('wb');
        expect(await store.sessions.claimNext('wa', ws)).toBeNull();
        expect((await other.sessions.findQueuedOnWorkspacesOf('wa')).map((s) => s.id)).toEqual([x2.id]);
        expect(await other.sessions.findQueuedOnWorkspacesOf('wb')).toEqual([]);
        // x1 goes back to the queue: it is claimed again before x2, which never jumps it
        expect(await store.sessions.requeue(x1.id)).toBe('done');
        expect((await store.sessions.claimNext('wa', ws))?.id).toBe(x1.id);
        await store.sessions.markRunning(x1.id, 1, 2);
        expect(await store.sessions.claimNext('wa', ws)).toBeNull();
        await ended(store, x1.id, { status: 'succeeded', reason: 'finished' });
        // ended: x2 is free to go, but only to the holder
        expect(await other.sessions.claimNext('wb', ws)).toBeNull();
        expect((await store.sessions.claimNext('wa', ws))?.id).toBe(x2.id);
        expect(await store.sessions.findQueuedOnWorkspacesOf('wa')).toEqual([]);
      });

      it('does not hold a workspace for a queued session whose cancel is requested', async () => {
        const ws = { workspaces: { shared: false } };
        const wsId = `ws-${randomBytes(4).toString('hex')}`;
        const first = await store.sessions.createSession(session({ workspaceId: wsId }));
        const later = await store.sessions.createSession(session({ workspaceId: wsId }));
        await store.sessions.requestCancel(first.id);
        expect((await store.sessions.claimNext('wa', ws))?.id).toBe(later.id);
        expect(await store.sessions.workspaceHolder(wsId)).toBe('wa');
        // a claimed session holds its workspace for every tenant; a full tenant's session elsewhere waits too
        const other = `ws-${randomBytes(4).toString('hex')}`;
        const full = await store.sessions.createSession(session({ tenant: 'full', workspaceId: other }));
        await store.sessions.createSession(session({ tenant: 'free', workspaceId: other }));
        const blocker = await store.sessions.createSession(
          session({ tenant: 'full', workspaceId: `ws-${randomBytes(4).toString('hex')}` }),
        );
        expect((await store.sessions.claimNext('wb', { ...ws, maxPerTenant: 1 }))?.id).toBe(full.id);
        expect(await store.sessions.claimNext('wb', { ...ws, maxPerTenant: 1 })).toBeNull();
        await ended(store, full.id, { status: 'succeeded', reason: 'finished' });
        expect((await store.sessions.claimNext('wb', { ...ws, maxPerTenant: 1 }))?.tenant).toBe('free');
        expect((await store.sessions.claimNext('wb', { ...ws, maxPerTenant: 1 }))?.id).toBe(blocker.id);
      });

      it('lets any worker claim on a shared workspace root, still one session at a time', async () => {
        const other = await second();
        const shared = { workspaces: { shared: true } };
        const wsId = `ws-${randomBytes(4).toString('hex')}`;
        const s1 = await store.sessions.createSession(session({ workspaceId: wsId }));
        const s2 = await store.sessions.createSession(session({ workspaceId: wsId }));
        expect((await store.sessions.claimNext('wa', shared))?.id).toBe(s1.id);
        expect(await other.sessions.claimNext('wb', shared)).toBeNull();
        await ended(store, s1.id, { status: 'failed', reason: 'lost' });
        expect((await other.sessions.claimNext('wb', shared))?.id).toBe(s2.id);
        expect(await store.sessions.workspaceHolder(wsId)).toBe('wb');
      });
    });

    it('purges by the retention it is opened with now, not the one in force when sessions ended', async () => {
      const day = 24 * 3600 * 1000;
      const now = Date.now();
      const ended = async (at: number) => {
        const s = await store.sessions.createSession(session());
        await store.events.append(s.id, [{ type: 'LOG', data: { line: 'x' }, rid: 1 }]);
        await store.sessions.decide(s.id, { status: 'succeeded', reason: 'finished' }, { at });
        await store.sessions.appendFinish(s.id, { status: 'succeeded', reason: 'finished' });
        return s.id;
      };
      // ended under a retention of 30 days
      const twoDays = await ended(now - 2 * day);
      const tenDays = await ended(now - 10 * day);
      const justNow = await ended(now);
      const all = [twoDays, tenDays, justNow];
      expect(await store.purgeExpired(now)).toBe(0);

      // the setting becomes 0, keep: nothing goes, however far ahead
      const keep = await openStore({ retentionDays: 0, sameAs: store });
      expect(await keep.purgeExpired(now + 1000 * day)).toBe(0);
      for (const id of all) expect((await keep.events.read(id, 0, 10)).map((e) => e.type)).toEqual(['SESSION_QUEUED', 'LOG', 'FINISH']);

      // the setting becomes 1 day: what ended more than a day ago goes, with its events
      const short = await openStore({ retentionDays: 1, sameAs: store });
      expect(await short.purgeExpired(now)).toBe(2);
      for (const id of [twoDays, tenDays]) {
        expect(await short.sessions.getSession(id)).toBeNull();
        expect(await short.events.read(id, 0, 10)).toEqual([]);
      }
      expect((await short.sessions.getSession(justNow))?.id).toBe(justNow);
      expect(await short.events.read(justNow, 0, 10)).toHaveLength(3);
      // and what ends later goes a day after it ended
      expect(await short.purgeExpired(now + day - 1000)).toBe(0);
      expect(await short.purgeExpired(now + day + 1000)).toBe(1);
    });

    it('keeps everything when the retention is 0', async () => {
      const keep = await openStore({ retentionDays: 0 });
      const s = await keep.sessions.createSession(session());
      await keep.sessions.decide(s.id, { status: 'failed', reason: 'lost' }, { at: Date.now() - 1000 * 24 * 3600 * 1000 });
      await keep.sessions.appendFinish(s.id, { status: 'failed', reason: 'lost' });
      expect(await keep.purgeExpired(Date.now() + 1000 * 24 * 3600 * 1000)).toBe(0);
      expect((await keep.events.read(s.id, 0, 10)).map((e) => e.type)).toEqual(['SESSION_QUEUED', 'FINISH']);
    });

    it('keeps the URL a worker advertises, and forgets it when a registration gives none', async () => {
      const id = `wu-${randomBytes(4).toString('hex')}`;
      const info = { id, hostname: 'h', engine: 'e', capacity: 1, version: 'v' };
      expect((await store.workers.register({ ...info, url: 'http://10.0.0.5:8080' }, 10_000)).worker.url).toBe('http://10.0.0.5:8080');
      expect((await (await second()).workers.get(id))?.url).toBe('http://10.0.0.5:8080');
      await store.workers.register(info, 10_000);
      expect((await store.workers.get(id))?.url).toBeUndefined();
    });

    describe('workspaces', () => {
      const wsId = () => `ws-${randomBytes(4).toString('hex')}`;

      it('the first tenant to own a workspace keeps it: a second tenant gets the first one back, also from another instance', async () => {
        const other = await second();
        const id = wsId();
        const [a, b] = await Promise.all([store.workspaces.own(id, 'ta'), other.workspaces.own(id, 'tb')]);
        expect(a.tenant).toBe(b.tenant);
        const owner = a.tenant;
        expect((await store.workspaces.own(id, owner === 'ta' ? 'tb' : 'ta')).tenant).toBe(owner);
        expect(await other.workspaces.get(id)).toMatchObject({ id, tenant: owner, holder: null });
        expect(await store.workspaces.get(wsId())).toBeNull();
      });

      it("a workspace sessions used before it was owned belongs to its first session's tenant", async () => {
        const id = wsId();
        await store.sessions.createSession(session({ tenant: 'first', workspaceId: id }));
        await store.sessions.createSession(session({ tenant: 'later', workspaceId: id }));
        expect((await store.workspaces.own(id, 'later')).tenant).toBe('first');
      });

      it("lists a tenant's workspaces newest first, paged, with each one's holder and last session", async () => {
        const ids = [wsId(), wsId(), wsId()];
        for (const id of ids) await store.workspaces.own(id, 'lister');
        await store.workspaces.own(wsId(), 'someone-else');
        const s1 = await store.sessions.createSession(session({ tenant: 'lister', workspaceId: ids[0]! }));
        const s2 = await store.sessions.createSession(session({ tenant: 'lister', workspaceId: ids[0]! }));
        expect((await store.sessions.claimNext('wl', { workspaces: { shared: false } }))?.id).toBe(s1.id);
        const p1 = await store.workspaces.list({ tenant: 'lister', limit: 2 });
        expect(p1.items.map((w) => w.id)).toEqual([ids[2], ids[1]]);
        expect(p1.items[0]).toMatchObject({ tenant: 'lister', holder: null, lastSession: null });
        const p2 = await store.workspaces.list({ tenant: 'lister', limit: 2, cursor: p1.nextCursor! });
        expect(p2.items.map((w) => w.id)).toEqual([ids[0]]);
        expect(p2.nextCursor).toBeNull();
        expect(p2.items[0]).toMatchObject({ holder: 'wl', lastSession: { id: s2.id, status: 'queued' } });
        const all = await store.workspaces.list({ limit: 200 });
        expect(all.items.map((w) => w.tenant)).toContain('someone-else');
      });

      it('a workspace is active from its first queued session until the FINISH of the last one, and cannot be removed meanwhile', async () => {
        const id = wsId();
        await store.workspaces.own(id, 't1');
        expect(await store.workspaces.activeSession(id)).toBeNull();
        const s = await store.sessions.createSession(session({ workspaceId: id }));
        expect(await store.workspaces.activeSession(id)).toMatchObject({ id: s.id, status: 'queued' });
        expect(await store.workspaces.remove(id)).toBe(false);
        await store.sessions.claimNext('wr', { workspaces: { shared: false } });
        await store.sessions.markRunning(s.id, Date.now(), Date.now() + 60_000);
        expect(await store.workspaces.activeSession(id)).toMatchObject({ id: s.id, status: 'running' });
        // decided, its container not yet torn down: still active
        await store.sessions.decide(s.id, { status: 'succeeded', reason: 'finished' });
        expect(await store.workspaces.activeSession(id)).toMatchObject({ id: s.id, status: 'succeeded' });
        expect(await store.workspaces.remove(id)).toBe(false);
        await store.sessions.appendFinish(s.id, { status: 'succeeded', reason: 'finished' });
        expect(await store.workspaces.activeSession(id)).toBeNull();
        expect(await store.workspaces.remove(id)).toBe(true);
        expect(await store.workspaces.get(id)).toBeNull();
        expect(await store.sessions.workspaceHolder(id)).toBeNull();
        expect(await store.workspaces.remove(id)).toBe(false);
        // removed: its name stays with the tenant whose sessions used it
        expect((await store.workspaces.own(id, 'next')).tenant).toBe('t1');
        // one no session used goes to the next tenant that uses it
        const unused = wsId();
        await store.workspaces.own(unused, 't1');
        expect(await store.workspaces.remove(unused)).toBe(true);
        expect((await store.workspaces.own(unused, 'next')).tenant).toBe('next');
      });

      it('a write to the files keeps a session created meanwhile queued until it ends or expires; none starts beside an active session', async () => {
        const id = wsId();
        await store.workspaces.own(id, 't1');
        const now = Date.now();
        expect(await store.workspaces.beginWrite(id, 'ww', 'tok-1', now + 60_000, now)).toBeNull();
        const s = await store.sessions.createSession(session({ workspaceId: id }));
        const claim = { workspaces: { shared: false } };
        expect(await store.sessions.claimNext('ww', claim)).toBeNull();
        expect(await store.workspaces.renewWrite(id, 'tok-1', Date.now() + 60_000)).toBe(true);
        await store.workspaces.endWrite(id, 'tok-1');
        expect(await store.workspaces.renewWrite(id, 'tok-1', Date.now() + 60_000)).toBe(false);
        expect((await store.sessions.claimNext('ww', claim))?.id).toBe(s.id);
        // the session is active now: a write is refused, naming it
        expect(await store.workspaces.beginWrite(id, 'ww', 'tok-2', Date.now() + 60_000)).toMatchObject({ id: s.id, status: 'starting' });
        // a write whose writer died holds the queue only until it expires
        const other = wsId();
        await store.workspaces.own(other, 't1');
        expect(await store.workspaces.beginWrite(other, 'ww', 'tok-3', Date.now() + 150)).toBeNull();
        const next = await store.sessions.createSession(session({ workspaceId: other }));
        expect(await store.sessions.claimNext('ww', claim)).toBeNull();
        await new Promise((r) => setTimeout(r, 200));
        expect((await store.sessions.claimNext('ww', claim))?.id).toBe(next.id);
      });

      it('files written before any session make this worker the holder; a later claim elsewhere waits for it', async () => {
        const id = wsId();
        await store.workspaces.own(id, 't1');
        expect(await store.workspaces.hold(id, 'wh')).toBe('wh');
        expect(await store.workspaces.hold(id, 'other')).toBe('wh');
        expect((await store.workspaces.get(id))?.holder).toBe('wh');
        const s = await store.sessions.createSession(session({ workspaceId: id }));
        expect(await store.sessions.claimNext('other', { workspaces: { shared: false } })).toBeNull();
        expect((await store.sessions.claimNext('wh', { workspaces: { shared: false } }))?.id).toBe(s.id);
      });
    });
  });
}
