import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SqliteStore } from '../src/index.js';
import { storeContract } from './contract.js';

storeContract('sqlite', async () => SqliteStore.open({ file: join(mkdtempSync(join(tmpdir(), 'mgx-store-')), 'mgx.sqlite') }));

describe('sqlite store', () => {
  it('shares one file between two handles (two processes) with dense seq', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'mgx-store-')), 'mgx.sqlite');
    const a = SqliteStore.open({ file, tailPollMs: 20 });
    const b = SqliteStore.open({ file, tailPollMs: 20 });
    const s = await a.createSession({
      id: 'shared1', tenant: 't', framework: 'script', prompt: '', workspaceId: 'w', options: {},
      limits: { memoryBytes: 1, cpuQuota: 1, timeoutMs: 1 }, network: 'none',
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
    expect(() => SqliteStore.open({ file })).toThrow(expect.objectContaining({ code: 'STORE_UNAVAILABLE', message: expect.stringContaining(file) }));
  });
});
