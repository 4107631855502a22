import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMgxClient, type MgxClient } from '@mgx/client';
import { SqliteStore } from '@mgx/event-store';
import { discoverSocket, DockerRuntime, LABELS, type ContainerRuntime, type ContainerSummary } from '@mgx/runtime';
import { newServerProcess, type ServerProcess } from '../support/server-process.js';
import { collect, script, sleep, storedEvents } from '../support/sessions.js';

// A fleet on one host: one API process and two worker processes over one SQLite file, each
// worker with its own owner, workspace root and engine: worker A on Podman, worker B on the
// Docker engine `npm test` starts (infra/docker/setup.sh). Leases are short (heartbeat 0.5 s,
// lease 2 s) so a dead worker is noticed quickly; nothing here waits on a fixed time. Every
// process has the same fleet-wide per-tenant limit (2) and the same tenants, from a token file.

/** The Docker engine's socket, or why there is none (then both workers run on Podman). */
function dockerEngine(): { host: string } | { why: string } {
  if (process.env.MGX_TEST_DOCKER === '0') return { why: 'MGX_TEST_DOCKER=0' };
  // `npm test` starts the engine before any test and passes its socket
  if (process.env.MGX_TEST_DOCKER_HOST) return { host: process.env.MGX_TEST_DOCKER_HOST };
  if (process.getuid?.() !== 0) return { why: 'starting dockerd needs root' };
  try {
    // run on its own (vitest on this file): this blocks the file's worker, so never for long
    const host = execFileSync('bash', ['infra/docker/setup.sh'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 300_000,
    }).trim();
    return host ? { host } : { why: 'infra/docker/setup.sh printed no socket' };
  } catch (err) {
    return { why: `infra/docker/setup.sh failed: ${(err as Error).message.split('\n')[0]}` };
  }
}

const docker = dockerEngine();
const engineB = 'host' in docker ? 'docker' : 'podman (docker unavailable)';
if ('why' in docker) {
  console.warn(`[mgx test] FLEET TEST: worker B runs on Podman, not Docker: ${docker.why}`);
}

const dataDir = mkdtempSync(join(tmpdir(), 'mgx-fleet-'));
let api: ServerProcess;
let a: { server: ServerProcess; owner: string; runtime: ContainerRuntime };
let b: { server: ServerProcess; owner: string; runtime: ContainerRuntime };
let client: MgxClient;
const extraDirs: string[] = [];

/** The fleet-wide per-tenant limit, the same on every process. */
const PER_TENANT = 2;
const TENANTS = ['acme', 'globex', 'initech', 'umbrella'] as const;
type Tenant = (typeof TENANTS)[number];
const tokenOf = (t: string) => `${t}-token-0123456789abcdef`;
const tokensFile = join(dataDir, 'tokens');
writeFileSync(tokensFile, `# the fleet's tenants\n${TENANTS.map((t) => `${t}:${tokenOf(t)}`).join('\n')}\n`);
/** One client per tenant, and an operator's, which sees every tenant's sessions. */
const clients = {} as Record<Tenant, MgxClient>;
let ops: MgxClient;

const common = {
  MGX_DATA_DIR: dataDir,
  MGX_API_TOKENS_FILE: tokensFile,
  MGX_OPERATOR_TOKENS: `ops:${tokenOf('ops')}`,
  MGX_MAX_CONCURRENT_PER_TENANT: String(PER_TENANT),
  MGX_LOG_LEVEL: 'info',
  MGX_WORKER_HEARTBEAT_SECONDS: '0.5',
  MGX_WORKER_LEASE_SECONDS: '2',
  AGENT_MONITOR_POLL_SECONDS: '0.5',
  AGENT_CONTAINER_MEMORY_LIMIT: '256m',
  AGENT_STOP_GRACE_SECONDS: '2',
  AGENT_MAX_CONCURRENT_CONTAINERS: '2',
};

async function worker(name: 'a' | 'b', containerHost: string | undefined) {
  const {
    server,
    owner,
    dataDir: unused,
  } = await newServerProcess(`mgx-fleet-${name}`, {
    ...common,
    MGX_ROLE: 'worker',
    MGX_WORKSPACE_ROOT: join(dataDir, `workspaces-${name}`),
    ...(containerHost ? { CONTAINER_HOST: containerHost } : {}),
  });
  extraDirs.push(unused);
  const runtime = new DockerRuntime({ address: discoverSocket({ containerHost: containerHost ?? process.env.CONTAINER_HOST }) });
  return { server, owner, runtime };
}

