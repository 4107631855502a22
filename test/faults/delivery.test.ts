import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createMgxClient } from '@mgx/client';
import { SqliteStore } from '@mgx/event-store';
import { newSession } from '@mgx/event-store/contract';
import { IngestClient, IngestHub, type IngestSink, toStoredEvent } from '@mgx/ingest';
import { follow, pausedReaders, script, sleep } from '../support/sessions.js';
import { newServerProcess } from '../support/server-process.js';
import { cleanupsThenReport, measured } from '../support/reliability.js';
import { ownedLeft } from '../support/engine.js';

const cleanups = cleanupsThenReport();

/** The real store and hub on a real unix socket, wired like the server wires them. */
async function ingestFixture() {
  const dir = mkdtempSync(join(tmpdir(), 'mgx-fault-ingest-'));
  const store = SqliteStore.open({ file: join(dir, 'db.sqlite') });
  const sink: IngestSink = {
    lastRid: (id) => store.lastRid(id),
    append: async (id, events) => {
      await store.append(id, events.map(toStoredEvent));
    },
    finish: async (id, ev) => {
      await store.append(id, [{ type: 'LOG', data: { finish: ev.data.status }, rid: ev.rid }]);
    },
  };
  const hub = () =>
    new IngestHub({ baseDir: join(dir, 'run'), sink, maxEventBytes: 4096, containerUser: `${process.getuid!()}:${process.getgid!()}` });
  const task = (sessionId: string) => ({ sessionId, framework: 'script', prompt: 'p', options: {}, env: {}, secrets: {} });
  const session = (id: string) => store.createSession(newSession(id, { workspaceId: id, prompt: 'p' }));
  cleanups.push(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { store, hub, task, session };
}

/** A runner that speaks the protocol by hand, so it can repeat itself. */
class RawRunner {
  readonly lines: Array<{ t: string; rid?: number; lastRid?: number }> = [];
  private constructor(readonly socket: Socket) {}
  static async connect(path: string): Promise<RawRunner> {
    const socket = connect(path);
    const r = new RawRunner(socket);
    let buf = '';
    socket.setEncoding('utf8').on('data', (c: string) => {
      buf += c;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        r.lines.push(JSON.parse(buf.slice(0, nl)) as RawRunner['lines'][number]);
        buf = buf.slice(nl + 1);
      }
    });
    socket.on('error', () => undefined);
    return r;
  }
  async until<T>(pick: () => T | undefined, ms = 10_000): Promise<T> {
    const deadline = Date.now() + ms;
    for (;;) {
      const v = pick();
      if (v !== undefined) return v;
      if (Date.now() > deadline) throw new Error(`raw runner: nothing matched within ${ms} ms`);
      await sleep(10);
    }
  }
  hello(): Promise<number> {
    return this.until(() => this.lines.find((l) => l.t === 'hello')?.lastRid);
  }
  acked(rid: number): Promise<true> {
    return this.until(() => (this.lines.some((l) => l.t === 'ack' && (l.rid ?? 0) >= rid) ? true : undefined));
  }
  send(from: number, to: number): number {
    let n = 0;
    for (let rid = from; rid <= to; rid++, n++)
      this.socket.write(`${JSON.stringify({ t: 'ev', rid, type: 'LOG', ts: Date.now(), data: { i: rid - 1 } })}\n`);
    return n;
  }
  close(): void {
    this.socket.destroy();
  }
}

