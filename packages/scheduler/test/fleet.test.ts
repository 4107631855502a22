import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, onTestFinished } from 'vitest';
import { loadSettings, type Logger } from '@mgx/config';
import { SqliteStore, type SessionRecord, type WorkerInfo } from '@mgx/event-store';
import type { IngestHub } from '@mgx/ingest';
import { noopMetrics } from '@mgx/metrics';
import type { Monitor } from '@mgx/monitor';
import { LABELS, type ContainerRuntime } from '@mgx/runtime';
import { lostMessage, Reaper, Scheduler, settleWorker, WorkerLease, type WorkerLeaseOptions } from '../src/index.js';

// The worker side of a fleet at the store port: leases, the reaper, settlement. A real SQLite
// store (two connections to one file where two processes would race), a clock passed in.

const LEASE = 30_000;
const BEAT = 5_000;
const T0 = Date.UTC(2026, 11, 1, 12, 0, 0);

/** Log lines, to check what a worker says when it loses its lease. */
function capturingLogger() {
  const lines: { level: string; msg: string | undefined; obj: object }[] = [];
  const make = (): Logger => ({
    debug: (obj, msg) => lines.push({ level: 'debug', obj, msg }),
    info: (obj, msg) => lines.push({ level: 'info', obj, msg }),
    warn: (obj, msg) => lines.push({ level: 'warn', obj, msg }),
    error: (obj, msg) => lines.push({ level: 'error', obj, msg }),
    child: () => make(),
  });
  return { logger: make(), lines };
}