/** Containers of a worker on its engine (any state). */
const containersOf = (w: typeof a) => w.runtime.list({ [LABELS.owner]: w.owner });

/** Both workers, by name. */
const workers = () =>
  [
    ['a', a],
    ['b', b],
  ] as const;

/**
 * Samples both engines every 50 ms until `stop`: `probe` gets each worker's running containers
 * (of this fleet) per sample, both engines listed together.
 */
function sampleEngines(probe: (running: { a: ContainerSummary[]; b: ContainerSummary[] }) => void) {
  let done = false;
  let samples = 0;
  const loop = (async () => {
    while (!done) {
      const [onA, onB] = await Promise.all(workers().map(([, w]) => containersOf(w)));
      probe({ a: onA!.filter((c) => c.state === 'running'), b: onB!.filter((c) => c.state === 'running') });
      samples++;
      await sleep(50);
    }
  })();
  return async () => {
    done = true;
    await loop;
    return samples;
  };
}

/** The session's one FINISH: it is the last event, and the only one. */
async function finishOf(id: string) {
  const events = await collect(ops, id);
  expect(events.filter((e) => e.type === 'FINISH')).toHaveLength(1);
  expect(events.at(-1)?.type).toBe('FINISH');
  return { finish: events.at(-1)!, events };
}

/** Which worker runs a session, once it is running (from sessions.get). */
const runningOn = (id: string) =>
  waitFor(`session ${id} running`, async () => {
    const s = await ops.sessions.get.query({ sessionId: id });
    return s.status === 'running' && s.workerId !== null && s.workerId;
  });

/** The store as an operator would read it: the workers table. */
async function workerRecord(id: string) {
  const store = SqliteStore.open({ file: join(dataDir, 'mgx.sqlite') });
  try {
    return await store.workers.get(id);
  } finally {
    await store.close();
  }
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    await sleep(100);
  }
  throw new Error(`${what}: not within ${ms} ms`);
}

/**
 * At least `n` workspaces of `tenant` (a workspace is its first tenant's) held by each worker:
 * short sessions on fresh workspaces, four at a time so they spread, until each worker has run
 * `n` of them.
 */
async function workspacesHeldByEach(n: number, tenant: (typeof TENANTS)[number]): Promise<{ a: string[]; b: string[] }> {
  const held = { a: [] as string[], b: [] as string[] };
  for (let round = 0; round < 8 && (held.a.length < n || held.b.length < n); round++) {
    const made = await Promise.all(
      TENANTS.map((_t, i) =>
        clients[tenant].sessions.create.mutate({
          framework: 'script',
          workspaceId: `ws-${randomBytes(4).toString('hex')}-${i}`,
          prompt: script({ sleep: 300 }),
        }),
      ),
    );
    for (const s of made) {
      expect((await finishOf(s.id)).finish.data).toMatchObject({ status: 'succeeded' });
      const { workerId } = await ops.sessions.get.query({ sessionId: s.id });
      if (workerId === a.owner) held.a.push(s.workspaceId);
      if (workerId === b.owner) held.b.push(s.workspaceId);
    }
  }
  if (held.a.length < n || held.b.length < n) throw new Error(`the fleet did not spread short sessions: ${JSON.stringify(held)}`);
  return held;
}

beforeAll(async () => {
  const apiProcess = await newServerProcess('mgx-fleet-api', { ...common, MGX_ROLE: 'api' });
  api = apiProcess.server;
  extraDirs.push(apiProcess.dataDir);
  a = await worker('a', process.env.CONTAINER_HOST);
  b = await worker('b', 'host' in docker ? docker.host : process.env.CONTAINER_HOST);
  await api.start();
  // one at a time: on a busy host two processes starting at once can each take long
  await a.server.start();
  await b.server.start();
  for (const t of TENANTS) clients[t] = createMgxClient({ url: api.url, token: tokenOf(t) });
  client = clients.acme;
  ops = createMgxClient({ url: api.url, token: tokenOf('ops') });
}, 300_000);