describe('duplicate event delivery', () => {
  it('stores every rid once when a runner re-sends on the same connection, after a reconnect, and on two connections at once', async () => {
    await measured(
      { area: 'faults/delivery', fault: 'duplicate rids: repeated, after reconnect, on overlapping connections' },
      async (row) => {
        const f = await ingestFixture();
        const hub = f.hub();
        cleanups.push(() => hub.closeAll());
        await f.session('dup');
        const { socketPath } = await hub.open(f.task('dup'));
        let resent = 0;

        const a = await RawRunner.connect(socketPath);
        expect(await a.hello()).toBe(0);
        a.send(1, 500);
        resent += a.send(1, 500);
        await a.acked(500);
        a.close();

        // a reconnect is told what is stored, but re-sends everything anyway
        const b = await RawRunner.connect(socketPath);
        expect(await b.hello()).toBe(500);
        resent += b.send(1, 500);
        b.send(501, 1000);
        await b.acked(1000);

        // a second connection takes over while the first is still writing
        const c = await RawRunner.connect(socketPath);
        expect(await c.hello()).toBe(1000);
        b.send(1001, 1200);
        resent += c.send(901, 1200);
        c.send(1201, 1500);
        await c.acked(1500);
        b.close();
        c.close();
        await hub.settle('dup', 5000);
        row.tries = resent;

        const events = await f.store.read('dup', 0, 10_000);
        const logs = events.filter((e) => typeof e.data.i === 'number').map((e) => e.data.i as number);
        row.lostEvents = 1500 - new Set(logs).size;
        const duplicates = logs.length - new Set(logs).size;
        row.note = `${resent} events re-sent; ${logs.length} stored, ${duplicates} duplicates`;
        expect(logs).toEqual(Array.from({ length: 1500 }, (_, i) => i));
        expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
      },
    );
  });

  it('loses and duplicates nothing across five hub restarts while a runner writes', async () => {
    await measured({ area: 'faults/delivery', fault: 'ingest hub restarted 5 times mid-stream (runner re-sends unacked)' }, async (row) => {
      const f = await ingestFixture();
      await f.session('restarts');
      let hub = f.hub();
      const { socketPath } = await hub.open(f.task('restarts'));
      const client = new IngestClient({ socketPath, connectTimeoutMs: 10_000 });
      cleanups.push(async () => {
        client.close();
        await hub.closeAll();
      });
      await client.connect();
      const PER = 2000;
      for (let round = 0; round < 5; round++) {
        for (let i = round * PER; i < (round + 1) * PER; i++) client.emit('LOG', { i });
        // the server goes away with events unacknowledged and in flight
        await sleep(5);
        await hub.closeAll();
        row.tries++;
        hub = f.hub();
        await hub.open(f.task('restarts'));
      }
      for (let i = 5 * PER; i < 6 * PER; i++) client.emit('LOG', { i });
      await Promise.race([client.flush(), sleep(20_000).then(() => Promise.reject(new Error('runner not acknowledged within 20 s')))]);
      const events = await f.store.read('restarts', 0, 100_000);
      const logs = events.filter((e) => typeof e.data.i === 'number').map((e) => e.data.i as number);
      row.lostEvents = 6 * PER - new Set(logs).size;
      row.note = `${logs.length} stored of ${6 * PER}, ${logs.length - new Set(logs).size} duplicates`;
      expect(logs).toEqual(Array.from({ length: 6 * PER }, (_, i) => i));
    });
  });
});

describe('stalled subscribers', () => {
  it('keeps server memory bounded while subscribers stop reading, and the reader that reads gets everything', async () => {
    await measured(
      { area: 'faults/delivery', fault: '4 stalled SSE subscribers on an 8 MB session (smaller run of e2e/delivery)' },
      async (row) => {
        const { server, dataDir, owner } = await newServerProcess(
          'mgx-fault-stall',
          { MGX_LOG_LEVEL: 'fatal', MGX_MAX_EVENTS_PER_SECOND: '0', AGENT_CONTAINER_MEMORY_LIMIT: '512m' },
          { memoryProbe: true },
        );
        cleanups.push(async () => {
          await server.stop('SIGKILL');
          rmSync(dataDir, { recursive: true, force: true });
        });
        await server.start();
        const client = createMgxClient({ url: server.url });
        const COUNT = 8000;
        /**
         * Server memory still reachable once one reader has followed the whole session while
         * `stalled` readers, still connected, never read: whatever the server buffers for them.
         */
        const runWith = async (stalled: number) => {
          const s = await client.sessions.create.mutate({
            framework: 'script',
            prompt: script({ sleep: 500 }, { events: { count: COUNT, size: 1000 } }),
          });
          row.sessions++;
          const paused = await pausedReaders(server.url, s.id, stalled);
          const events = await follow(client, s.id, 60_000);
          const retained = await server.retainedMb();
          for (const res of paused) res.destroy();
          const got = new Set(events.filter((e) => e.type === 'LOG' && typeof e.data.i === 'number').map((e) => e.data.i)).size;
          row.lostEvents += COUNT - got;
          if (events.at(-1)?.data.status === 'succeeded' && got === COUNT) row.completed++;
          return retained;
        };
        // the first session warms the server up (JIT, caches), so the control compares like with like
        await runWith(0);
        const control = await runWith(0);
        const stalled = await runWith(4);
        row.tries = 4;
        row.orphans = (await ownedLeft(owner)).length;
        row.note = `memory retained after a full GC: ${control.toFixed(1)} MB with no stalled reader, ${stalled.toFixed(1)} MB with 4 still connected (buffering their 8 MB each would add 32 MB)`;
        expect(row.completed).toBe(3);
        expect(row.lostEvents).toBe(0);
        expect(stalled - control).toBeLessThan(12);
        expect(row.orphans).toBe(0);
      },
    );
  }, 120_000);
});
