import { createServer, connect, type Server, type Socket } from 'node:net';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { loadSettings } from '@mgx/config';
import { createMgxClient, followSession, type MgxClient, type SessionEvent } from '@mgx/client';
import { startServer } from '@mgx/server';
import { startPlatform, type Platform } from '../support/platform.js';
import { collect, script } from '../support/sessions.js';

const ACME = 'acme-token-0123456789abcdef';
const GLOBEX = 'globex-token-0123456789abcdef';
const OPS = 'ops-token-0123456789abcdef';

let p: Platform;
let acme: MgxClient;
let globex: MgxClient;
let ops: MgxClient;
beforeAll(async () => {
  p = await startPlatform({
    MGX_API_TOKENS: `acme:${ACME},globex:${GLOBEX}`,
    MGX_OPERATOR_TOKENS: `ops:${OPS}`,
    MGX_MAX_PROMPT_BYTES: '4096',
    AGENT_CONTAINER_MEMORY_MAX: '512m',
    AGENT_TASK_TIMEOUT_MAX_SECONDS: '120',
    AGENT_TASK_TIMEOUT_SECONDS: '60',
    AGENT_CONTAINER_CPU_QUOTA: '100000',
  });
  acme = createMgxClient({ url: p.server.url, token: ACME });
  globex = createMgxClient({ url: p.server.url, token: GLOBEX });
  ops = createMgxClient({ url: p.server.url, token: OPS });
});
afterAll(async () => {
  await p?.close();
});

const code = (promise: Promise<unknown>) =>
  promise.then(
    () => 'OK',
    (err: Error & { data?: { code?: string } }) => err.data?.code ?? err.message,
  );

describe('authentication and tenants', () => {
  it('refuses calls without a token or with a wrong one', async () => {
    const anonymous = createMgxClient({ url: p.server.url });
    const wrong = createMgxClient({ url: p.server.url, token: 'not-a-valid-token-at-all' });
    expect(await code(anonymous.sessions.list.query({}))).toBe('UNAUTHORIZED');
    expect(await code(wrong.sessions.list.query({}))).toBe('UNAUTHORIZED');
    expect(await code(wrong.sessions.create.mutate({ framework: 'script', prompt: 'x' }))).toBe('UNAUTHORIZED');
    // health needs no token
    expect((await anonymous.system.health.query()).ok).toBe(true);
  });

  it("makes another tenant's session NOT_FOUND for get, events, stream and cancel, and keeps lists apart", async () => {
    const s = await acme.sessions.create.mutate({ framework: 'script', prompt: 'acme only' });
    expect(await code(globex.sessions.get.query({ sessionId: s.id }))).toBe('NOT_FOUND');
    expect(await code(globex.sessions.events.query({ sessionId: s.id }))).toBe('NOT_FOUND');
    expect(await code(globex.sessions.cancel.mutate({ sessionId: s.id }))).toBe('NOT_FOUND');
    expect(await code(collect(globex, s.id))).toBe('NOT_FOUND');
    expect((await globex.sessions.list.query({})).items.map((x) => x.id)).not.toContain(s.id);
    expect((await acme.sessions.list.query({})).items.map((x) => x.id)).toContain(s.id);
    expect((await collect(acme, s.id)).at(-1)?.data).toMatchObject({ status: 'succeeded' });
    expect((await acme.sessions.get.query({ sessionId: s.id })).status).toBe('succeeded');
  });

  it('reads tokens from a file too, and refuses to listen beyond loopback without tokens', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mgx-tokens-'));
    const file = join(dir, 'tokens');
    writeFileSync(file, `# tenants\ninitech:initech-token-0123456789\n`);
    const settings = loadSettings({ MGX_PORT: '0', MGX_DATA_DIR: dir, MGX_OWNER: 'mgx-tokens-test', MGX_API_TOKENS_FILE: file });
    const server = await startServer(settings, { logger: pino({ level: 'silent' }) });
    try {
      const ok = createMgxClient({ url: server.url, token: 'initech-token-0123456789' });
      expect((await ok.sessions.list.query({})).items).toEqual([]);
      expect(await code(createMgxClient({ url: server.url, token: ACME }).sessions.list.query({}))).toBe('UNAUTHORIZED');
    } finally {
      await server.close();
    }
    const open = loadSettings({ MGX_PORT: '0', MGX_HOST: '0.0.0.0', MGX_DATA_DIR: dir });
    await expect(startServer(open, { logger: pino({ level: 'silent' }) })).rejects.toThrow(
      /refusing to listen on 0.0.0.0 without API tokens/,
    );
    const weak = loadSettings({ MGX_PORT: '0', MGX_DATA_DIR: dir, MGX_API_TOKENS: 'acme:short' });
    await expect(startServer(weak, { logger: pino({ level: 'silent' }) })).rejects.toThrow(/at least 16 characters/);
  });
});

