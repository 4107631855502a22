import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TRPCError } from '@trpc/server';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger, type Settings } from '@mgx/config';
import { SqliteStore, type ListQuery, type SessionRecord, type Store, type UsageQuery, type WorkerRecord } from '@mgx/event-store';
import type { Metrics } from '@mgx/metrics';
import { createAppRouter, workerView, type ApiContext, type ApiDeps } from '../src/index.js';

const session = (id: string, tenant: string): SessionRecord => ({
  id,
  tenant,
  status: 'queued',
  framework: 'script',
  prompt: 'p',
  workspaceId: id,
  options: {},
  env: {},
  limits: { memoryBytes: 1, cpuQuota: 1, timeoutMs: 1000 },
  network: 'none',
  createdAt: 1,
  startedAt: null,
  endedAt: null,
  deadlineAt: null,
  workerId: null,
  containerId: null,
  reason: null,
  exitCode: null,
  message: null,
  cancelRequested: false,
  lastSeq: 1,
  finishSeq: null,
});

const worker = (over: Partial<WorkerRecord> = {}): WorkerRecord => ({
  id: 'host-a',
  hostname: 'a.example',
  engine: 'podman 4.3.1 unix:///run/podman/podman.sock',
  capacity: 4,
  version: '1.0.0',
  state: 'alive',
  inUse: 1,
  startedAt: 1000,
  heartbeatAt: 5000,
  leaseUntil: 35_000,
  epoch: 1,
  drainRequested: false,
  ...over,
});

const SESSIONS = [session('s-acme', 'acme'), session('s-globex', 'globex')];

function api(caller: { tenant: string | null; operator: boolean }) {
  const lists: ListQuery[] = [];
  const usages: UsageQuery[] = [];
  const counter = { inc: () => undefined, dec: () => undefined };
  const deps = {
    settings: {
      agent: { image: 'img', cpuPeriod: 100_000 },
      server: { role: 'all' },
      scheduler: {},
      limits: {},
      pool: { size: 0 },
    } as unknown as Settings,
    store: {
      kind: 'sqlite',
      describe: () => 'sqlite:/var/lib/mgx/mgx.db',
      sessions: {
        getSession: async (id: string) => SESSIONS.find((s) => s.id === id) ?? null,
        listSessions: async (q: ListQuery) => {
          lists.push(q);
          return { items: SESSIONS.filter((s) => q.tenant === undefined || s.tenant === q.tenant), nextCursor: null };
        },
        usageByTenant: async (q: UsageQuery) => {
          usages.push(q);
          return [];
        },
      },
      events: {
        read: async () => [],
        lastOfType: async (sessionId: string) =>
          sessionId === 's-acme' ? { sessionId, seq: 3, type: 'RESOURCE', ts: 42, data: { cpuPercent: 50, memoryBytes: 10 } } : null,
      },
      workers: {
        list: async () => [
          worker(),
          worker({ id: 'host-b', state: 'alive', leaseUntil: 0 }),
          worker({ id: 'host-c', state: 'dead', leaseUntil: 0 }),
        ],
      },
    } as unknown as Store,
    runtime: {
      socket: '/run/podman/podman.sock',
      info: async () => ({ engine: 'podman', version: '4.3.1', socket: '/run/podman/podman.sock' }),
      imageExists: async () => true,
      ping: async () => undefined,
    },
    ready: () => true,
    metrics: { rejections: counter, sseSubscribers: counter } as unknown as Metrics,
    logger: silentLogger,
    frameworks: [],
    version: '1.0.0',
  } as unknown as ApiDeps;
  const ctx: ApiContext = { deps, ...caller };
  return { caller: createAppRouter({ ssePingMs: 1000 }).createCaller(ctx), lists, usages };
}

const codeOf = async (p: Promise<unknown>) => {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TRPCError);
  return err as TRPCError;
};

