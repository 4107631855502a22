import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { answerDial, forwardLoopback, IngestClient, IngestHub, type IngestSink } from '../src/index.js';

const task = (sessionId: string) => ({ sessionId, framework: 'exec', prompt: '', options: {}, env: {}, secrets: {} });

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const sink: IngestSink = { lastRid: () => Promise.resolve(0), append: () => Promise.resolve(), finish: () => Promise.resolve() };

function hub(services: ConstructorParameters<typeof IngestHub>[0]['services'] = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'mgx-tunnel-'));
  const h = new IngestHub({
    baseDir: dir,
    sink,
    maxEventBytes: 4096,
    containerUser: `${process.getuid!()}:${process.getgid!()}`,
    services,
    dialTimeoutMs: 5000,
  });
  cleanups.push(async () => {
    await h.closeAll();
    rmSync(dir, { recursive: true, force: true });
  });
  return h;
}

/** A runner's client, answering dials as the runner does. */
async function runner(socketPath: string) {
  const client = new IngestClient({ socketPath, onDial: (msg) => answerDial(dirname(socketPath), msg) });
  cleanups.push(() => client.close());
  return { client, hello: await client.connect() };
}

/** A TCP server on loopback that answers every line with its upper case. */
async function upperServer() {
  const server = createServer((s) => s.on('data', (d: Buffer) => s.write(d.toString().toUpperCase())));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  return (server.address() as AddressInfo).port;
}

const roundTrip = (s: Socket, text: string) =>
  new Promise<string>((resolve) => {
    s.once('data', (d: Buffer) => resolve(d.toString()));
    // dial hands the stream over paused
    s.resume();
    s.write(text);
  });

describe('the session socket directory carries more than events', () => {
  it('dial: a stream from the host to a port the runner reaches, carried on tunnel.sock; the hello names it', async () => {
    const h = hub();
    const { socketPath } = await h.open(task('t1'));
    const { hello } = await runner(socketPath);
    expect(hello.services).toEqual(['tunnel']);
    expect(readdirSync(dirname(socketPath)).sort()).toEqual(['ingest.sock', 'tunnel.sock']);
    const port = await upperServer();
    const streams = await Promise.all([h.dial('t1', port), h.dial('t1', port)]);
    expect(await roundTrip(streams[0], 'hello')).toBe('HELLO');
    expect(await roundTrip(streams[1], 'second')).toBe('SECOND');
    for (const s of streams) s.destroy();
  });

  it('dial: a port nobody listens on is refused with the reason, and a session without a runner has nothing to dial', async () => {
    const h = hub();
    const { socketPath } = await h.open(task('t2'));
    await expect(h.dial('t2', 1)).rejects.toMatchObject({ code: 'INGEST_CLOSED' });
    await runner(socketPath);
    const closed = await upperServer().then(async (port) => {
      await cleanups.pop()!();
      return port;
    });
    await expect(h.dial('t2', closed)).rejects.toThrow(/ECONNREFUSED/);
    await expect(h.dial('t2', 70000)).rejects.toMatchObject({ code: 'INGEST_PROTOCOL' });
  });

  it('services get their own socket, only for the sessions they are offered to, and each connection names its session', async () => {
    const seen: string[] = [];
    const h = hub({
      model: {
        offers: (t) => t.sessionId !== 'plain',
        accept: (sessionId, socket) => {
          seen.push(sessionId);
          socket.end(`hi ${sessionId}`);
        },
      },
    });
    const a = await h.open(task('withmodel'));
    const b = await h.open(task('plain'));
    expect(readdirSync(a.dir).sort()).toEqual(['ingest.sock', 'model.sock', 'tunnel.sock']);
    expect(readdirSync(b.dir).sort()).toEqual(['ingest.sock', 'tunnel.sock']);
    expect((await runner(a.socketPath)).hello.services).toEqual(['tunnel', 'model']);
    // through a loopback port, as an agent CLI inside the container reaches it
    const forward = await forwardLoopback(join(a.dir, 'model.sock'));
    cleanups.push(() => forward.close());
    const reply = await new Promise<string>((resolve) => {
      let text = '';
      const s = connect({ host: '127.0.0.1', port: forward.port });
      s.on('data', (d: Buffer) => (text += d.toString()));
      s.on('close', () => resolve(text));
    });
    expect(reply).toBe('hi withmodel');
    expect(seen).toEqual(['withmodel']);
    await h.close('withmodel', { keepDir: true });
    expect(readdirSync(a.dir)).toEqual([]);
  });
});
