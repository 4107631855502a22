import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteStore } from '@mgx/event-store';
import { newSession } from '@mgx/event-store/contract';
import { createMetrics } from '@mgx/metrics';
import type { ContainerRuntime, ExitInfo } from '@mgx/runtime';
import { Monitor, type Clock } from '../src/index.js';

/** Time that moves only when the test says so. */
class ManualClock implements Clock {
  #now = 1_000_000;
  #seq = 0;
  #timers = new Map<number, { at: number; fn: () => void }>();
  now = () => this.#now;
  setTimeout = (fn: () => void, ms: number) => {
    const id = ++this.#seq;
    this.#timers.set(id, { at: this.#now + Math.max(0, ms), fn });
    return id;
  };
  clearTimeout = (h: unknown) => void this.#timers.delete(h as number);
  /** Moves time forward, firing due timers in order. */
  advance(ms: number): void {
    const until = this.#now + ms;
    for (;;) {
      const due = [...this.#timers.entries()].filter(([, t]) => t.at <= until).sort((a, b) => a[1].at - b[1].at || a[0] - b[0])[0];
      if (!due) break;
      this.#timers.delete(due[0]);
      this.#now = Math.max(this.#now, due[1].at);
      due[1].fn();
    }
    this.#now = until;
  }
}

/** The engine at its port boundary: containers that exit when stopped. */
class FakeRuntime implements Partial<ContainerRuntime> {
  readonly exits = new Map<string, (e: ExitInfo) => void>();
  readonly waits = new Map<string, Promise<ExitInfo>>();
  stops = 0;
  removes = 0;
  socket = 'fake://';
  #exit(id: string): Promise<ExitInfo> {
    let p = this.waits.get(id);
    if (!p) {
      p = new Promise<ExitInfo>((r) => this.exits.set(id, r));
      this.waits.set(id, p);
    }
    return p;
  }
  wait = (id: string) => this.#exit(id);
  stop = async (id: string) => {
    this.stops++;
    this.exits.get(id)?.({ exitCode: 143, oomKilled: false });
    return this.#exit(id);
  };
  inspect = async () => null;
  logs = async () => [];
  remove = async () => {
    this.removes++;
  };
  kill = async () => {};
}

const tick = () => new Promise((r) => setImmediate(r));

describe('monitor decisions with an injected clock', () => {
  let store: SqliteStore;
  beforeAll(() => {
    store = SqliteStore.open({ file: join(mkdtempSync(join(tmpdir(), 'mgx-race-')), 'db.sqlite') });
  });
  afterAll(async () => {
    await store.close();
  });

  it('1,000 FINISH-versus-deadline races each end in exactly one terminal state with one FINISH', async () => {
    const clock = new ManualClock();
    const runtime = new FakeRuntime();
    const monitor = new Monitor({
      store,
      runtime: runtime as unknown as ContainerRuntime,
      ingest: { drained: async () => {}, close: async () => {} },
      metrics: createMetrics({ version: 't', node: 't' }, { defaultMetrics: false }),
      stopGraceMs: 100,
      finishGraceMs: 50,
      pollMs: 60_000,
      logCaptureBytes: 0,
      clock,
    });
    const outcomes = { succeeded: 0, timed_out: 0 };
    const N = 1000;
    for (let batch = 0; batch < N / 50; batch++) {
      const watches: Array<{ id: string; done: Promise<void>; order: number }> = [];
      for (let i = 0; i < 50; i++) {
        const id = `race-${batch}-${i}`;
        await store.createSession(newSession(id, { workspaceId: id, limits: { memoryBytes: 1, cpuQuota: 1, timeoutMs: 1000 } }));
        await store.claimNext('w');
        await store.markRunning(id, clock.now(), clock.now() + 1000);
        const s = (await store.getSession(id))!;
        watches.push({ id, done: monitor.watch(s, `c-${id}`, clock.now()), order: (batch * 50 + i) % 3 });
      }
      // the deadline and the agent's FINISH land in the same instant, in varying order
      clock.advance(999);
      const finishes: Array<Promise<void>> = [];
      for (const w of watches) {
        if (w.order === 0) finishes.push(monitor.agentFinished(w.id, 1, { status: 'succeeded', reason: 'finished' }));
      }
      clock.advance(1);
      for (const w of watches) {
        if (w.order === 1) finishes.push(monitor.agentFinished(w.id, 1, { status: 'succeeded', reason: 'finished' }));
        if (w.order === 2) {
          await tick();
          finishes.push(monitor.agentFinished(w.id, 1, { status: 'succeeded', reason: 'finished' }));
        }
      }
      await Promise.all(finishes);
      // let teardowns run their grace timers on the manual clock
      for (let k = 0; k < 20 && monitor.active > 0; k++) {
        await tick();
        clock.advance(1000);
      }
      await Promise.all(watches.map((w) => w.done));
      for (const w of watches) {
        const s = (await store.getSession(w.id))!;
        const events = await store.read(w.id, 0, 100);
        const finish = events.filter((e) => e.type === 'FINISH');
        expect(finish).toHaveLength(1);
        expect(events.at(-1)?.type).toBe('FINISH');
        expect(finish[0]!.data.status).toBe(s.status);
        expect(['succeeded', 'timed_out']).toContain(s.status);
        expect(events.filter((e) => e.type === 'TIMEOUT')).toHaveLength(s.status === 'timed_out' ? 1 : 0);
        outcomes[s.status as 'succeeded' | 'timed_out']++;
      }
    }
    expect(outcomes.succeeded + outcomes.timed_out).toBe(N);
    // both sides of the race win sometimes: the test exercises a real race, not one path
    expect(outcomes.succeeded).toBeGreaterThan(0);
    expect(outcomes.timed_out).toBeGreaterThan(0);
    expect(runtime.removes).toBe(N);
    expect(monitor.active).toBe(0);
  }, 120_000);
});
