import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteStore } from '@mgx/event-store';
import { newSession } from '@mgx/event-store/contract';
import { createMetrics } from '@mgx/metrics';
import type { ContainerRuntime, ContainerStats, ExitInfo } from '@mgx/runtime';
import { Monitor, type Clock } from '../src/index.js';

const MiB = 1024 ** 2;

/** Timers that fire only when the test moves time on. */
class ManualClock implements Clock {
  #now = 1_000_000;
  #timers = new Map<number, { at: number; fn: () => void }>();
  #next = 1;
  now = () => this.#now;
  setTimeout = (fn: () => void, ms: number) => {
    const id = this.#next++;
    this.#timers.set(id, { at: this.#now + ms, fn });
    return id;
  };
  clearTimeout = (h: unknown) => void this.#timers.delete(h as number);
  /** Moves time on by `ms`, firing what falls due, then lets the work they started settle. */
  async advance(ms: number): Promise<void> {
    this.#now += ms;
    for (const [id, t] of [...this.#timers].sort((a, b) => a[1].at - b[1].at)) {
      if (t.at > this.#now) continue;
      this.#timers.delete(id);
      t.fn();
    }
    for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
  }
}

/** The engine at its port: readings the test sets per container, exits when the test says. */
class FakeRuntime implements Partial<ContainerRuntime> {
  socket = 'fake://';
  readonly readings = new Map<string, Omit<ContainerStats, 'at'>>();
  readonly rounds: string[][] = [];
  readonly #exits = new Map<string, (e: ExitInfo) => void>();
  readonly #exited = new Map<string, Promise<ExitInfo>>();
  constructor(readonly clock: ManualClock) {}
  #read(id: string): ContainerStats | null {
    const r = this.readings.get(id);
    return r ? { ...r, at: this.clock.now() } : null;
  }
  statsMany = async (ids: readonly string[]) => {
    this.rounds.push([...ids].sort());
    const out = new Map<string, ContainerStats>();
    for (const id of ids) {
      const r = this.#read(id);
      if (r) out.set(id, r);
    }
    return out;
  };
  stats = async (id: string) => this.#read(id);
  exit(id: string): void {
    this.readings.delete(id);
    this.#exits.get(id)?.({ exitCode: 0, oomKilled: false });
  }
  wait = (id: string) => {
    let p = this.#exited.get(id);
    if (!p) this.#exited.set(id, (p = new Promise<ExitInfo>((r) => this.#exits.set(id, r))));
    return p;
  };
  stop = async (id: string) => {
    this.exit(id);
    return this.wait(id);
  };
  inspect = async () => null;
  kill = async () => {};
  logs = async () => [];
  remove = async () => {};
}

const reading = (over: Partial<ContainerStats> = {}): Omit<ContainerStats, 'at'> => ({
  cpuSeconds: 2,
  memoryBytes: 100 * MiB,
  memoryMaxBytes: null,
  memoryLimitBytes: 256 * MiB,
  pids: 4,
  ...over,
});

describe('the monitor samples running sessions', () => {
  let store: SqliteStore;
  beforeAll(() => {
    store = SqliteStore.open({ file: join(mkdtempSync(join(tmpdir(), 'mgx-sampling-')), 'db.sqlite') });
  });
  afterAll(async () => {
    await store.close();
  });

  it('reads all of them in one round per interval, stores what changed and warns once, and puts the totals in FINISH', async () => {
    const clock = new ManualClock();
    const runtime = new FakeRuntime(clock);
    const metrics = createMetrics({ version: 't', node: 't' }, { defaultMetrics: false, tenants: ['t'] });
    const monitor = new Monitor({
      store,
      runtime: runtime as unknown as ContainerRuntime,
      ingest: { drained: async () => {}, close: async () => {} },
      metrics,
      clock,
      stopGraceMs: 1000,
      finishGraceMs: 5000,
      pollMs: 3_600_000,
      logCaptureBytes: 0,
      usageIntervalMs: 5000,
      tenantLabel: (tenant) => (tenant === 't' ? 't' : 'other'),
    });
    const gauge = async (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(await metrics.render())?.[1]);
    const types = async (id: string) => (await store.read(id, 0, 1000)).map((e) => e.type);
    const watched: Promise<void>[] = [];
    for (const id of ['sa', 'sb']) {
      await store.createSession(
        newSession(id, { workspaceId: id, tenant: 't', limits: { memoryBytes: 256 * MiB, cpuQuota: 50_000, timeoutMs: 3_600_000 } }),
      );
      await store.claimNext('w');
      await store.markRunning(id, clock.now(), clock.now() + 3_600_000);
      runtime.readings.set(`c-${id}`, reading());
      watched.push(monitor.watch((await store.getSession(id))!, `c-${id}`, clock.now()));
    }

    // nothing before the first interval
    await clock.advance(4999);
    expect(runtime.rounds).toEqual([]);
    await clock.advance(1);
    expect(runtime.rounds).toEqual([['c-sa', 'c-sb']]);
    expect(await types('sa')).toEqual(['SESSION_QUEUED', 'RESOURCE']);
    expect((await store.read('sa', 1, 10))[0]?.data).toEqual({
      cpuPercent: 80,
      cpuSeconds: 2,
      memoryBytes: 100 * MiB,
      memoryLimitBytes: 256 * MiB,
      pids: 4,
    });
    expect(await gauge('mgx_agent_memory_bytes')).toBe(200 * MiB);
    expect(await gauge('mgx_agent_memory_limit_bytes')).toBe(512 * MiB);

    // the same CPU rate and memory: read, nothing stored
    runtime.readings.set('c-sa', reading({ cpuSeconds: 4 }));
    runtime.readings.set('c-sb', reading({ cpuSeconds: 4 }));
    await clock.advance(5000);
    expect(runtime.rounds).toHaveLength(2);
    expect(await types('sa')).toEqual(['SESSION_QUEUED', 'RESOURCE']);

    // sa near its limit: RESOURCE and one WARNING, then none however long it stays there
    runtime.readings.set('c-sa', reading({ cpuSeconds: 6, memoryBytes: 240 * MiB }));
    await clock.advance(5000);
    expect(await types('sa')).toEqual(['SESSION_QUEUED', 'RESOURCE', 'RESOURCE', 'WARNING']);
    expect(await gauge('mgx_sessions_near_memory_limit')).toBe(1);
    runtime.readings.set('c-sa', reading({ cpuSeconds: 8, memoryBytes: 241 * MiB }));
    await clock.advance(5000);
    expect((await types('sa')).filter((t) => t === 'WARNING')).toHaveLength(1);
    expect(await gauge('mgx_resource_warnings_total{kind="memory_near_limit"}')).toBe(1);

    // sa ends: its last reading (while it still runs) completes the totals in FINISH
    runtime.readings.set('c-sa', reading({ cpuSeconds: 9.5, memoryBytes: 200 * MiB, pids: 6 }));
    await monitor.agentFinished('sa', 1, { status: 'succeeded', reason: 'finished' });
    await clock.advance(10);
    runtime.exit('c-sa');
    await watched[0];
    const finish = (await store.read('sa', 0, 1000)).at(-1);
    expect(finish?.type).toBe('FINISH');
    expect(finish?.data.usage).toEqual({
      cpuSeconds: 9.5,
      memoryPeakBytes: 241 * MiB,
      memoryGiBSeconds: expect.any(Number),
      pidsPeak: 6,
      wallMs: 20_010,
    });
    expect((await store.getSession('sa'))?.usage).toEqual(finish?.data.usage);
    expect(await gauge('mgx_tenant_cpu_seconds_total{tenant="t"}')).toBe(9.5);
    expect(await gauge('mgx_session_cpu_seconds_count')).toBe(1);

    // sa's share is gone from the gauges; only sb is read from now on
    expect(await gauge('mgx_agent_memory_bytes')).toBe(100 * MiB);
    expect(await gauge('mgx_sessions_near_memory_limit')).toBe(0);
    await clock.advance(5000);
    expect(runtime.rounds.at(-1)).toEqual(['c-sb']);

    // a worker that stops watching (hand-over) takes its sessions out of the gauges
    monitor.detachAll();
    expect(await gauge('mgx_agent_memory_bytes')).toBe(0);
    const rounds = runtime.rounds.length;
    await clock.advance(60_000);
    expect(runtime.rounds).toHaveLength(rounds);
  });
});
