// Shared fan-out of session streams: many subscribers of a session share one store tail and one
// serialization per stored batch, on `sessions.stream` and `sessions.streamBatches`, with resume
// and back-pressure as before. Events are appended to the real store directly (an API-only
// server runs no containers), so the streams are all that is exercised; the clients are the real
// tRPC client and raw HTTP readers.
import { get, type IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SessionEvent } from '@mgx/agent-sdk';
import { sessionStreamsOf } from '@mgx/api';
import { createMgxClient, type MgxClient } from '@mgx/client';
import { SqliteStore, type Store } from '@mgx/event-store';
import { startPlatform, type Platform } from '../support/platform.js';
import { newServerProcess } from '../support/server-process.js';
import { collect, sleep } from '../support/sessions.js';

const logs = (n: number, from: number, size = 50) =>
  Array.from({ length: n }, (_, i) => ({
    type: 'LOG' as const,
    ts: Date.now(),
    data: { stream: 'agent', text: 'x'.repeat(size), i: from + i },
  }));

/** Every event of the per-event procedure (`sessions.stream`), with the SSE id of each. */
function streamEach(client: MgxClient, sessionId: string, lastEventId?: string): Promise<Array<{ id: string; ev: SessionEvent }>> {
  return new Promise((resolve, reject) => {
    const got: Array<{ id: string; ev: SessionEvent }> = [];
    const sub = client.sessions.stream.subscribe(
      { sessionId, ...(lastEventId !== undefined ? { lastEventId } : {}) },
      {
        onData: (msg) => {
          got.push({ id: msg.id, ev: msg.data });
          if (msg.data.type === 'FINISH') {
            sub.unsubscribe();
            resolve(got);
          }
        },
        onError: reject,
      },
    );
  });
}

/** A raw SSE reader: the `id:` of every message until `event: return`; `paused` reads nothing until resumed. */
function rawIds(url: string, headers: Record<string, string> = {}): { ids: Promise<number[]>; response: Promise<IncomingMessage> } {
  let response: (r: IncomingMessage) => void = () => undefined;
  const gotResponse = new Promise<IncomingMessage>((r) => (response = r));
  const ids = new Promise<number[]>((resolve, reject) => {
    const req = get(url, { headers, agent: false }, (res) => {
      response(res);
      const out: number[] = [];
      let rest = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        const lines = (rest + chunk).split('\n');
        rest = lines.pop() ?? '';
        for (const line of lines) {
          if (line.startsWith('id: ')) out.push(Number(line.slice(4)));
          if (line === 'event: return') {
            req.destroy();
            resolve(out);
          }
        }
      });
      res.on('close', () => resolve(out));
    });
    req.on('error', reject);
  });
  return { ids, response: gotResponse };
}

const streamUrl = (base: string, procedure: string, sessionId: string) =>
  `${base}/trpc/sessions.${procedure}?input=${encodeURIComponent(JSON.stringify({ sessionId }))}`;