describe('operators', () => {
  it("see another tenant's session with its tenant; a tenant gets NOT_FOUND", async () => {
    const op = api({ tenant: 'ops', operator: true }).caller;
    expect(await op.sessions.get({ sessionId: 's-globex' })).toMatchObject({ id: 's-globex', tenant: 'globex' });
    expect((await op.sessions.events({ sessionId: 's-acme' })).events).toEqual([]);
    const acme = api({ tenant: 'acme', operator: false }).caller;
    expect((await codeOf(acme.sessions.get({ sessionId: 's-globex' }))).code).toBe('NOT_FOUND');
    expect(await acme.sessions.get({ sessionId: 's-acme' })).not.toHaveProperty('tenant');
  });

  it('list any tenant with the tenant filter; a tenant may not use it', async () => {
    const op = api({ tenant: 'ops', operator: true });
    expect((await op.caller.sessions.list({ tenant: 'globex' })).items.map((s) => s.id)).toEqual(['s-globex']);
    await op.caller.sessions.list({});
    expect(op.lists.map((q) => q.tenant)).toEqual(['globex', undefined]);
    const acme = api({ tenant: 'acme', operator: false });
    const err = await codeOf(acme.caller.sessions.list({ tenant: 'globex' }));
    expect(err.code).toBe('FORBIDDEN');
    expect(err.message).toMatch(/operators only.*MGX_OPERATOR_TOKENS/);
    expect(acme.lists).toEqual([]);
  });

  it("tenants.usage: a tenant gets its own usage only; an operator every tenant's or the one it names", async () => {
    const acme = api({ tenant: 'acme', operator: false });
    expect(await acme.caller.tenants.usage({ from: 1000, to: 2000 })).toEqual({ from: 1000, to: 2000, tenants: [] });
    await acme.caller.tenants.usage({ from: 1000, to: 2000, tenant: 'acme' });
    expect((await codeOf(acme.caller.tenants.usage({ from: 1000, tenant: 'globex' }))).code).toBe('FORBIDDEN');
    expect(acme.usages).toEqual([
      { from: 1000, to: 2000, tenant: 'acme' },
      { from: 1000, to: 2000, tenant: 'acme' },
    ]);
    expect((await codeOf(acme.caller.tenants.usage({ from: 2000, to: 1000 }))).code).toBe('BAD_REQUEST');
    const op = api({ tenant: 'ops', operator: true });
    await op.caller.tenants.usage({ from: 0, to: 10 });
    await op.caller.tenants.usage({ from: 0, to: 10, tenant: 'globex' });
    expect(op.usages).toEqual([
      { from: 0, to: 10 },
      { from: 0, to: 10, tenant: 'globex' },
    ]);
  });

  it("sessions.top: running sessions with their last RESOURCE, a tenant's own only", async () => {
    const acme = api({ tenant: 'acme', operator: false });
    const mine = await acme.caller.sessions.top();
    expect(acme.lists).toEqual([{ status: ['running'], limit: 100, tenant: 'acme' }]);
    expect(mine.items).toEqual([
      {
        id: 's-acme',
        framework: 'script',
        startedAt: null,
        workerId: null,
        limits: { memoryBytes: 1, cpus: 0.00001 },
        resource: { cpuPercent: 50, memoryBytes: 10, at: 42 },
      },
    ]);
    expect((await codeOf(acme.caller.sessions.top({ tenant: 'globex' }))).code).toBe('FORBIDDEN');
    const op = api({ tenant: 'ops', operator: true });
    const all = await op.caller.sessions.top();
    expect(all.items.map((i) => [i.id, i.tenant, i.resource === null])).toEqual([
      ['s-acme', 'acme', false],
      ['s-globex', 'globex', true],
    ]);
  });

  it('system.workers refuses a tenant with FORBIDDEN and a clear message', async () => {
    const err = await codeOf(api({ tenant: 'acme', operator: false }).caller.system.workers());
    expect(err.code).toBe('FORBIDDEN');
    expect(err.message).toBe('this call is for operators only: use a token from MGX_OPERATOR_TOKENS');
  });

  it('system.workers lists the workers with their state as stored and whether their lease ran out', async () => {
    const { workers, now } = await api({ tenant: 'ops', operator: true }).caller.system.workers();
    expect(now).toBeGreaterThan(0);
    expect(workers.map((w) => [w.id, w.state, w.leaseExpired])).toEqual([
      ['host-a', 'alive', true],
      ['host-b', 'alive', true],
      ['host-c', 'dead', false],
    ]);
    expect(workers[0]).toEqual({
      id: 'host-a',
      hostname: 'a.example',
      state: 'alive',
      drainRequested: false,
      leaseExpired: true,
      capacity: 4,
      inUse: 1,
      lastHeartbeat: 5000,
      leaseUntil: 35_000,
      engine: 'podman 4.3.1 unix:///run/podman/podman.sock',
      version: '1.0.0',
      startedAt: 1000,
    });
  });

  it('workerView: a lease in the future is not expired; stopped and dead workers never are', () => {
    expect(workerView(worker({ leaseUntil: 2000 }), 1000).leaseExpired).toBe(false);
    expect(workerView(worker({ state: 'draining', leaseUntil: 500 }), 1000).leaseExpired).toBe(true);
    expect(workerView(worker({ state: 'stopped', leaseUntil: 500 }), 1000).leaseExpired).toBe(false);
  });

  it('system.info shows server paths to operators only', async () => {
    const tenant = await api({ tenant: 'acme', operator: false }).caller.system.info();
    expect(tenant.store).toBe('sqlite');
    expect(tenant.engine).toEqual({ engine: 'podman', version: '4.3.1' });
    expect(JSON.stringify(tenant)).not.toMatch(/\/run\/podman|\/var\/lib/);
    const op = await api({ tenant: 'ops', operator: true }).caller.system.info();
    expect(op.store).toBe('sqlite:/var/lib/mgx/mgx.db');
    expect(op.engine).toMatchObject({ socket: '/run/podman/podman.sock' });
  });

  it('system.health shows server paths to operators only, not to tenants or callers without a token', async () => {
    for (const caller of [
      { tenant: null, operator: false },
      { tenant: 'acme', operator: false },
    ]) {
      const health = await api(caller).caller.system.health();
      expect(health.checks).toEqual({ engine: { ok: true, detail: 'reachable' }, store: { ok: true, detail: 'sqlite' } });
    }
    const op = await api({ tenant: 'ops', operator: true }).caller.system.health();
    expect(op.checks).toEqual({
      engine: { ok: true, detail: '/run/podman/podman.sock' },
      store: { ok: true, detail: 'sqlite:/var/lib/mgx/mgx.db' },
    });
  });
});

