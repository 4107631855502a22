import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MongoClient } from 'mongodb';
import { openStore, StoreError, type Store } from '../src/index.js';
import { newSession, storeContract, type ContractFaults, type ContractStoreOptions } from './contract.js';
import { LEGACY_TTL_INDEXES, MongoStore } from '../src/mongodb-store.js';

/**
 * The store contract against a real MongoDB, when MONGODB_URI names one (a replica set runs
 * every code path: transactions and change streams, then the ordered steps and polling a
 * standalone server gets). Each store gets its own database, dropped when it closes.
 * See test/README.md for starting a local replica set.
 */
const uri = process.env.MONGODB_URI;
if (!uri) {
  console.log('SKIPPED mongodb store contract: MONGODB_URI is not set (no MongoDB server on this machine; see test/README.md)');
}

(uri ? describe : describe.skip)('mongodb store (MONGODB_URI)', () => {
  // only used when the suite runs, so `uri` is set
  const serverUri = uri ?? '';
  let admin: MongoClient;
  beforeAll(async () => {
    admin = await new MongoClient(serverUri).connect();
  });
  afterAll(async () => {
    await admin?.close();
  });

  type Paths = { useTransactions?: boolean; useChangeStreams?: boolean };

  /** How many handles each test database has open: the last to close drops it. */
  const handles = new Map<string, number>();
  /** The database of each store the contract opened, so another handle can open on it. */
  const databases = new WeakMap<object, string>();

  /** A store on `dbName` whose close() also drops that database (once no other handle has it open). */
  const disposable = async (dbName: string, retentionDays: number, paths: Paths): Promise<Store> => {
    const store = await MongoStore.open({ uri: serverUri, dbName, retentionDays, tailPollMs: 100, ...paths });
    handles.set(dbName, (handles.get(dbName) ?? 0) + 1);
    const handle: Store = {
      kind: store.kind,
      sessions: store.sessions,
      events: store.events,
      workers: store.workers,
      workspaces: store.workspaces,
      describe: () => store.describe(),
      purgeExpired: (now?: number) => store.purgeExpired(now),
      close: async () => {
        try {
          await store.close();
        } finally {
          const left = (handles.get(dbName) ?? 1) - 1;
          handles.set(dbName, left);
          if (left === 0) await admin.db(dbName).dropDatabase();
        }
      },
    };
    databases.set(handle, dbName);
    return handle;
  };
  const freshName = () => `mgx_test_${randomBytes(6).toString('hex')}`;
  const fresh =
    (paths: Paths) =>
    ({ retentionDays, sameAs }: ContractStoreOptions): Promise<Store> =>
      disposable((sameAs && databases.get(sameAs)) ?? freshName(), retentionDays, paths);

  const faults: ContractFaults = {
    // a collection validator: the server refuses the marked event wherever it is in a batch
    rejectEventsMarked: async (store, marker) => {
      const dbName = databases.get(store);
      if (!dbName) throw new Error('not a store of this suite');
      const db = admin.db(dbName);
      await db.command({
        collMod: 'events',
        validator: { data: { $not: { $regex: marker } } },
        validationLevel: 'strict',
        validationAction: 'error',
      });
      return async () => {
        await db.command({ collMod: 'events', validator: {} });
      };
    },
  };
  storeContract('mongodb', fresh({}), faults);
  // the path a standalone server takes, checked on the same server
  storeContract('mongodb, ordered steps and polling', fresh({ useTransactions: false, useChangeStreams: false }), faults);

  it('tails writes made through another connection (change stream, else polling)', async () => {
    const dbName = freshName();
    const a = await disposable(dbName, 0, {});
    // a second connection, as another process would have, with its own in-process wake-ups
    const b = await MongoStore.open({ uri: serverUri, dbName, retentionDays: 0 });
    try {
      const s = await b.createSession(newSession(`x${randomBytes(6).toString('hex')}`));
      const ac = new AbortController();
      const seen: number[] = [];
      const tailing = (async () => {
        for await (const ev of a.events.tail(s.id, { afterSeq: 0, signal: ac.signal })) seen.push(ev.seq);
      })();
      for (let i = 0; i < 10; i++) await b.append(s.id, [{ type: 'LOG', data: { i } }]);
      await b.decide(s.id, { status: 'succeeded', reason: 'finished' });
      await b.appendFinish(s.id, { status: 'succeeded', reason: 'finished' });
      await tailing;
      expect(seen).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    } finally {
      await b.close();
      await a.close(); // drops the database
    }
  });

  it('keeps seq dense and each runner event once when two processes append to one session without transactions', async () => {
    const dbName = freshName();
    const paths = { useTransactions: false, useChangeStreams: false };
    const a = await disposable(dbName, 0, paths);
    const b = await disposable(dbName, 0, paths);
    try {
      const s = await a.sessions.createSession(newSession(`r${randomBytes(6).toString('hex')}`));
      // every runner batch goes through both (a re-send through another process), with platform events of each between
      const sends: Promise<unknown>[] = [];
      for (let first = 1; first <= 40; first += 4) {
        const batch = [0, 1, 2, 3].map((i) => ({ type: 'LOG' as const, data: { rid: first + i }, rid: first + i }));
        sends.push(a.events.append(s.id, batch), b.events.append(s.id, batch));
        sends.push((first % 8 === 1 ? a : b).events.append(s.id, [{ type: 'LOG', data: { platform: first } }]));
      }
      await Promise.all(sends);
      const [x, y] = await Promise.all([
        a.sessions.decide(s.id, { status: 'succeeded', reason: 'finished' }),
        b.sessions.decide(s.id, { status: 'failed', reason: 'lost' }),
      ]);
      expect([x.won, y.won].filter(Boolean)).toHaveLength(1);
      const finishes = await Promise.all([
        a.sessions.appendFinish(s.id, { status: 'succeeded', reason: 'finished' }),
        b.sessions.appendFinish(s.id, { status: 'succeeded', reason: 'finished' }),
      ]);
      expect(finishes[0].seq).toBe(finishes[1].seq);
      const events = await a.events.read(s.id, 0, 1000);
      expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
      const rids = events.flatMap((e) => (typeof e.data.rid === 'number' ? [e.data.rid] : []));
      expect(rids).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
      expect(events.filter((e) => e.data.platform !== undefined)).toHaveLength(10);
      expect(events.at(-1)?.type).toBe('FINISH');
      expect(events.at(-1)?.seq).toBe(finishes[0].seq);
      expect(await b.events.lastRid(s.id)).toBe(40);
      expect((await b.sessions.getSession(s.id))?.lastSeq).toBe(finishes[0].seq);
    } finally {
      await b.close();
      await a.close();
    }
  });

  it('drops the TTL indexes of earlier versions, so an expiry stamped then does not outlive a change of the retention', async () => {
    const dbName = freshName();
    const db = admin.db(dbName);
    for (const [collection, index] of LEGACY_TTL_INDEXES) {
      await db.collection(collection).createIndex({ expireAt: 1 }, { name: index, expireAfterSeconds: 0 });
    }
    const store = await disposable(dbName, 0, {});
    try {
      for (const collection of ['events', 'sessions']) {
        const indexes = await db.collection(collection).listIndexes().toArray();
        expect(indexes.filter((i) => 'expireAfterSeconds' in i)).toEqual([]);
      }
      // a second open finds nothing to drop
      await (await disposable(dbName, 0, {})).close();
    } finally {
      await store.close();
    }
  });

  it('keeps agent JSON exactly, whatever its keys', async () => {
    const store = await disposable(freshName(), 0, {});
    try {
      const id = `j${randomBytes(6).toString('hex')}`;
      await store.sessions.createSession(
        newSession(id, { options: { $schema: 'x', 'a.b': 1 }, limits: { memoryBytes: 3 * 1024 ** 3, cpuQuota: 1, timeoutMs: 1 } }),
      );
      const data = { $ref: '#/x', 'dotted.key': [1, { nested: null }], deep: JSON.parse('['.repeat(150) + ']'.repeat(150)) as unknown };
      await store.events.append(id, [{ type: 'TOOL_CALL', data }]);
      expect((await store.events.read(id, 1, 1))[0]?.data).toEqual(data);
      expect((await store.sessions.getSession(id))?.options).toEqual({ $schema: 'x', 'a.b': 1 });
      expect((await store.sessions.getSession(id))?.limits.memoryBytes).toBe(3 * 1024 ** 3);
    } finally {
      await store.close();
    }
  });
});