const seqs = (events: SessionEvent[]) => events.map((e) => e.seq);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('shared fan-out of session streams', () => {
  let p: Platform;
  let store: Store;

  beforeAll(async () => {
    // an API node: sessions stay queued, their events come from the test
    p = await startPlatform({ MGX_ROLE: 'api', MGX_LOG_LEVEL: 'warn' });
    store = p.server.store;
  });
  afterAll(async () => {
    await p.close();
  });

  async function newSession(): Promise<string> {
    return (await p.client.sessions.create.mutate({ framework: 'script', prompt: 'fan-out' })).id;
  }

  /** Appends `batches` batches of `size` events, a little apart, then ends the session (CANCELLED, FINISH). */
  async function feed(id: string, batches: number, size: number): Promise<number> {
    for (let b = 0; b < batches; b++) {
      await store.events.append(id, logs(size, b * size));
      await sleep(2);
    }
    await p.client.sessions.cancel.mutate({ sessionId: id });
    const last = (await store.events.read(id, 0, 100_000)).at(-1);
    expect(last?.type).toBe('FINISH');
    return last?.seq ?? 0;
  }

  it('many subscribers of one session and of several get every event once, in order, on both procedures, from one tail per session', async () => {
    const ids = [await newSession(), await newSession(), await newSession()];
    const batched = ids.map((id) => Array.from({ length: 20 }, () => collect(p.client, id)));
    const each = ids.map((id) => Array.from({ length: 5 }, () => streamEach(p.client, id)));
    const raw = ids.map((id) => rawIds(streamUrl(p.server.url, 'streamBatches', id)).ids);
    // every subscriber has caught up with the store and waits on its session's tail
    const streams = sessionStreamsOf(store, p.server.metrics);
    while (streams.tails < ids.length || streams.subscribers < ids.length * 26) await sleep(20);

    // the store's reads while 3 × 30 batches reach 3 × 26 subscribers: one read per batch and session
    // (a few more when a wake-up comes before the batch is there), not one per subscriber
    const events = store.events;
    const read = events.read.bind(events);
    let reads = 0;
    events.read = (...args) => {
      reads++;
      return read(...args);
    };
    let lasts: number[];
    try {
      lasts = await Promise.all(ids.map((id) => feed(id, 30, 20)));
    } finally {
      events.read = read;
    }
    expect(reads).toBeLessThan(3 * 32 * 3);
    for (const [i, id] of ids.entries()) {
      const stored = seqs(await store.events.read(id, 0, 100_000));
      const last = lasts[i] ?? 0;
      expect(stored).toEqual(range(1, last));
      for (const events of await Promise.all(batched[i] ?? [])) expect(seqs(events)).toEqual(stored);
      for (const got of await Promise.all(each[i] ?? [])) {
        expect(got.map((g) => g.ev.seq)).toEqual(stored);
        // tracked: each event's SSE id is its seq, what a reconnect resumes from
        expect(got.map((g) => Number(g.id))).toEqual(stored);
      }
      // a batch message's id is the seq of its last event: the ids climb to FINISH
      const rawGot = await (raw[i] ?? Promise.resolve([]));
      expect(rawGot.at(-1)).toBe(last);
      expect([...rawGot].sort((a, b) => a - b)).toEqual(rawGot);
    }
    // every hub let go with its last subscriber
    while (streams.tails > 0) await sleep(20);
  });

  it('a late joiner and resumers (lastEventId, the Last-Event-ID header) see no gap and no duplicate', async () => {
    const id = await newSession();
    const early = collect(p.client, id);
    const fed = (async () => {
      for (let b = 0; b < 60; b++) {
        await store.events.append(id, logs(10, b * 10));
        await sleep(5);
      }
    })();
    // joins while events are being appended: backlog from the store, then the live hub
    while ((await store.events.read(id, 100, 1)).length === 0) await sleep(5);
    const late = collect(p.client, id);
    const resumed = collect(p.client, id, 150);
    const resumedEach = streamEach(p.client, id, '151');
    const header = rawIds(streamUrl(p.server.url, 'stream', id), { 'last-event-id': '200' }).ids;
    await fed;
    await p.client.sessions.cancel.mutate({ sessionId: id });
    const stored = seqs(await store.events.read(id, 0, 100_000));
    const last = stored.at(-1) ?? 0;
    expect(stored).toEqual(range(1, last));
    expect(seqs(await early)).toEqual(stored);
    expect(seqs(await late)).toEqual(stored);
    expect(seqs(await resumed)).toEqual(range(151, last));
    expect((await resumedEach).map((g) => g.ev.seq)).toEqual(range(152, last));
    expect(await header).toEqual(range(201, last));
  });

  it('a subscriber of a session that has ended gets its events and the end, and no tail stays open', async () => {
    const id = await newSession();
    const last = await feed(id, 3, 5);
    const streams = sessionStreamsOf(store, p.server.metrics);
    expect(seqs(await collect(p.client, id))).toEqual(range(1, last));
    expect((await streamEach(p.client, id, String(last - 2))).map((g) => g.ev.seq)).toEqual(range(last - 1, last));
    expect(streams.tails).toBe(0);
  });
});

describe('a subscriber that stops reading', () => {
  it('holds no memory in the server and delays no other subscriber', async () => {
    // the server as its own process, so its retained memory is its own
    const { server, dataDir } = await newServerProcess(
      'mgx-fanout-stall',
      { MGX_ROLE: 'api', MGX_LOG_LEVEL: 'warn' },
      { memoryProbe: true },
    );
    await server.start();
    const store = SqliteStore.open({ file: join(dataDir, 'mgx.sqlite') });
    try {
      const client = createMgxClient({ url: server.url });
      const id = (await client.sessions.create.mutate({ framework: 'script', prompt: 'stall' })).id;
      const stalled = rawIds(streamUrl(server.url, 'streamBatches', id));
      const res = await stalled.response;
      // reads nothing from now on: the socket's buffers fill, then the server's writes wait
      res.pause();
      const before = await server.retainedMb();
      const reader = collect(client, id);
      // 32 MiB of events, in batches of 1 MiB, written by another connection (as a worker's would be)
      for (let b = 0; b < 32; b++) await store.events.append(id, logs(64, b * 64, 16 * 1024));
      await client.sessions.cancel.mutate({ sessionId: id });
      // the reading subscriber gets all of it while the stalled one still reads nothing
      const got = await reader;
      expect(got.at(-1)?.type).toBe('FINISH');
      expect(seqs(got)).toEqual(range(1, got.length));
      const after = await server.retainedMb();
      // a stalled subscriber keeps at most one batch and the shared frames (≤ 4 MiB of text, as much in events), not the 32 MiB behind it
      expect(after - before).toBeLessThan(24);
      // and once it reads again, it gets the rest from the store, in order
      res.resume();
      const ids = await stalled.ids;
      expect(ids.at(-1)).toBe(got.at(-1)?.seq);
      expect([...ids].sort((a, b) => a - b)).toEqual(ids);
    } finally {
      await store.close();
      await server.stop('SIGTERM');
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 180_000);
});