describe('system.drainWorker', () => {
  let store: SqliteStore | undefined;
  afterEach(async () => {
    await store?.close();
    store = undefined;
  });

  /** The router over a real store file, called as `caller`. */
  const over = (st: Store, caller: { tenant: string; operator: boolean }) => {
    const deps = { store: st, logger: silentLogger, metrics: { rejections: { inc: () => undefined } } } as unknown as ApiDeps;
    return createAppRouter({ ssePingMs: 1000 }).createCaller({ deps, ...caller });
  };
  const info = (id: string) => ({ id, hostname: 'h', engine: 'e', capacity: 2, version: 'v' });

  it('marks a live worker drainRequested, which its next heartbeat carries; system.workers shows it', async () => {
    store = SqliteStore.open({ file: join(mkdtempSync(join(tmpdir(), 'mgx-api-')), 'mgx.sqlite') });
    const { worker } = await store.workers.register(info('wa'), 60_000);
    const op = over(store, { tenant: 'ops', operator: true });
    const { worker: view } = await op.system.drainWorker({ workerId: 'wa' });
    expect(view).toMatchObject({ id: 'wa', state: 'alive', drainRequested: true });
    expect((await op.system.workers()).workers.find((w) => w.id === 'wa')?.drainRequested).toBe(true);
    expect(await store.workers.heartbeat('wa', worker.epoch, { inUse: 0, state: 'alive' }, 60_000)).toEqual({
      kept: true,
      drainRequested: true,
    });
  });

  it('answers NOT_FOUND for an unknown worker, BAD_REQUEST for a stopped or dead one, FORBIDDEN to a tenant', async () => {
    store = SqliteStore.open({ file: join(mkdtempSync(join(tmpdir(), 'mgx-api-')), 'mgx.sqlite') });
    const op = over(store, { tenant: 'ops', operator: true });
    expect((await codeOf(op.system.drainWorker({ workerId: 'nobody' }))).code).toBe('NOT_FOUND');
    const stopped = await store.workers.register(info('ws'), 60_000);
    await store.workers.deregister('ws', stopped.worker.epoch);
    const err = await codeOf(op.system.drainWorker({ workerId: 'ws' }));
    expect(err.code).toBe('BAD_REQUEST');
    expect(err.message).toBe('worker ws is stopped: there is nothing to drain');
    await store.workers.register(info('wd'), 1000, Date.now() - 10_000);
    expect(await store.workers.markDead('wd')).toBe(true);
    expect((await codeOf(op.system.drainWorker({ workerId: 'wd' }))).code).toBe('BAD_REQUEST');
    await store.workers.register(info('wt'), 60_000);
    expect((await codeOf(over(store, { tenant: 'acme', operator: false }).system.drainWorker({ workerId: 'wt' }))).code).toBe('FORBIDDEN');
    expect((await store.workers.get('wt'))?.drainRequested).toBe(false);
  });
});
