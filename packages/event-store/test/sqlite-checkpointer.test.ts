import { existsSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SqliteStore, StoreError } from '../src/index.js';
import { SqliteCheckpointer } from '../src/sqlite-checkpointer.js';
import { newSession } from './contract.js';

const newFile = () => join(mkdtempSync(join(tmpdir(), 'mgx-ckpt-')), 'mgx.sqlite');

/** Appends `n` events of about 500 bytes (no overflow pages) to a new session of `store`, in batches of 100. */
async function fill(store: SqliteStore, id: string, n: number): Promise<void> {
  await store.createSession(newSession(id));
  const text = 'x'.repeat(500);
  for (let from = 0; from < n; from += 100) {
    await store.append(
      id,
      Array.from({ length: 100 }, (_, i) => ({ type: 'LOG' as const, rid: from + i + 1, data: { text, i: from + i } })),
    );
  }
}

/** Polls until `cond` holds; throws after `limitMs` (a bound, not a measurement). */
async function until(cond: () => boolean, limitMs: number, what: string): Promise<void> {
  const end = Date.now() + limitMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`not within ${limitMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('SQLite checkpoint thread', () => {
  it("copies the WAL into the database file while the store is open, the writer's own threshold not reached", async () => {
    const file = newFile();
    const store = SqliteStore.open({ file });
    const before = statSync(file).size;
    // ~1.6 MB of events in ~900 WAL frames: under both 1000 (SQLite's default) and the writer's 10000
    await fill(store, 'ckpt1', 3000);
    await until(() => statSync(file).size > before + 1_200_000, 30_000, 'the database file holds the events');
    // and they read back whole, through this handle and another
    const other = SqliteStore.open({ file, checkpointThread: false });
    for (const s of [store, other]) {
      const events = await s.read('ckpt1', 0, 5000);
      expect(events.map((e) => e.seq)).toEqual(Array.from({ length: 3001 }, (_, i) => i + 1));
    }
    await other.close();
    await store.close();
  });

  it('leaves the WAL to the writer when turned off', async () => {
    const file = newFile();
    const store = SqliteStore.open({ file, checkpointThread: false });
    const before = statSync(file).size;
    await fill(store, 'ckpt2', 3000);
    // the counterpart of the test above: nothing else copies the WAL at this size
    expect(statSync(file).size).toBeLessThan(before + 1_200_000);
    await store.close();
  });

  it("ends its connection when the store closes, so the store's close checkpoints and removes the WAL", async () => {
    const file = newFile();
    const store = SqliteStore.open({ file });
    await fill(store, 'ckpt3', 300);
    expect(existsSync(`${file}-wal`)).toBe(true);
    await store.close();
    // the last connection to close removes the WAL: the thread's was closed before the store's
    expect(existsSync(`${file}-wal`)).toBe(false);
    const again = SqliteStore.open({ file });
    expect(await again.lastRid('ckpt3')).toBe(300);
    await again.close();
  });

  it('reports a checkpoint that fails as a StoreError with its code and the driver code', async () => {
    const file = newFile();
    writeFileSync(file, 'this is not a database file, and it is long enough to have a header of its own'.repeat(10));
    const errors: StoreError[] = [];
    const checkpointer = new SqliteCheckpointer({ file, busyTimeoutMs: 100, pauseMs: 1, onError: (err) => errors.push(err) });
    checkpointer.committed();
    await until(() => errors.length > 0, 30_000, 'the failure is reported');
    await checkpointer.close();
    expect(errors[0]).toBeInstanceOf(StoreError);
    expect(errors[0]).toMatchObject({ code: 'STORE_UNAVAILABLE', message: expect.stringContaining('SQLITE_NOTADB') });
    expect(errors[0]?.message).toContain(file);
    // closed: further commits start nothing
    checkpointer.committed();
  });
});