// These need no server: they check how the adapter fails when there is none.
describe('mongodb store without a server', () => {
  it('fails to open with STORE_UNAVAILABLE, naming the host and never the password', async () => {
    const err: unknown = await MongoStore.open({
      uri: 'mongodb://mgxuser:s3cret-Pa55@127.0.0.1:1/?serverSelectionTimeoutMS=500',
      dbName: 'mgx',
      retentionDays: 30,
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StoreError);
    const e = err as StoreError;
    expect(e.code).toBe('STORE_UNAVAILABLE');
    expect(e.message).toContain('mongodb://127.0.0.1:1');
    expect(e.message).toContain('database mgx');
    expect(e.message).not.toContain('s3cret-Pa55');
    expect(e.message).not.toContain('mgxuser');
  });

  it('refuses a malformed URI the same way, without echoing its credentials', async () => {
    await expect(MongoStore.open({ uri: 'mongodb://mgxuser:s3cret-Pa55@', dbName: 'mgx', retentionDays: 30 })).rejects.toSatisfy(
      (e: unknown) => e instanceof StoreError && e.code === 'STORE_UNAVAILABLE' && !e.message.includes('s3cret-Pa55'),
    );
  });

  it('refuses a write timeout that would not bound anything', async () => {
    for (const writeTimeoutMs of [0, -1, 1.5]) {
      await expect(
        MongoStore.open({ uri: 'mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500', dbName: 'mgx', retentionDays: 30, writeTimeoutMs }),
      ).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE', message: expect.stringContaining('writeTimeoutMs') });
    }
  });

  it('is what openStore opens for MGX_EVENT_STORE=mongodb', async () => {
    await expect(
      openStore({
        store: {
          kind: 'mongodb',
          mongodbUri: 'mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500',
          mongodbDb: 'mgx',
          dataDir: '/nonexistent',
          workspaceRoot: '/nonexistent/workspaces',
          retentionDays: 30,
        },
      }),
    ).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE', message: expect.stringContaining('MongoDB store at mongodb://127.0.0.1:1') });
  });
});
