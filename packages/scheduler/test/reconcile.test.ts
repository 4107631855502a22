import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadSettings } from '@mgx/config';
import { SqliteStore, type SessionRecord } from '@mgx/event-store';
import { newSession } from '@mgx/event-store/contract';
import type { IngestHub } from '@mgx/ingest';
import { noopMetrics } from '@mgx/metrics';
import type { Monitor } from '@mgx/monitor';
import { LABELS, type ContainerRuntime } from '@mgx/runtime';
import { Scheduler } from '../src/index.js';

// A container is removed after its session's FINISH, off the client's path: a process that
// dies in between leaves it behind, and the next start's reconcile removes it.

describe('reconcile after a crash between FINISH and the removal', () => {
  let dir: string;
  let store: SqliteStore;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'mgx-reconcile-'));
    store = SqliteStore.open({ file: join(dir, 'db.sqlite') });
  });
  afterAll(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('removes the exited containers of finished sessions, its own and warm-pool ones, and adopts nothing', async () => {
    const settings = loadSettings({ MGX_DATA_DIR: dir, MGX_OWNER: 'w1' }, dir);
    const finished = async (id: string, containerId: string) => {
      await store.sessions.createSession(newSession(id, { workspaceId: id }));
      await store.sessions.claimNext('w1');
      await store.sessions.setContainer(id, containerId);
      await store.sessions.markRunning(id, Date.now(), Date.now() + 60_000);
      await store.sessions.decide(id, { status: 'succeeded', reason: 'finished' });
      await store.sessions.appendFinish(id, { status: 'succeeded', reason: 'finished' });
    };
    await finished('done-1', 'c-1');
    await finished('done-2', 'c-pool');
    const containers = [
      { id: 'c-1', name: 'mgx-done-1', state: 'exited', labels: { [LABELS.owner]: 'w1', [LABELS.sessionId]: 'done-1' } },
      // a warm-pool container carries no session label
      { id: 'c-pool', name: 'mgx-done-2', state: 'exited', labels: { [LABELS.owner]: 'w1', [LABELS.pool]: 'k' } },
    ];
    const removed: string[] = [];
    const runtime = {
      socket: 'unix:///fake',
      list: async () => containers,
      stop: async () => ({ exitCode: 0, oomKilled: false }),
      remove: async (id: string) => void removed.push(id),
    } as unknown as ContainerRuntime;
    const watched: string[] = [];
    const monitor = { watch: async (s: SessionRecord) => void watched.push(s.id) } as unknown as Monitor;
    // socket directories left by sessions whose FINISH came before their exit, and a pool slot's
    const cleared: string[] = [];
    const ingest = {
      dirs: () => ['done-1', 'done-2', 'slot-k-1'],
      isOpen: () => false,
      removeDir: async (id: string) => void cleared.push(id),
      open: async () => ({ dir: '' }),
    } as unknown as IngestHub;
    const scheduler = new Scheduler({ store, runtime, ingest, monitor, metrics: noopMetrics, settings });

    const counts = await scheduler.reconcile();
    expect(watched).toEqual([]);
    expect(counts).toMatchObject({ adopted: 0, removed: 2, finished: 0 });
    expect(removed.sort()).toEqual(['c-1', 'c-pool']);
    expect(cleared.sort()).toEqual(['done-1', 'done-2']);
  });
});