describe('operators', () => {
  it("see every tenant's sessions: get, events, list by tenant, stream and cancel", async () => {
    const s = await acme.sessions.create.mutate({ framework: 'script', prompt: 'acme, seen by an operator' });
    expect(await ops.sessions.get.query({ sessionId: s.id })).toMatchObject({ id: s.id, tenant: 'acme' });
    expect((await ops.sessions.list.query({ tenant: 'acme' })).items.map((x) => x.id)).toContain(s.id);
    // without the filter, every tenant's; with it, only that tenant's; a tenant may not use the filter
    expect((await ops.sessions.list.query({})).items.map((x) => x.id)).toContain(s.id);
    expect((await ops.sessions.list.query({ tenant: 'globex' })).items.map((x) => x.id)).not.toContain(s.id);
    expect(await code(globex.sessions.list.query({ tenant: 'acme' }))).toBe('FORBIDDEN');
    expect((await collect(ops, s.id)).at(-1)?.data).toMatchObject({ status: 'succeeded' });
    expect((await ops.sessions.events.query({ sessionId: s.id })).events.at(-1)?.type).toBe('FINISH');
    expect(await ops.sessions.cancel.mutate({ sessionId: s.id })).toMatchObject({ sessionId: s.id, cancelled: false });
    // an operator's own sessions belong to its tenant, and tenants still see only theirs
    const own = await ops.sessions.create.mutate({ framework: 'script', prompt: 'the operator runs one too' });
    expect(await code(acme.sessions.get.query({ sessionId: own.id }))).toBe('NOT_FOUND');
    expect((await ops.sessions.list.query({ tenant: 'ops' })).items.map((x) => x.id)).toContain(own.id);
    await collect(ops, own.id);
  });

  it('cancel a running session of another tenant', async () => {
    const s = await globex.sessions.create.mutate({ framework: 'script', prompt: script({ sleep: 60_000 }) });
    for (let i = 0; i < 300 && (await globex.sessions.get.query({ sessionId: s.id })).status !== 'running'; i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(await ops.sessions.cancel.mutate({ sessionId: s.id })).toMatchObject({ cancelled: true });
    expect((await collect(globex, s.id)).at(-1)?.data).toMatchObject({ status: 'cancelled' });
  });

  it('system.workers lists the workers of the store to operators only', async () => {
    // a worker of another host, as its record in the shared store looks (this server registered itself too)
    const { worker } = await p.server.store.workers.register(
      { id: 'e2e-worker', hostname: 'e2e.example', engine: 'podman test', capacity: 3, version: '0.0.0-test' },
      30_000,
    );
    const { workers } = await ops.system.workers.query();
    expect(workers.find((w) => w.id === 'e2e-worker')).toEqual({
      id: 'e2e-worker',
      hostname: 'e2e.example',
      state: 'alive',
      leaseExpired: false,
      drainRequested: false,
      capacity: 3,
      inUse: 0,
      lastHeartbeat: worker.heartbeatAt,
      leaseUntil: worker.leaseUntil,
      engine: 'podman test',
      version: '0.0.0-test',
      startedAt: worker.startedAt,
    });
    expect(await code(acme.system.workers.query())).toBe('FORBIDDEN');
    await expect(acme.system.workers.query()).rejects.toThrow(/operators only/);
    await p.server.store.workers.deregister('e2e-worker', worker.epoch);
    expect((await ops.system.workers.query()).workers.find((w) => w.id === 'e2e-worker')?.state).toBe('stopped');
  });
});

describe('input limits', () => {
  it('refuses each bad request with a clear message and the right code', async () => {
    const cases: Array<[string, Parameters<MgxClient['sessions']['create']['mutate']>[0], string, RegExp]> = [
      ['unknown framework', { framework: 'nope', prompt: 'x' }, 'BAD_REQUEST', /unknown framework "nope"/],
      [
        'prompt too large',
        { framework: 'script', prompt: 'x'.repeat(5000) },
        'PAYLOAD_TOO_LARGE',
        /prompt is 5000 bytes; the limit is 4096/,
      ],
      ['bad workspace id', { framework: 'script', prompt: 'x', workspaceId: '../../etc' }, 'BAD_REQUEST', /workspaceId must be/],
      ['memory over the maximum', { framework: 'script', prompt: 'x', memory: '1g' }, 'BAD_REQUEST', /exceeds the server maximum of 512m/],
      ['memory not a size', { framework: 'script', prompt: 'x', memory: 'lots' }, 'BAD_REQUEST', /is not a size/],
      [
        'timeout over the maximum',
        { framework: 'script', prompt: 'x', timeoutSeconds: 3600 },
        'BAD_REQUEST',
        /exceeds the server maximum of 120/,
      ],
      ['cpus over the maximum', { framework: 'script', prompt: 'x', cpus: 4 }, 'BAD_REQUEST', /exceeds the server maximum of 1/],
      ['egress not allowed', { framework: 'script', prompt: 'x', network: 'egress' }, 'FORBIDDEN', /egress is not allowed/],
      ['image override', { framework: 'script', prompt: 'x', image: 'alpine' } as never, 'BAD_REQUEST', /[Uu]nrecognized key.*image/],
      [
        'privileged override',
        { framework: 'script', prompt: 'x', privileged: true, user: '0:0' } as never,
        'BAD_REQUEST',
        /[Uu]nrecognized key/,
      ],
    ];
    for (const [name, input, want, message] of cases) {
      const err = (await acme.sessions.create.mutate(input).then(
        () => null,
        (e: unknown) => e,
      )) as { data?: { code?: string }; message: string } | null;
      expect(err, name).not.toBeNull();
      expect(err!.data?.code, name).toBe(want);
      expect(err!.message, name).toMatch(message);
    }
  });

  it('delivers allowed env to the agent and refuses loader, runtime and malformed variables', async () => {
    const s = await acme.sessions.create.mutate({
      framework: 'script',
      prompt: script({ getenv: 'GREETING' }),
      env: { GREETING: 'hello world', APP_MODE: 'test' },
    });
    expect(s.env).toEqual({ GREETING: 'hello world', APP_MODE: 'test' });
    const events = await collect(acme, s.id);
    expect(events.find((e) => e.type === 'MESSAGE' && e.data.done)?.data.text).toBe('GREETING=hello world');
    const refused: Array<[Record<string, string>, RegExp]> = [
      [{ PATH: '/tmp' }, /env name PATH is not allowed/],
      [{ LD_PRELOAD: '/tmp/x.so' }, /env name LD_PRELOAD is not allowed/],
      [{ LD_LIBRARY_PATH: '/tmp' }, /LD_LIBRARY_PATH is not allowed/],
      [{ NODE_OPTIONS: '--require /tmp/x.js' }, /NODE_OPTIONS is not allowed/],
      [{ MGX_INGEST_SOCKET: '/tmp/x' }, /MGX_INGEST_SOCKET is not allowed/],
      [{ 'A=B': 'x' }, /must be upper-case letters/],
      [{ lower: 'x' }, /must be upper-case letters/],
      [{ OK: 'a\u0000b' }, /contains a NUL or newline/],
      [{ OK: 'line\ninjected=1' }, /contains a NUL or newline/],
    ];
    for (const [env, message] of refused) {
      const err = (await acme.sessions.create.mutate({ framework: 'script', prompt: 'x', env }).then(
        () => null,
        (e: unknown) => e,
      )) as { data?: { code?: string }; message: string } | null;
      expect(err?.data?.code, JSON.stringify(env)).toBe('BAD_REQUEST');
      expect(err?.message, JSON.stringify(env)).toMatch(message);
    }
  });

  it('answers an oversized body with 413 before parsing it', async () => {
    const res = await fetch(`${p.server.url}/trpc/sessions.create`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${ACME}` },
      body: JSON.stringify({ framework: 'script', prompt: 'x'.repeat(200_000) }),
    });
    expect(res.status).toBe(413);
  });

  it.each(['../x', 'a/b', '', 'x'.repeat(65), 'a b'])('refuses the session id %j everywhere', async (bad) => {
    expect(await code(acme.sessions.get.query({ sessionId: bad }))).toBe('BAD_REQUEST');
    expect(await code(acme.sessions.events.query({ sessionId: bad }))).toBe('BAD_REQUEST');
    expect(await code(acme.sessions.cancel.mutate({ sessionId: bad }))).toBe('BAD_REQUEST');
  });

  it('refuses a malformed list cursor', async () => {
    expect(await code(acme.sessions.list.query({ cursor: 'zzz' }))).toBe('BAD_REQUEST');
  });
});

describe('reading', () => {
  it('frameworks.list reports the frameworks with their options schema; system.info the engine, image, store and limits', async () => {
    const frameworks = await acme.frameworks.list.query();
    expect(frameworks.map((f) => f.name)).toContain('script');
    expect(frameworks[0]).toHaveProperty('optionsSchema');
    const info = await acme.system.info.query();
    expect(info.engine).toMatchObject({ engine: expect.stringMatching(/podman|docker/) });
    expect(info.image).toMatchObject({ name: process.env.AGENT_CONTAINER_IMAGE ?? 'mgx-agent:latest', present: true });
    expect(info.limits).toMatchObject({ maxMemoryBytes: 512 * 1024 ** 2, maxTimeoutSeconds: 120, maxPromptBytes: 4096 });
    expect(info.version).toMatch(/^\d+\.\d+\.\d+/);
    // server paths (the store's file, the engine's socket) only for operators
    expect(info.store).toBe('sqlite');
    expect(info.engine).not.toHaveProperty('socket');
    expect(JSON.stringify(info)).not.toContain(p.dataDir);
    const opsInfo = await ops.system.info.query();
    expect(opsInfo.store).toMatch(/^sqlite:/);
    expect(opsInfo.store).toContain(p.dataDir);
    expect(opsInfo.engine).toMatchObject({ socket: p.server.runtime!.socket });
    // nor in the health checks of a caller without a token, or in /healthz
    const health = await createMgxClient({ url: p.server.url }).system.health.query();
    expect(health.checks.store?.detail).toBe('sqlite');
    expect(JSON.stringify(health)).not.toContain(p.dataDir);
    expect(JSON.stringify(health)).not.toContain(p.server.runtime!.socket);
    const healthz = await fetch(`${p.server.url}/healthz`).then((r) => r.text());
    expect(healthz).not.toContain(p.dataDir);
    expect(healthz).not.toContain(p.server.runtime!.socket);
    expect((await ops.system.health.query()).checks.store?.detail).toContain(p.dataDir);
  });

  it('streams one event per SSE message on sessions.stream, stored batches on sessions.streamBatches, both resumable by seq', async () => {
    const s = await acme.sessions.create.mutate({ framework: 'script', prompt: script({ events: { count: 1200, size: 1000 } }) });
    const all = await collect(acme, s.id);
    /** The raw SSE messages that carry data (not the connected, ping or return events). */
    const sse = async (proc: 'stream' | 'streamBatches', lastEventId?: string) => {
      const input = encodeURIComponent(JSON.stringify({ sessionId: s.id, ...(lastEventId ? { lastEventId } : {}) }));
      const text = await fetch(`${p.server.url}/trpc/sessions.${proc}?input=${input}`, {
        headers: { authorization: `Bearer ${ACME}` },
      }).then((r) => r.text());
      return text
        .split('\n\n')
        .map((block) =>
          Object.fromEntries(
            block
              .split('\n')
              .filter((l) => l.includes(':'))
              .map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]),
          ),
        )
        .filter((m) => m.id && m.data && !m.event)
        .map((m) => ({ id: m.id as string, data: JSON.parse(m.data as string) as unknown }));
    };
    const single = await sse('stream');
    expect(single.map((m) => m.data)).toEqual(all);
    expect(single.map((m) => m.id)).toEqual(all.map((e) => String(e.seq)));

    const batched = (await sse('streamBatches')) as Array<{ id: string; data: SessionEvent[] }>;
    expect(batched.flatMap((m) => m.data)).toEqual(all);
    // a burst of 1200 events of 1 KB travels in a handful of messages of at most ~256 KiB
    expect(batched.length).toBeGreaterThan(3);
    expect(batched.length).toBeLessThan(20);
    for (const m of batched) {
      expect(m.id).toBe(String(m.data.at(-1)!.seq));
      expect(JSON.stringify(m.data).length).toBeLessThan(256 * 1024 + 64 * 1024);
    }
    const from = all[700]!.seq;
    const rest = (await sse('streamBatches', String(from))) as Array<{ data: SessionEvent[] }>;
    expect(rest.flatMap((m) => m.data).map((e) => e.seq)).toEqual(all.slice(701).map((e) => e.seq));
  });

  it('sessions.events pages through stored events by seq', async () => {
    const s = await acme.sessions.create.mutate({ framework: 'script', prompt: script({ events: { count: 50, size: 10 } }) });
    const all = await collect(acme, s.id);
    const first = await acme.sessions.events.query({ sessionId: s.id, afterSeq: 0, limit: 20 });
    const second = await acme.sessions.events.query({ sessionId: s.id, afterSeq: first.lastSeq, limit: 1000 });
    expect([...first.events, ...second.events]).toEqual(all);
    expect(first.events).toHaveLength(20);
  });
});

/** A loopback TCP proxy whose connections the test can cut, like a flaky network. */
async function cuttableProxy(target: URL): Promise<{ url: string; cut: () => number; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    sockets.add(client);
    sockets.add(upstream);
    client.pipe(upstream).pipe(client);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    cut: () => {
      const n = sockets.size;
      for (const s of sockets) s.destroy();
      sockets.clear();
      return n;
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

describe('streaming through a dropped connection', () => {
  it('resumes from the last event id after the connection is cut mid-stream: no gap, no duplicate', async () => {
    const proxy = await cuttableProxy(new URL(p.server.url));
    try {
      const viaProxy = createMgxClient({ url: proxy.url, token: ACME });
      const s = await acme.sessions.create.mutate({
        framework: 'script',
        prompt: script(
          { events: { count: 100, size: 20 } },
          { sleep: 1200 },
          { events: { count: 100, size: 20 } },
          { sleep: 1200 },
          { events: { count: 100, size: 20 } },
        ),
      });
      const seen: SessionEvent[] = [];
      let cuts = 0;
      for await (const ev of followSession(viaProxy, s.id)) {
        seen.push(ev);
        // cut the network twice while the agent is still producing
        if (ev.type === 'LOG' && (ev.data.i === 99 || (ev.data.i === 50 && cuts === 1))) {
          if (proxy.cut() > 0) cuts++;
        }
      }
      expect(cuts).toBe(2);
      const stored = await collect(acme, s.id);
      expect(seen.map((e) => e.seq)).toEqual(stored.map((e) => e.seq));
      expect(seen).toEqual(stored);
      expect(seen.at(-1)?.type).toBe('FINISH');
    } finally {
      await proxy.close();
    }
  });
});
