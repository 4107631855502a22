import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteStore } from '@mgx/event-store';
import { newSession } from '@mgx/event-store/contract';
import { createMetrics } from '@mgx/metrics';
import type { ContainerRuntime, ExitInfo, LogLine } from '@mgx/runtime';
import { Monitor } from '../src/index.js';

/**
 * The engine at its port boundary: containers exit when the test says (or when stopped), and
 * a removal lasts until the test lets it end, as Podman's cleanup and remove take their time.
 */
class FakeRuntime implements Partial<ContainerRuntime> {
  socket = 'fake://';
  readonly #exits = new Map<string, { promise: Promise<ExitInfo>; resolve: (e: ExitInfo) => void }>();
  /** Per removal: whether FINISH was already stored when it began, and how to let it end. */
  readonly removals: Array<{ id: string; finishStored: boolean; done: () => void }> = [];
  constructor(readonly finishStored: (containerId: string) => Promise<boolean>) {}
  #exit(id: string) {
    let e = this.#exits.get(id);
    if (!e) {
      let resolve: (x: ExitInfo) => void = () => undefined;
      const promise = new Promise<ExitInfo>((r) => (resolve = r));
      this.#exits.set(id, (e = { promise, resolve }));
    }
    return e;
  }
  exit(id: string, exitCode: number): void {
    this.#exit(id).resolve({ exitCode, oomKilled: false });
  }
  wait = (id: string) => this.#exit(id).promise;
  stop = async (id: string) => {
    this.exit(id, 143);
    return this.#exit(id).promise;
  };
  inspect = async () => null;
  kill = async () => {};
  logs = async (): Promise<LogLine[]> => [{ stream: 'stderr', text: 'printed right before the exit' }];
  remove = async (id: string) => {
    const finishStored = await this.finishStored(id);
    await new Promise<void>((done) => this.removals.push({ id, finishStored, done }));
  };
}

const settled = (p: Promise<unknown>) => {
  const r = { done: false };
  void p.then(() => (r.done = true));
  return r;
};

describe('teardown: FINISH does not wait for the container to be removed', () => {
  let store: SqliteStore;
  beforeAll(() => {
    store = SqliteStore.open({ file: join(mkdtempSync(join(tmpdir(), 'mgx-teardown-')), 'db.sqlite') });
  });
  afterAll(async () => {
    await store.close();
  });

  const setup = () => {
    const order: string[] = [];
    const types = async (id: string) => (await store.read(id, 0, 1000)).map((e) => e.type);
    const runtime = new FakeRuntime(async (containerId) => (await types(containerId.replace(/^c-/, ''))).includes('FINISH'));
    const monitor = new Monitor({
      store,
      runtime: runtime as unknown as ContainerRuntime,
      ingest: {
        drained: async () => {},
        close: async (id) => void order.push(`ingest closed, FINISH stored: ${(await types(id)).includes('FINISH')}`),
      },
      metrics: createMetrics({ version: 't', node: 't' }, { defaultMetrics: false }),
      stopGraceMs: 1000,
      finishGraceMs: 5000,
      pollMs: 60_000,
      logCaptureBytes: 64 * 1024,
    });
    const start = async (id: string) => {
      await store.createSession(newSession(id, { workspaceId: id }));
      await store.claimNext('w');
      const now = Date.now();
      await store.markRunning(id, now, now + 60_000);
      return { watched: monitor.watch((await store.getSession(id))!, `c-${id}`, now) };
    };
    return { runtime, monitor, order, types, start };
  };

  it("after the agent's FINISH: exit, logs, FINISH stored and watch() resolved while the removal still runs", async () => {
    const { runtime, monitor, order, types, start } = setup();
    const id = 'td-finish';
    const { watched } = await start(id);
    await monitor.agentFinished(id, 1, { status: 'succeeded', reason: 'finished' }, 12345);
    runtime.exit(`c-${id}`, 0);
    await watched;

    const events = await store.read(id, 0, 1000);
    expect(events.map((e) => e.type).slice(-3)).toEqual(['CONTAINER_EXITED', 'LOG', 'FINISH']);
    expect(events.at(-2)?.data).toMatchObject({ source: 'container', stream: 'stderr', text: 'printed right before the exit' });
    expect(events.at(-1)?.data).toMatchObject({ status: 'succeeded', reason: 'finished', reportedAt: 12345 });
    expect(order).toEqual(['ingest closed, FINISH stored: false']);

    // the removal began after FINISH and has not ended: nothing waited for it
    await vitestUntil(() => runtime.removals.length === 1);
    expect(runtime.removals[0]).toMatchObject({ id: `c-${id}`, finishStored: true });
    const removed = settled(monitor.removals());
    await new Promise((r) => setTimeout(r, 20));
    expect(removed.done).toBe(false);
    runtime.removals[0]!.done();
    await monitor.removals();
    expect(await types(id)).toHaveLength(events.length);
  });

  it('a cancelled session: stopped, FINISH stored, then its container removed', async () => {
    const { runtime, monitor, start } = setup();
    const id = 'td-cancel';
    const { watched } = await start(id);
    expect(monitor.cancel(id)).toBe(true);
    await watched;
    const events = await store.read(id, 0, 1000);
    expect(events.at(-1)?.data).toMatchObject({ status: 'cancelled' });
    expect(events.find((e) => e.type === 'CONTAINER_EXITED')?.data).toMatchObject({ exitCode: 143, killedBy: 'cancel' });
    await vitestUntil(() => runtime.removals.length === 1);
    expect(runtime.removals[0]!.finishStored).toBe(true);
    // idle() (the scheduler's drain) waits for removals too
    const idle = settled(monitor.idle());
    await new Promise((r) => setTimeout(r, 20));
    expect(idle.done).toBe(false);
    runtime.removals[0]!.done();
    await monitor.idle();
  });
});

async function vitestUntil(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(cond()).toBe(true);
}
