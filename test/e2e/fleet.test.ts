import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMgxClient, type MgxClient } from '@mgx/client';
import { SqliteStore } from '@mgx/event-store';
import { discoverSocket, DockerRuntime, LABELS, type ContainerRuntime } from '@mgx/runtime';
import { newServerProcess, type ServerProcess } from '../support/server-process.js';
import { collect, script, sleep, storedEvents } from '../support/sessions.js';

// A fleet on one host: one API process and two worker processes over one SQLite file, each
// worker with its own owner, workspace root and engine: worker A on Podman, worker B on the
// Docker engine `npm test` starts (infra/docker/setup.sh). Leases are short (heartbeat 0.5 s,
// lease 2 s) so a dead worker is noticed quickly; nothing here waits on a fixed time.

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

const common = {
  MGX_DATA_DIR: dataDir,
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
  client = createMgxClient({ url: api.url });
}, 300_000);

afterAll(async () => {
  for (const s of [api, a?.server, b?.server]) await s?.stop('SIGTERM').catch(() => null);
  for (const w of [a, b])
    for (const c of w ? await containersOf(w).catch(() => []) : []) await w.runtime.remove(c.id).catch(() => undefined);
  for (const d of [dataDir, ...extraDirs]) rmSync(d, { recursive: true, force: true });
});

describe(`a fleet: one API process, worker A on podman, worker B on ${engineB}, one SQLite store`, () => {
  it('spreads sessions over both workers and engines; none runs twice', async () => {
    const N = 12;
    const ids = await Promise.all(
      Array.from({ length: N }, (_, i) =>
        client.sessions.create.mutate({ framework: 'script', prompt: script({ say: `s${i}` }, { sleep: 1200 }) }).then((s) => s.id),
      ),
    );
    // which engine ran each session, by the labels of the containers each engine lists
    const seen = { a: new Set<string>(), b: new Set<string>() };
    let done = false;
    const sampler = (async () => {
      while (!done) {
        for (const [k, w] of [
          ['a', a],
          ['b', b],
        ] as const)
          for (const c of await containersOf(w)) if (c.labels[LABELS.sessionId]) seen[k].add(c.labels[LABELS.sessionId]!);
        await sleep(100);
      }
    })();
    const ends = await Promise.all(ids.map((id) => collect(client, id)));
    done = true;
    await sampler;

    for (const events of ends) {
      expect(events.at(-1)).toMatchObject({ type: 'FINISH', data: { status: 'succeeded' } });
      expect(events.filter((e) => e.type === 'CONTAINER_STARTED')).toHaveLength(1);
      expect(events.filter((e) => e.type === 'START')).toHaveLength(1);
    }
    const byWorker = new Map<string, string[]>();
    for (const id of ids) {
      const s = await client.sessions.get.query({ sessionId: id });
      byWorker.set(s.workerId!, [...(byWorker.get(s.workerId!) ?? []), id]);
      // its container was seen on its worker's engine only
      const onA = seen.a.has(id);
      const onB = seen.b.has(id);
      expect(onA && onB).toBe(false);
      if (onA) expect(s.workerId).toBe(a.owner);
      if (onB) expect(s.workerId).toBe(b.owner);
    }
    expect([...byWorker.keys()].sort()).toEqual([a.owner, b.owner].sort());
    expect(seen.a.size).toBeGreaterThan(0);
    expect(seen.b.size).toBeGreaterThan(0);
    // both workers registered, alive, on their engines
    expect(await workerRecord(a.owner)).toMatchObject({ state: 'alive', capacity: 2 });
    expect(await workerRecord(b.owner)).toMatchObject({ state: 'alive', capacity: 2 });
  }, 240_000);

  it('kill -9 of a worker mid-session: after its lease its sessions end failed/lost once, the other keeps serving, nothing queued is lost', async () => {
    // three long sessions on two workers of two slots each: each worker runs at least one
    const long = await Promise.all(
      Array.from({ length: 3 }, () =>
        client.sessions.create.mutate({ framework: 'script', prompt: script({ say: 'long' }, { sleep: 8000 }), timeoutSeconds: 120 }),
      ),
    );
    const running = await waitFor('the long sessions running', async () => {
      const all = await Promise.all(long.map((s) => client.sessions.get.query({ sessionId: s.id })));
      return all.every((s) => s.status === 'running') && all;
    });
    const onB = running.filter((s) => s.workerId === b.owner).map((s) => s.id);
    const onA = running.filter((s) => s.workerId === a.owner).map((s) => s.id);
    expect(onB.length).toBeGreaterThan(0);
    expect(onA.length + onB.length).toBe(3);
    // their agents have started
    for (const id of onB) await waitFor(`START of ${id}`, async () => (await storedEvents(client, id)).some((e) => e.type === 'START'));

    await b.server.stop('SIGKILL');
    // queued while B is dead: all of them run on A
    const later = await Promise.all(
      Array.from({ length: 3 }, (_, i) => client.sessions.create.mutate({ framework: 'script', prompt: script({ say: `after ${i}` }) })),
    );

    for (const id of onB) {
      const events = await collect(client, id);
      const finish = events.filter((e) => e.type === 'FINISH');
      expect(finish).toHaveLength(1);
      expect(finish[0]!.data).toMatchObject({ status: 'failed', reason: 'lost' });
      expect(String(finish[0]!.data.message)).toMatch(new RegExp(`^worker ${b.owner} was lost \\(no heartbeat since \\d{4}-`));
      expect(await client.sessions.get.query({ sessionId: id })).toMatchObject({ status: 'failed', reason: 'lost', workerId: b.owner });
    }
    expect(await workerRecord(b.owner)).toMatchObject({ state: 'dead' });
    // the agents of the lost sessions still run on B's engine: nobody can reach them but B
    for (const id of onB) expect((await b.runtime.list({ [LABELS.sessionId]: id })).length).toBe(1);

    for (const id of onA) expect((await collect(client, id)).at(-1)).toMatchObject({ type: 'FINISH', data: { status: 'succeeded' } });
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
      expect(await client.sessions.get.query({ sessionId: id })).toMatchObject({ status: 'failed', reason: 'lost' });
      expect((await storedEvents(client, id)).filter((e) => e.type === 'FINISH')).toHaveLength(1);
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
    expect(await containersOf(b)).toEqual([]);
  }, 300_000);
});
