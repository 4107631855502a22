import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteStore } from '@mgx/event-store';
import { newSession } from '@mgx/event-store/contract';
import type { Metrics } from '@mgx/metrics';
import { SessionLifecycle } from '../src/index.js';

/** Records the end counters the lifecycle touches, in the order it touches them. */
function countingMetrics() {
  const counted: string[] = [];
  const counter = (name: string) => ({
    inc: (labels?: Record<string, string>) => counted.push(labels ? `${name}:${Object.values(labels).join()}` : name),
  });
  const metrics = {
    sessions: counter('sessions'),
    sessionReasons: counter('reasons'),
    sessionTimeouts: counter('timeouts'),
    oomKills: counter('oom'),
  } as unknown as Metrics;
  return { metrics, counted };
}

describe('SessionLifecycle', () => {
  let store: SqliteStore;
  let n = 0;
  beforeAll(() => {
    store = SqliteStore.open({ file: join(mkdtempSync(join(tmpdir(), 'mgx-lifecycle-')), 'db.sqlite') });
  });
  afterAll(async () => {
    await store.close();
  });

  /** A session in the queue, or claimed and running. */
  const session = async (running: boolean): Promise<string> => {
    const id = `life-${++n}`;
    await store.createSession(newSession(id, { workspaceId: id, limits: { memoryBytes: 1, cpuQuota: 1, timeoutMs: 1000 } }));
    if (running) {
      await store.claimNext('w');
      await store.markRunning(id, Date.now(), Date.now() + 1000);
    }
    return id;
  };
  const types = async (id: string) => (await store.read(id, 0, 100)).map((e) => e.type);

  it('ends a session: decision, counts, FINISH last', async () => {
    const { metrics, counted } = countingMetrics();
    const id = await session(true);
    const d = await new SessionLifecycle({ store, metrics }).end(
      id,
      { status: 'failed', reason: 'runtime_error', message: 'x' },
      { ifLost: 'finish' },
    );
    expect(d.won).toBe(true);
    expect(counted).toEqual(['sessions:failed', 'reasons:runtime_error']);
    expect((await types(id)).at(-1)).toBe('FINISH');
    expect((await store.getSession(id))?.status).toBe('failed');
  });

  it('leaves a session it lost to its holder: no FINISH, nothing counted', async () => {
    const { metrics, counted } = countingMetrics();
    const id = await session(true);
    const d = await new SessionLifecycle({ store, metrics }).end(
      id,
      { status: 'cancelled', reason: 'cancelled' },
      { from: ['queued'], events: [{ type: 'CANCELLED', data: {} }], ifLost: 'leave' },
    );
    expect(d.won).toBe(false);
    expect(d.session.status).toBe('running');
    expect(counted).toEqual([]);
    expect(await types(id)).not.toContain('FINISH');
    expect(await types(id)).not.toContain('CANCELLED');
  });

  it('finishes a session it holds with the decision that came first', async () => {
    const { metrics, counted } = countingMetrics();
    const id = await session(true);
    const life = new SessionLifecycle({ store, metrics });
    await life.decide(id, { status: 'timed_out', reason: 'timeout', message: 'late' });
    const d = await life.end(id, { status: 'failed', reason: 'runtime_error' }, { fallback: 'runtime_error', ifLost: 'finish' });
    expect(d.won).toBe(false);
    expect(d.outcome).toEqual({ status: 'timed_out', reason: 'timeout', message: 'late' });
    expect(counted).toEqual(['timeouts', 'sessions:timed_out', 'reasons:timeout']);
    const events = await store.read(id, 0, 100);
    expect(events.filter((e) => e.type === 'FINISH').map((e) => e.data.status)).toEqual(['timed_out']);
  });

  it('counts before the step before FINISH, and stores FINISH after it', async () => {
    const { metrics, counted } = countingMetrics();
    const id = await session(true);
    const life = new SessionLifecycle({ store, metrics });
    const d = await life.decide(id, { status: 'failed', reason: 'oom_killed', exitCode: 137 });
    const seen: { counted: number; finished: boolean }[] = [];
    await life.finish(id, d.outcome, {
      rid: 7,
      reportedAt: 5,
      beforeFinish: async () => {
        seen.push({ counted: counted.length, finished: (await types(id)).includes('FINISH') });
      },
    });
    expect(seen).toEqual([{ counted: 3, finished: false }]);
    expect(counted).toEqual(['oom', 'sessions:failed', 'reasons:oom_killed']);
    const finish = (await store.read(id, 0, 100)).at(-1);
    expect(finish?.type).toBe('FINISH');
    expect(finish?.data).toMatchObject({ status: 'failed', reason: 'oom_killed', exitCode: 137, reportedAt: 5 });
  });
});