describe('fleet: leases, the reaper and settlement at the store port', () => {
  let file: string;
  let a: SqliteStore;
  let b: SqliteStore;
  let now: number;
  let n = 0;
  const clock = () => now;
  const info = (id: string): WorkerInfo => ({ id, hostname: 'h', engine: 'podman 5 unix:///x', capacity: 4, version: '0.1.0' });

  beforeEach(() => {
    file = join(mkdtempSync(join(tmpdir(), 'mgx-fleet-')), 'db.sqlite');
    // two connections to one file: two processes of a fleet
    a = SqliteStore.open({ file });
    b = SqliteStore.open({ file });
    now = T0;
  });
  afterEach(async () => {
    await a.close();
    await b.close();
    rmSync(dirname(file), { recursive: true, force: true });
  });

  const queue = async (workspaceId?: string): Promise<string> => {
    const id = `s-${++n}`;
    await a.sessions.createSession({
      id,
      tenant: 't',
      framework: 'script',
      prompt: '',
      workspaceId: workspaceId ?? id,
      options: {},
      env: {},
      limits: { memoryBytes: 1, cpuQuota: 1, timeoutMs: 60_000 },
      network: 'none',
    });
    return id;
  };
  /** Queues a session and has `worker` claim it: starting, with a container, or running. */
  const claimed = async (worker: string, stage: 'starting' | 'container' | 'running', workspaceId?: string): Promise<string> => {
    const id = await queue(workspaceId);
    // with the workspace rules, so the store records the worker as the workspace's holder
    const s = await a.sessions.claimNext(worker, { workspaces: { shared: false } });
    expect(s?.id).toBe(id);
    if (stage !== 'starting') await a.sessions.setContainer(id, `c-${id}`);
    if (stage === 'running') await a.sessions.markRunning(id, now, now + 60_000);
    return id;
  };
  const lease = (store: SqliteStore, id: string, extra: Partial<WorkerLeaseOptions> = {}) =>
    new WorkerLease({
      workers: store.workers,
      info: info(id),
      heartbeatMs: BEAT,
      leaseMs: LEASE,
      inUse: () => 1,
      now: clock,
      ...extra,
    });
  const reaper = (store: SqliteStore, workspacesShared = false) =>
    new Reaper({ store, metrics: noopMetrics, intervalMs: BEAT, workspacesShared, now: clock });
  const finishes = async (id: string) => (await a.events.read(id, 0, 1000)).filter((e) => e.type === 'FINISH');
  const get = async (id: string) => (await a.sessions.getSession(id))!;

  it('a lease is renewed by heartbeats and lost when the worker is declared dead; the worker registers again', async () => {
    const { logger, lines } = capturingLogger();
    let renewed = 0;
    const w = new WorkerLease({
      workers: a.workers,
      info: info('w1'),
      heartbeatMs: BEAT,
      leaseMs: LEASE,
      inUse: () => 2,
      now: clock,
      logger,
      renewed: () => renewed++,
    });
    expect(w.canClaim()).toBe(false);
    const first = await w.register();
    expect(first.previous).toBeNull();
    expect(w.epoch).toBe(1);
    expect(w.canClaim()).toBe(true);

    now += BEAT;
    await w.beat();
    expect(await a.workers.get('w1')).toMatchObject({ state: 'alive', inUse: 2, heartbeatAt: now, leaseUntil: now + LEASE });
    // within the lease nobody declares it dead
    now += LEASE - 1;
    expect(await reaper(b).sweep()).toEqual([]);
    // past it the local lease has run out too: no claims until the store renews it
    now += 2;
    expect(w.canClaim()).toBe(false);
    expect((await reaper(b).sweep()).map((x) => x.worker.id)).toEqual(['w1']);

    // the heartbeat is refused: claims stop, the worker registers again under a new epoch
    await w.beat();
    expect(w.epoch).toBe(2);
    expect(renewed).toBe(1);
    expect(w.canClaim()).toBe(true);
    expect(await a.workers.get('w1')).toMatchObject({ state: 'alive', epoch: 2 });
    expect(lines.some((l) => l.level === 'error' && /lease lost: this worker was declared dead/.test(l.msg ?? ''))).toBe(true);
  });

  it('a heartbeat of an older epoch (same MGX_OWNER started twice) loses the lease and says why', async () => {
    const { logger, lines } = capturingLogger();
    const old = lease(a, 'w1', { logger });
    await old.register();
    await lease(b, 'w1').register();
    await old.beat();
    expect(old.epoch).toBe(3);
    expect(lines.some((l) => /another process registered under the same MGX_OWNER/.test(l.msg ?? ''))).toBe(true);
  });

  it('draining claims nothing and shows draining; a drained stop deregisters and the reaper leaves it alone', async () => {
    const w = lease(a, 'w1');
    await w.register();
    await w.drain();
    expect(w.canClaim()).toBe(false);
    expect((await a.workers.get('w1'))?.state).toBe('draining');
    await w.stop({ deregister: true });
    expect((await a.workers.get('w1'))?.state).toBe('stopped');
    now += 10 * LEASE;
    expect(await reaper(b).sweep()).toEqual([]);
  });

  it("passes an operator's drain request on once, from the heartbeat that carries it", async () => {
    let asked = 0;
    const w = lease(a, 'w1', { drainRequested: () => asked++ });
    await w.register();
    await w.beat();
    expect(asked).toBe(0);
    // asked through another process's store handle
    await b.workers.requestDrain('w1');
    now += BEAT;
    await w.beat();
    expect(asked).toBe(1);
    await w.drain();
    now += BEAT;
    await w.beat();
    expect(asked).toBe(1);
    expect(await a.workers.get('w1')).toMatchObject({ state: 'draining', drainRequested: true });
  });

  it("undoes a zombie worker's start: its claim was settled and taken by another worker, so it removes the container and writes nothing", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'mgx-fleet-data-'));
    onTestFinished(() => rmSync(dataDir, { recursive: true, force: true }));
    const settings = loadSettings({ MGX_DATA_DIR: dataDir, MGX_OWNER: 'w1', AGENT_MONITOR_POLL_SECONDS: '3600' }, dataDir);
    const id = await queue();
    // the container's creation is where this worker "pauses"
    let resume: () => void = () => undefined;
    const paused = new Promise<void>((r) => (resume = r));
    let creating: () => void = () => undefined;
    const isCreating = new Promise<void>((r) => (creating = r));
    const removed: string[] = [];
    const started: string[] = [];
    const runtime = {
      socket: 'unix:///fake',
      create: async () => {
        creating();
        await paused;
        return 'c-zombie';
      },
      start: async (c: string) => void started.push(c),
      remove: async (c: string) => void removed.push(c),
    } as unknown as ContainerRuntime;
    const watched: string[] = [];
    const monitor = { watch: async (s: SessionRecord) => void watched.push(s.id) } as unknown as Monitor;
    const closed: string[] = [];
    const ingest = {
      dirFor: () => dataDir,
      open: async () => ({ dir: dataDir }),
      close: async (sessionId: string) => void closed.push(sessionId),
    } as unknown as IngestHub;
    const { logger, lines } = capturingLogger();
    const scheduler = new Scheduler({
      store: a,
      runtime,
      ingest,
      monitor,
      metrics: noopMetrics,
      settings,
      logger,
      // the real clock: the store checks the claim's lease against it
      lease: new WorkerLease({ workers: a.workers, info: info('w1'), heartbeatMs: 3_600_000, leaseMs: LEASE, inUse: () => 0 }),
    });
    await scheduler.register();
    scheduler.start();
    await isCreating;
    expect(await get(id)).toMatchObject({ status: 'starting', workerId: 'w1' });
    // meanwhile w1 is declared dead, its claim goes back to the queue, and w2 claims it
    expect(await b.workers.markDead('w1', Date.now() + LEASE + 1)).toBe(true);
    const dead = (await b.workers.get('w1'))!;
    expect((await settleWorker({ store: b, metrics: noopMetrics, workspacesShared: false }, dead)).requeued).toBe(1);
    const w2 = await b.workers.register(info('w2'), LEASE);
    expect(await b.sessions.claimNext('w2', { lease: { epoch: w2.worker.epoch } })).toMatchObject({ id });

    resume();
    await scheduler.stop();
    await scheduler.idle();
    await scheduler.release();
    expect(removed).toEqual(['c-zombie']);
    expect(started).toEqual([]);
    expect(watched).toEqual([]);
    expect(closed).toEqual([id]);
    expect(await get(id)).toMatchObject({ status: 'starting', workerId: 'w2', containerId: null });
    expect((await a.events.read(id, 0, 100)).map((e) => e.type)).toEqual(['SESSION_QUEUED']);
    expect(lines).toContainEqual(
      expect.objectContaining({ level: 'warn', msg: expect.stringMatching(/lost its claim on the session while starting it/) }),
    );
  });

  it('a plain stop keeps the lease, so a start within it adopts; after it the fleet declares the worker dead', async () => {
    const w = lease(a, 'w1');
    await w.register();
    await w.stop();
    expect((await a.workers.get('w1'))?.state).toBe('alive');
    const again = await lease(b, 'w1').register();
    expect(again.previous).toMatchObject({ state: 'alive', epoch: 1 });
    expect(again.previous!.leaseUntil).toBeGreaterThan(now);
  });

  it('one process wins the declaration and settles each session once: requeue, lost with a FINISH naming the worker', async () => {
    const w1 = lease(a, 'w1');
    const w2 = lease(a, 'w2');
    await w1.register();
    await w2.register();
    const starting = await claimed('w1', 'starting');
    const withContainer = await claimed('w1', 'container');
    const running = await claimed('w1', 'running');
    const decided = await claimed('w1', 'running');
    await a.sessions.decide(decided, { status: 'succeeded', reason: 'finished' });
    const other = await claimed('w2', 'running');
    const queued = await queue();
    const heartbeatAt = now;

    now += LEASE + 1;
    await w2.beat();
    // two processes look at the same moment: one declares w1 dead, the other finds nothing
    const [ra, rb] = await Promise.all([reaper(a).sweep(), reaper(b).sweep()]);
    const wins = [...ra, ...rb];
    expect(wins.map((x) => x.worker.id)).toEqual(['w1']);
    expect(wins[0]!.settled).toEqual({ requeued: 1, lost: 2, finished: 1, workspaceUnavailable: 0 });
    expect((await a.workers.get('w1'))?.state).toBe('dead');

    expect(await get(starting)).toMatchObject({ status: 'queued', workerId: null });
    expect(await finishes(starting)).toEqual([]);
    const message = `worker w1 was lost (no heartbeat since ${new Date(heartbeatAt).toISOString()})`;
    expect(lostMessage({ id: 'w1', heartbeatAt })).toBe(message);
    for (const id of [withContainer, running]) {
      expect(await get(id)).toMatchObject({ status: 'failed', reason: 'lost', message });
      const f = await finishes(id);
      expect(f).toHaveLength(1);
      expect(f[0]!.data).toMatchObject({ status: 'failed', reason: 'lost', message });
    }
    // its own decision stands; only the FINISH it never stored is added
    expect(await get(decided)).toMatchObject({ status: 'succeeded', reason: 'finished' });
    expect((await finishes(decided)).map((e) => e.data.status)).toEqual(['succeeded']);
    // the live worker's session and the queue are untouched
    expect((await get(other)).status).toBe('running');
    expect((await get(queued)).status).toBe('queued');

    // settling again (the worker itself, on its return) changes nothing and stores no second FINISH
    const dead = (await a.workers.get('w1'))!;
    expect(await settleWorker({ store: b, metrics: noopMetrics, workspacesShared: false }, dead)).toEqual({
      requeued: 0,
      lost: 0,
      finished: 0,
      workspaceUnavailable: 0,
    });
    for (const id of [withContainer, running, decided]) expect(await finishes(id)).toHaveLength(1);
    // and the next look declares nothing
    expect(await reaper(b).sweep()).toEqual([]);
  });

  it('queued sessions on a workspace the dead worker holds end workspace_unavailable, unless workspaces are shared', async () => {
    await lease(a, 'w1').register();
    await claimed('w1', 'running', 'ws-held');
    const waiting = await queue('ws-held');
    const elsewhere = await queue('ws-free');
    now += LEASE + 1;

    const shared = new Reaper({ store: b, metrics: noopMetrics, intervalMs: BEAT, workspacesShared: true, now: clock });
    const [res] = await shared.sweep();
    expect(res?.settled).toMatchObject({ lost: 1, workspaceUnavailable: 0 });
    expect((await get(waiting)).status).toBe('queued');

    // not shared: settling the dead worker ends the session waiting for its workspace
    const dead = (await a.workers.get('w1'))!;
    const counts = await settleWorker({ store: b, metrics: noopMetrics, workspacesShared: false }, dead);
    expect(counts.workspaceUnavailable).toBe(1);
    expect(await get(waiting)).toMatchObject({ status: 'failed', reason: 'workspace_unavailable' });
    expect((await get(waiting)).message).toMatch(/workspace ws-held is held by worker w1, which was lost/);
    expect(await finishes(waiting)).toHaveLength(1);
    expect((await get(elsewhere)).status).toBe('queued');
  });

  it('settles dead workers again: a settlement cut short completes, a session queued after the death on its workspace ends', async () => {
    await lease(a, 'w1').register();
    const running = await claimed('w1', 'running', 'ws-w1');
    now += LEASE + 1;
    // declared dead by a process that stopped before settling anything
    expect(await b.workers.markDead('w1', now)).toBe(true);
    expect(await reaper(b).sweep()).toEqual([]);
    expect((await get(running)).status).toBe('running');
    const later = await queue('ws-w1');

    expect(await reaper(b).resettle()).toEqual({ requeued: 0, lost: 1, finished: 0, workspaceUnavailable: 1 });
    expect(await get(running)).toMatchObject({ status: 'failed', reason: 'lost' });
    expect(await get(later)).toMatchObject({ status: 'failed', reason: 'workspace_unavailable' });
    for (const id of [running, later]) expect(await finishes(id)).toHaveLength(1);
    // nothing left: a second pass, from another process, stores nothing
    expect(await reaper(a).resettle()).toEqual({ requeued: 0, lost: 0, finished: 0, workspaceUnavailable: 0 });
    for (const id of [running, later]) expect(await finishes(id)).toHaveLength(1);

    // back under a new epoch, w1 is alive: resettling leaves it and what waits for its workspace
    await lease(a, 'w1').register();
    const mine = await queue('ws-w1');
    expect(await reaper(b).resettle()).toEqual({ requeued: 0, lost: 0, finished: 0, workspaceUnavailable: 0 });
    expect((await get(mine)).status).toBe('queued');
  });

  it('a session queued on a workspace of a worker already dead ends workspace_unavailable at the next look, until the worker registers again', async () => {
    await lease(a, 'w1').register();
    await claimed('w1', 'running', 'ws-held');
    now += LEASE + 1;
    expect((await reaper(b).sweep()).map((x) => x.worker.id)).toEqual(['w1']);

    // queued after the death was settled: nobody but w1 may claim it
    const late = await queue('ws-held');
    const elsewhere = await queue('ws-free');
    expect((await b.sessions.claimNext('w2', { workspaces: { shared: false } }))?.id).toBe(elsewhere);
    expect((await get(late)).status).toBe('queued');
    // a shared workspace waits for any worker; the next look of an unshared fleet ends it
    await reaper(b, true).sweep();
    expect((await get(late)).status).toBe('queued');
    expect(await reaper(b).sweep()).toEqual([]);
    expect(await get(late)).toMatchObject({ status: 'failed', reason: 'workspace_unavailable', workerId: null });
    expect((await get(late)).message).toMatch(/workspace ws-held is held by worker w1, which was lost/);
    expect(await finishes(late)).toHaveLength(1);
    await reaper(a).sweep();
    expect(await finishes(late)).toHaveLength(1);

    // back, w1 holds its workspace again: what is queued on it waits for w1
    await lease(a, 'w1').register();
    const back = await queue('ws-held');
    await reaper(b).sweep();
    expect((await get(back)).status).toBe('queued');
    expect((await a.sessions.claimNext('w1', { workspaces: { shared: false } }))?.id).toBe(back);
  });

  it('a worker declared dead registers again, settles what was left, and its reconcile removes their containers and adopts nothing', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'mgx-fleet-data-'));
    onTestFinished(() => rmSync(dataDir, { recursive: true, force: true }));
    const settings = loadSettings({ MGX_DATA_DIR: dataDir, MGX_OWNER: 'w1' }, dataDir);
    await lease(a, 'w1').register();
    const settledByReaper = await claimed('w1', 'running');
    const leftOver = await claimed('w1', 'running');
    now += LEASE + 1;
    // the winner declares w1 dead and dies after settling one of its two sessions
    expect(await b.workers.markDead('w1', now)).toBe(true);
    const dead = (await b.workers.get('w1'))!;
    expect((await b.sessions.decide(settledByReaper, { status: 'failed', reason: 'lost', message: 'm' })).won).toBe(true);
    await b.sessions.appendFinish(settledByReaper, { status: 'failed', reason: 'lost', message: 'm' });
    expect((await get(leftOver)).status).toBe('running');

    const containers = [settledByReaper, leftOver].map((id) => ({
      id: `c-${id}`,
      name: `mgx-${id}`,
      state: 'running',
      labels: { [LABELS.owner]: 'w1', [LABELS.sessionId]: id },
    }));
    const removed: string[] = [];
    const runtime = {
      socket: 'unix:///fake',
      list: async () => containers,
      stop: async () => undefined,
      remove: async (id: string) => void removed.push(id),
    } as unknown as ContainerRuntime;
    const watched: string[] = [];
    const monitor = { watch: async (s: SessionRecord) => void watched.push(s.id) } as unknown as Monitor;
    const ingest = {
      dirs: () => [],
      isOpen: () => false,
      removeDir: async () => undefined,
      open: async () => ({ dir: '' }),
    } as unknown as IngestHub;
    const scheduler = new Scheduler({
      store: a,
      runtime,
      ingest,
      monitor,
      metrics: noopMetrics,
      settings,
      lease: lease(a, 'w1'),
    });
    await scheduler.register();
    expect(await a.workers.get('w1')).toMatchObject({ state: 'alive', epoch: 2 });
    // what the winner did not get to is settled by the worker itself, before its reconcile
    expect(await get(leftOver)).toMatchObject({ status: 'failed', reason: 'lost', message: lostMessage(dead) });
    for (const id of [settledByReaper, leftOver]) expect(await finishes(id)).toHaveLength(1);

    const counts = await scheduler.reconcile();
    expect(watched).toEqual([]);
    expect(counts).toMatchObject({ adopted: 0, removed: 2 });
    expect(removed.sort()).toEqual(containers.map((c) => c.id).sort());
  });
});
