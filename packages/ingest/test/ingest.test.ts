import { mkdtempSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SqliteStore } from '@mgx/event-store';
import { newSession } from '@mgx/event-store/contract';
import { IngestClient, IngestHub, type IngestSink, toStoredEvent } from '../src/index.js';

const task = (sessionId: string) => ({ sessionId, framework: 'script', prompt: 'p', options: {}, env: {}, secrets: { KEY: 'sekret' } });

async function fixture(maxEventBytes = 4096, maxEventsPerSecond = 0) {
  const dir = mkdtempSync(join(tmpdir(), 'mgx-ingest-'));
  const store = SqliteStore.open({ file: join(dir, 'db.sqlite') });
  const finishes: Array<{ sessionId: string; rid: number; status: unknown }> = [];
  const sink: IngestSink = {
    lastRid: (id) => store.lastRid(id),
    append: async (id, events) => {
      await store.append(id, events.map(toStoredEvent));
    },
    finish: async (id, ev) => {
      finishes.push({ sessionId: id, rid: ev.rid, status: ev.data.status });
      await store.append(id, [{ type: 'LOG', data: { finishRid: ev.rid }, rid: ev.rid }]);
    },
  };
  const hub = (hubSink: IngestSink = sink) =>
    new IngestHub({
      baseDir: join(dir, 'run'),
      sink: hubSink,
      maxEventBytes,
      maxEventsPerSecond,
      containerUser: `${process.getuid!()}:${process.getgid!()}`,
    });
  const session = async (id: string) => store.createSession(newSession(id, { workspaceId: id, prompt: 'p' }));
  return { dir, store, sink, hub, session, finishes };
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

describe('ingest over a real unix socket', () => {
  it('delivers the task, stores events in order, acknowledges them, and hands FINISH to the sink', async () => {
    const f = await fixture();
    const hub = f.hub();
    await f.session('s1');
    const { socketPath } = await hub.open(task('s1'));
    const client = new IngestClient({ socketPath });
    cleanups.push(async () => {
      client.close();
      await hub.closeAll();
      await f.store.close();
    });
    const hello = await client.connect();
    expect(hello.task).toMatchObject({ sessionId: 's1', prompt: 'p', secrets: { KEY: 'sekret' } });
    for (let i = 0; i < 1000; i++) client.emit('LOG', { i });
    client.emit('FINISH', { status: 'succeeded', reason: 'finished' });
    await client.flush();
    expect(client.unacknowledged).toBe(0);
    const events = await f.store.read('s1', 1, 5000);
    expect(events.slice(0, 1000).map((e) => e.data.i)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(events.map((e) => e.seq)).toEqual(Array.from({ length: 1001 }, (_, i) => i + 2));
    expect(f.finishes).toEqual([{ sessionId: 's1', rid: 1001, status: 'succeeded' }]);
  });

  it('sends a new session its task without a store read; a reconnect and an adopted session read what is stored', async () => {
    const f = await fixture();
    let reads = 0;
    const hub = f.hub({
      ...f.sink,
      lastRid: (id) => {
        reads++;
        return f.sink.lastRid(id);
      },
    });
    await f.session('s7');
    await f.session('s8');
    const clients: IngestClient[] = [];
    cleanups.push(async () => {
      for (const c of clients) c.close();
      await hub.closeAll();
      await f.store.close();
    });
    const { socketPath } = await hub.open(task('s7'), { fresh: true });
    const first = new IngestClient({ socketPath });
    clients.push(first);
    expect((await first.connect()).lastRid).toBe(0);
    expect(reads).toBe(0);
    first.emit('LOG', { i: 1 });
    first.emit('LOG', { i: 2 });
    await first.flush();
    first.close();
    // the runner's connection dropped and came back: its hello says what is stored
    const second = new IngestClient({ socketPath });
    clients.push(second);
    expect((await second.connect()).lastRid).toBe(2);
    expect(reads).toBe(1);
    // a session adopted after a restart may have events stored: its first hello reads them too
    await f.store.append('s8', [{ type: 'LOG', data: {}, rid: 4 }]);
    const adopted = new IngestClient({ socketPath: (await hub.open(task('s8'))).socketPath });
    clients.push(adopted);
    expect((await adopted.connect()).lastRid).toBe(4);
    expect(reads).toBe(2);
  });

  it('loses and duplicates nothing when the server restarts while the runner is writing', async () => {
    const f = await fixture();
    await f.session('s2');
    const first = f.hub();
    const { socketPath } = await first.open(task('s2'));
    const client = new IngestClient({ socketPath, connectTimeoutMs: 10_000 });
    await client.connect();
    for (let i = 0; i < 3000; i++) client.emit('LOG', { i });
    // the server goes away with events unacknowledged and in flight
    await new Promise((r) => setTimeout(r, 5));
    await first.closeAll();
    for (let i = 3000; i < 5000; i++) client.emit('LOG', { i });
    const second = f.hub();
    await second.open(task('s2'));
    cleanups.push(async () => {
      client.close();
      await second.closeAll();
      await f.store.close();
    });
    client.emit('FINISH', { status: 'succeeded', reason: 'finished' });
    await client.flush();
    const logs = (await f.store.read('s2', 0, 10_000)).filter((e) => e.type === 'LOG' && e.data.i !== undefined);
    expect(logs.map((e) => e.data.i)).toEqual(Array.from({ length: 5000 }, (_, i) => i));
    expect(f.finishes.map((x) => x.rid)).toEqual([5001]);
  });

  it('refuses an oversize event with an ERROR event that says why, on both sides', async () => {
    const f = await fixture(2048);
    const hub = f.hub();
    await f.session('s3');
    const { socketPath } = await hub.open(task('s3'));
    cleanups.push(async () => {
      await hub.closeAll();
      await f.store.close();
    });
    // a client that keeps to the limit turns the event into an ERROR itself
    const client = new IngestClient({ socketPath });
    await client.connect();
    client.emit('LOG', { text: 'x'.repeat(5000) });
    client.emit('LOG', { text: 'small' });
    await client.flush();
    client.close();
    // a raw writer that ignores the limit is refused by the server
    const raw = connect(socketPath);
    await new Promise((r) => raw.once('data', r));
    raw.write(`${JSON.stringify({ t: 'ev', rid: 3, type: 'LOG', ts: 1, data: { text: 'y'.repeat(3000) } })}\n`);
    raw.write(`${JSON.stringify({ t: 'ev', rid: 4, type: 'SESSION_QUEUED', ts: 1, data: {} })}\n`);
    raw.write('not json\n');
    raw.write(`${'z'.repeat(10_000)}\n`);
    await new Promise((r) => setTimeout(r, 200));
    raw.destroy();
    await hub.settle('s3', 1000);
    const events = (await f.store.read('s3', 1, 100)).map((e) => [
      e.type,
      String(e.data.code ?? e.data.text),
      typeof e.data.message === 'string' ? e.data.message : '',
    ]);
    expect(events[0]).toEqual([
      'ERROR',
      'EVENT_TOO_LARGE',
      expect.stringMatching(/LOG event of \d+ bytes exceeds the limit of 2048 bytes/),
    ]);
    expect(events[1]).toEqual(['LOG', 'small', '']);
    expect(events[2]).toEqual(['ERROR', 'EVENT_REJECTED', expect.stringMatching(/LOG event of \d+ bytes exceeds the limit of 2048 bytes/)]);
    expect(events[3]).toEqual(['ERROR', 'EVENT_REJECTED', expect.stringContaining('"SESSION_QUEUED" is not an agent event type')]);
    expect(events[4]).toEqual(['ERROR', 'EVENT_REJECTED', 'an event line was not valid JSON']);
    expect(events[5]).toEqual(['ERROR', 'EVENT_REJECTED', 'an event line of 10000 bytes exceeds the limit of 2048 bytes']);
    expect(events).toHaveLength(6);
  });

  it('binds a socket to its session: events land in that session whatever they claim', async () => {
    const f = await fixture();
    const hub = f.hub();
    await f.session('a1');
    await f.session('b1');
    const a = await hub.open(task('a1'));
    await hub.open(task('b1'));
    cleanups.push(async () => {
      await hub.closeAll();
      await f.store.close();
    });
    const client = new IngestClient({ socketPath: a.socketPath });
    await client.connect();
    client.emit('LOG', { sessionId: 'b1', text: 'pretending to be b1' });
    await client.flush();
    client.close();
    expect((await f.store.read('a1', 1, 10)).map((e) => e.data.text)).toEqual(['pretending to be b1']);
    expect(await f.store.read('b1', 1, 10)).toEqual([]);
  });

  it('slows a flooding agent to the rate limit without losing an event', async () => {
    const f = await fixture(4096, 2000);
    const hub = f.hub();
    await f.session('flood');
    const { socketPath } = await hub.open(task('flood'));
    const client = new IngestClient({ socketPath, highWater: 500 });
    cleanups.push(async () => {
      client.close();
      await hub.closeAll();
      await f.store.close();
    });
    await client.connect();
    const started = Date.now();
    for (let i = 0; i < 7000; i++) {
      client.emit('LOG', { i });
      if (i % 100 === 99) await client.drain();
    }
    await client.flush();
    const elapsed = Date.now() - started;
    const events = await f.store.read('flood', 1, 10_000);
    expect(events.filter((e) => typeof e.data.i === 'number').map((e) => e.data.i)).toEqual(Array.from({ length: 7000 }, (_, i) => i));
    const warnings = events.filter((e) => e.data.source === 'platform' && String(e.data.text).includes('events/s'));
    expect(warnings).toHaveLength(1);
    // 7000 events at 2000/s after a burst of 4000: 1.5 s, less the debt of the last chunk
    // read (the bucket is charged after reading, so the final chunk is acked before it is paid)
    expect(elapsed).toBeGreaterThanOrEqual(1000);
  });
  it('stores what arrives while a store is under way as one batch, acked once, in order with what the platform records', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mgx-ingest-'));
    const appends: number[][] = [];
    let gate: Promise<void> = Promise.resolve();
    let open: () => void = () => {};
    let entered: () => void = () => {};
    const sink: IngestSink = {
      lastRid: async () => 0,
      append: async (_id, events) => {
        appends.push(events.map((e) => (e.rid > 0 ? e.rid : -1)));
        entered();
        await gate;
      },
      finish: async () => {},
    };
    const hub = new IngestHub({
      baseDir: join(dir, 'run'),
      sink,
      maxEventBytes: 4096,
      containerUser: `${process.getuid!()}:${process.getgid!()}`,
    });
    const { socketPath } = await hub.open(task('s9'));
    const raw = connect(socketPath);
    cleanups.push(async () => {
      raw.destroy();
      await hub.closeAll();
    });
    const acks: number[] = [];
    let buffered = '';
    raw.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buffered.slice(0, nl)) as { t: string; rid?: number };
        buffered = buffered.slice(nl + 1);
        if (msg.t === 'ack' && msg.rid !== undefined) acks.push(msg.rid);
      }
    });
    const line = (rid: number) => `${JSON.stringify({ t: 'ev', rid, type: 'LOG', ts: 1, data: { rid } })}\n`;
    /** The store holds the next append until `open()`; resolves once it has entered it. */
    const hold = () => {
      gate = new Promise<void>((r) => (open = r));
      return new Promise<void>((r) => (entered = r));
    };
    /** Sent as reads of their own: each a batch of the connection. */
    const send = async (...rids: number[]) => {
      for (const rid of rids) {
        raw.write(line(rid));
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    const until = async (cond: () => boolean) => {
      while (!cond()) await new Promise((r) => setTimeout(r, 10));
    };

    let inStore = hold();
    await send(1);
    await inStore;
    await send(2, 3, 4, 5);
    open();
    await until(() => acks.includes(5));
    // rid 1 alone; 2 to 5, which came while it was stored, as one batch with one ack
    expect(appends).toEqual([[1], [2, 3, 4, 5]]);
    expect(acks).toEqual([1, 5]);

    // the platform's event goes after what the runner sent before it, and before what follows
    inStore = hold();
    await send(6);
    await inStore;
    await send(7);
    const recorded = hub.record('s9', [{ rid: 0, type: 'LOG', ts: 1, data: { platform: true } }]);
    await send(8);
    open();
    expect(await recorded).toBe(true);
    await until(() => acks.includes(8));
    expect(appends.slice(2)).toEqual([[6], [7], [-1], [8]]);
  });
});