afterAll(async () => {
  for (const s of [api, a?.server, b?.server]) await s?.stop('SIGTERM').catch(() => null);
  for (const w of [a, b])
    for (const c of w ? await containersOf(w).catch(() => []) : []) await w.runtime.remove(c.id).catch(() => undefined);
  for (const d of [dataDir, ...extraDirs]) rmSync(d, { recursive: true, force: true });
});

describe(`a fleet: one API process, worker A on podman, worker B on ${engineB}, one SQLite store`, () => {
  it('spreads 20 sessions of four tenants over both workers and engines; none runs twice', async () => {
    const N = 20;
    // four tenants, so the per-tenant limit (2) leaves the fleet's four slots all usable
    const ids = await Promise.all(
      Array.from({ length: N }, (_, i) =>
        clients[TENANTS[i % TENANTS.length]!].sessions.create
          .mutate({ framework: 'script', prompt: script({ say: `s${i}` }, { sleep: 1200 }) })
          .then((s) => s.id),
      ),
    );
    // which engine ran each session, by the labels of the containers each engine lists
    const seen = { a: new Set<string>(), b: new Set<string>() };
    let done = false;
    const sampler = (async () => {
      while (!done) {
        await Promise.all(
          workers().map(async ([k, w]) => {
            for (const c of await containersOf(w)) if (c.labels[LABELS.sessionId]) seen[k].add(c.labels[LABELS.sessionId]!);
          }),
        );
        await sleep(50);
      }
    })();
    const ends = await Promise.all(ids.map((id) => collect(ops, id)));
    done = true;
    await sampler;

    for (const events of ends) {
      expect(events.at(-1)).toMatchObject({ type: 'FINISH', data: { status: 'succeeded' } });
      expect(events.filter((e) => e.type === 'FINISH')).toHaveLength(1);
      expect(events.filter((e) => e.type === 'CONTAINER_STARTED')).toHaveLength(1);
      expect(events.filter((e) => e.type === 'START')).toHaveLength(1);
    }
    const byWorker = new Map<string, string[]>();
    for (const id of ids) {
      const s = await ops.sessions.get.query({ sessionId: id });
      byWorker.set(s.workerId!, [...(byWorker.get(s.workerId!) ?? []), id]);
      // its container was seen on its worker's engine only
      const onA = seen.a.has(id);
      const onB = seen.b.has(id);
      expect(onA && onB).toBe(false);
      if (onA) expect(s.workerId).toBe(a.owner);
      if (onB) expect(s.workerId).toBe(b.owner);
    }
    expect([...byWorker.keys()].sort()).toEqual([a.owner, b.owner].sort());
    expect(byWorker.get(a.owner)!.length + byWorker.get(b.owner)!.length).toBe(N);
    // counted on the engines, by their labels: both ran some, only these, each on one engine
    // (a sample can miss a short-lived container on a loaded host: the store's count is exact)
    expect(seen.a.size).toBeGreaterThan(0);
    expect(seen.b.size).toBeGreaterThan(0);
    expect(seen.a.size).toBeLessThanOrEqual(byWorker.get(a.owner)!.length);
    expect(seen.b.size).toBeLessThanOrEqual(byWorker.get(b.owner)!.length);
    for (const id of [...seen.a, ...seen.b]) expect(ids).toContain(id);
    // both workers registered, alive, on their engines
    expect(await workerRecord(a.owner)).toMatchObject({ state: 'alive', capacity: 2 });
    expect(await workerRecord(b.owner)).toMatchObject({ state: 'alive', capacity: 2 });
  }, 240_000);

  it(`holds the per-tenant limit (${PER_TENANT}) across the fleet, counted on both engines together`, async () => {
    // two workspaces held by each worker: a session on one runs on its holder, so the tenant's
    // sessions below run on both workers, four at once if each worker only kept its own count
    const held = await workspacesHeldByEach(2, 'initech');
    const order = [held.a[0]!, held.b[0]!, held.a[1]!, held.b[1]!];
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) {
      const s = await clients.initech.sessions.create.mutate({
        framework: 'script',
        workspaceId: order[i % order.length]!,
        prompt: script({ say: `t${i}` }, { sleep: 1500 }),
      });
      ids.push(s.id);
    }
    let most = 0;
    const engines = new Set<string>();
    const stop = sampleEngines((running) => {
      let n = 0;
      for (const [k, w] of workers()) {
        const mine = running[k].filter((c) => c.labels[LABELS.tenant] === 'initech' && c.labels[LABELS.owner] === w.owner);
        if (mine.length > 0) engines.add(k);
        n += mine.length;
      }
      most = Math.max(most, n);
    });
    const ends = await Promise.all(ids.map(finishOf));
    const samples = await stop();

    for (const { finish } of ends) expect(finish.data).toMatchObject({ status: 'succeeded' });
    expect(samples).toBeGreaterThan(10);
    expect(most).toBe(PER_TENANT);
    expect([...engines].sort()).toEqual(['a', 'b']);
    // each ran on the holder of its workspace
    for (const [i, id] of ids.entries()) {
      const holder = held.a.includes(order[i % order.length]!) ? a.owner : b.owner;
      expect((await ops.sessions.get.query({ sessionId: id })).workerId).toBe(holder);
    }
  }, 240_000);

  it('a cancel through the API process stops a session on each worker: cancelled, one FINISH, container removed', async () => {
    // four long sessions of two tenants fill the fleet's four slots: two run on each worker
    const tenants = ['acme', 'acme', 'globex', 'globex'] as const;
    const ids = await Promise.all(
      tenants.map((t) =>
        clients[t].sessions.create
          .mutate({ framework: 'script', prompt: script({ say: 'up' }, { sleep: 600_000 }), timeoutSeconds: 300 })
          .then((s) => s.id),
      ),
    );
    const on = await Promise.all(ids.map(runningOn));
    expect(on.filter((w) => w === a.owner)).toHaveLength(2);
    expect(on.filter((w) => w === b.owner)).toHaveLength(2);
    for (const id of ids) await waitFor(`START of ${id}`, async () => (await storedEvents(ops, id)).some((e) => e.type === 'START'));

    for (const [i, id] of ids.entries()) {
      const w = on[i] === a.owner ? a : b;
      const other = w === a ? b : a;
      // its container runs on its worker's engine, and only there
      expect((await w.runtime.list({ [LABELS.sessionId]: id })).map((c) => c.state)).toEqual(['running']);
      expect(await other.runtime.list({ [LABELS.sessionId]: id })).toEqual([]);

      expect(await clients[tenants[i]!].sessions.cancel.mutate({ sessionId: id })).toMatchObject({ sessionId: id, cancelled: true });
      const { finish, events } = await finishOf(id);
      expect(finish.data).toMatchObject({ status: 'cancelled', reason: 'cancelled' });
      expect(events.filter((e) => e.type === 'CANCELLED')).toHaveLength(1);
      expect(await ops.sessions.get.query({ sessionId: id })).toMatchObject({
        status: 'cancelled',
        reason: 'cancelled',
        workerId: w.owner,
      });
      await waitFor(
        `removal of the container of ${id}`,
        async () => (await w.runtime.list({ [LABELS.sessionId]: id })).length === 0,
        10_000,
      );
    }
  }, 240_000);

  it('runs the sessions of one workspace one at a time, in the order they were submitted, on its holder', async () => {
    const ws = `ws-serial-${randomBytes(4).toString('hex')}`;
    // each reads what the one before wrote, then writes its own turn
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      // one tenant: a workspace is its first tenant's, other tenants' sessions on it are refused
      const s = await clients.acme.sessions.create.mutate({
        framework: 'script',
        workspaceId: ws,
        prompt: script({ read: 'last.txt' }, { sleep: 1000 }, { write: { path: 'last.txt', content: `turn ${i}` } }),
      });
      ids.push(s.id);
    }
    let most = 0;
    const engines = new Set<string>();
    const stop = sampleEngines((running) => {
      let n = 0;
      for (const [k] of workers()) {
        const mine = running[k].filter((c) => ids.includes(c.labels[LABELS.sessionId] ?? ''));
        if (mine.length > 0) engines.add(k);
        n += mine.length;
      }
      most = Math.max(most, n);
    });
    const ends = await Promise.all(ids.map(finishOf));
    const samples = await stop();

    expect(samples).toBeGreaterThan(10);
    expect(most).toBe(1);
    expect(engines.size).toBe(1);
    for (const [i, { finish, events }] of ends.entries()) {
      expect(finish.data).toMatchObject({ status: 'succeeded' });
      // what it found is what the session submitted before it left
      const read = events.find((e) => e.type === 'MESSAGE' && String(e.data.text).startsWith('last.txt='));
      expect(read?.data.text).toBe(`last.txt=${i === 0 ? '(missing)' : `turn ${i - 1}`}`);
    }
    // in the store: each started after the one before it had ended, all on the workspace's holder
    const views = await Promise.all(ids.map((id) => ops.sessions.get.query({ sessionId: id })));
    expect(new Set(views.map((v) => v.workerId)).size).toBe(1);
    for (let i = 1; i < views.length; i++) expect(views[i]!.startedAt!).toBeGreaterThanOrEqual(views[i - 1]!.endedAt!);
    const holder = views[0]!.workerId === a.owner ? 'a' : 'b';
    expect([...engines]).toEqual([holder]);
    expect(existsSync(join(dataDir, `workspaces-${holder}`, ws))).toBe(true);
    expect(existsSync(join(dataDir, `workspaces-${holder === 'a' ? 'b' : 'a'}`, ws))).toBe(false);
  }, 240_000);

  it('kill -9 of a worker mid-session: after its lease its sessions end failed/lost once, the other keeps serving, nothing queued is lost', async () => {
    // three long sessions on two workers of two slots each: each worker runs at least one
    // (of two tenants: one tenant may run only two at once)
    const long = await Promise.all(
      (['acme', 'globex', 'acme'] as const).map((t) =>
        clients[t].sessions.create.mutate({ framework: 'script', prompt: script({ say: 'long' }, { sleep: 8000 }), timeoutSeconds: 120 }),
      ),
    );
    const running = await waitFor('the long sessions running', async () => {
      const all = await Promise.all(long.map((s) => ops.sessions.get.query({ sessionId: s.id })));
      return all.every((s) => s.status === 'running') && all;
    });
    const onB = running.filter((s) => s.workerId === b.owner).map((s) => s.id);
    const onA = running.filter((s) => s.workerId === a.owner).map((s) => s.id);
    expect(onB.length).toBeGreaterThan(0);
    expect(onA.length + onB.length).toBe(3);
    // their agents have started
    for (const id of onB) await waitFor(`START of ${id}`, async () => (await storedEvents(ops, id)).some((e) => e.type === 'START'));

    await b.server.stop('SIGKILL');
    // queued while B is dead: all of them run on A
    const later = await Promise.all(
      Array.from({ length: 3 }, (_, i) => client.sessions.create.mutate({ framework: 'script', prompt: script({ say: `after ${i}` }) })),
    );

    for (const id of onB) {
      const events = await collect(ops, id);
      const finish = events.filter((e) => e.type === 'FINISH');
      expect(finish).toHaveLength(1);
      expect(finish[0]!.data).toMatchObject({ status: 'failed', reason: 'lost' });
      expect(String(finish[0]!.data.message)).toMatch(new RegExp(`^worker ${b.owner} was lost \\(no heartbeat since \\d{4}-`));
      expect(await ops.sessions.get.query({ sessionId: id })).toMatchObject({ status: 'failed', reason: 'lost', workerId: b.owner });
    }
    expect(await workerRecord(b.owner)).toMatchObject({ state: 'dead' });
    // the agents of the lost sessions still run on B's engine: nobody can reach them but B
    for (const id of onB) expect((await b.runtime.list({ [LABELS.sessionId]: id })).length).toBe(1);

    for (const id of onA) expect((await collect(ops, id)).at(-1)).toMatchObject({ type: 'FINISH', data: { status: 'succeeded' } });
    for (const s of later) {
      expect((await collect(client, s.id)).at(-1)).toMatchObject({ type: 'FINISH', data: { status: 'succeeded' } });
      expect((await client.sessions.get.query({ sessionId: s.id })).workerId).toBe(a.owner);
    }
    expect(await workerRecord(a.owner)).toMatchObject({ state: 'alive' });

    // restarted, B resurrects nothing: its reconcile (before it answers) removed the lost sessions' containers
    await b.server.start();
    expect(await containersOf(b)).toEqual([]);
    expect(await workerRecord(b.owner)).toMatchObject({ state: 'alive' });
    for (const id of onB) {
      expect(await ops.sessions.get.query({ sessionId: id })).toMatchObject({ status: 'failed', reason: 'lost' });
      expect((await storedEvents(ops, id)).filter((e) => e.type === 'FINISH')).toHaveLength(1);
    }

    // and serves again: with A stopped (a plain stop, it keeps its lease), B runs what is queued
    await a.server.stop('SIGTERM');
    const again = await Promise.all(
      Array.from({ length: 2 }, (_, i) => client.sessions.create.mutate({ framework: 'script', prompt: script({ say: `back ${i}` }) })),
    );
    for (const s of again) {
      expect((await collect(client, s.id)).at(-1)).toMatchObject({ type: 'FINISH', data: { status: 'succeeded' } });
      expect((await client.sessions.get.query({ sessionId: s.id })).workerId).toBe(b.owner);
    }
    // each container is removed right after its session's FINISH
    await waitFor(`worker B's containers removed`, async () => (await containersOf(b)).length === 0, 10_000);

    // A back too, so the tests after this one have both workers
    await a.server.start();
    expect(await workerRecord(a.owner)).toMatchObject({ state: 'alive' });
  }, 300_000);

  it('a session on a workspace whose worker died ends failed/workspace_unavailable; the other worker does not run it; the worker back runs the next', async () => {
    const ws = `ws-held-${randomBytes(4).toString('hex')}`;
    const first = await client.sessions.create.mutate({
      framework: 'script',
      workspaceId: ws,
      prompt: script({ write: { path: 'mine.txt', content: 'kept' } }),
    });
    expect((await finishOf(first.id)).finish.data).toMatchObject({ status: 'succeeded' });
    const holderId = (await ops.sessions.get.query({ sessionId: first.id })).workerId;
    const x = holderId === a.owner ? a : b;
    const other = x === a ? b : a;
    expect(x.owner).toBe(holderId);

    await x.server.stop('SIGKILL');
    /** A session on the dead worker's workspace: it ends workspace_unavailable, never started anywhere. */
    const unavailable = async (prompt: string) => {
      const s = await client.sessions.create.mutate({ framework: 'script', workspaceId: ws, prompt });
      const { finish, events } = await finishOf(s.id);
      expect(finish.data).toMatchObject({ status: 'failed', reason: 'workspace_unavailable' });
      expect(String(finish.data.message)).toMatch(
        new RegExp(`^workspace ${ws} is held by worker ${x.owner}, which was lost \\(no heartbeat since \\d{4}-`),
      );
      expect(events.map((e) => e.type)).toEqual(['SESSION_QUEUED', 'FINISH']);
      expect(await ops.sessions.get.query({ sessionId: s.id })).toMatchObject({
        status: 'failed',
        reason: 'workspace_unavailable',
        workerId: null,
        containerId: null,
      });
      for (const [, w] of workers()) expect(await w.runtime.list({ [LABELS.sessionId]: s.id })).toEqual([]);
    };
    // queued before its lease ran out: settled with the worker
    await unavailable(script({ say: 'queued while the holder was dying' }));
    expect(await workerRecord(x.owner)).toMatchObject({ state: 'dead' });
    // queued after it was declared dead: not left waiting for a worker that may never come back
    await unavailable(script({ say: 'queued after the holder was declared dead' }));

    // the other worker serves other workspaces meanwhile
    const elsewhere = await client.sessions.create.mutate({ framework: 'script', prompt: 'elsewhere' });
    expect((await finishOf(elsewhere.id)).finish.data).toMatchObject({ status: 'succeeded' });
    expect((await ops.sessions.get.query({ sessionId: elsewhere.id })).workerId).toBe(other.owner);

    // back, the worker holds its workspace again: the next session on it runs there, on its files
    await x.server.start();
    expect(await workerRecord(x.owner)).toMatchObject({ state: 'alive' });
    const back = await client.sessions.create.mutate({ framework: 'script', workspaceId: ws, prompt: script({ read: 'mine.txt' }) });
    const { finish, events } = await finishOf(back.id);
    expect(finish.data).toMatchObject({ status: 'succeeded' });
    expect(events.find((e) => e.type === 'MESSAGE' && e.data.done === true)?.data.text).toBe('mine.txt=kept');
    expect((await ops.sessions.get.query({ sessionId: back.id })).workerId).toBe(x.owner);
  }, 240_000);
});
