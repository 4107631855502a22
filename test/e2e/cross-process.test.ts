import { rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMgxClient, followSession, type MgxClient, type SessionEvent } from '@mgx/client';
import { LABELS } from '@mgx/runtime';
import { containersLeft } from '../support/engine.js';
import { freePort, newServerProcess, ServerProcess } from '../support/server-process.js';
import { script, storedEvents } from '../support/sessions.js';

// An API process and a worker process on one SQLite file, as two processes of a fleet on one
// host. The worker's fallback poll (which is also its claim poll) is set far beyond the test, so
// a cancel sent to the API process can reach it only through the store's change check; the
// sessions are therefore queued before the worker starts, and it claims them as it starts.
let api: ServerProcess;
let worker: ServerProcess;
let dataDir: string;
let client: MgxClient;
let toCancel: string;
let toFollow: string;
let followed: Promise<SessionEvent[]>;

beforeAll(async () => {
  const common = { MGX_LOG_LEVEL: 'warn', AGENT_CONTAINER_MEMORY_LIMIT: '256m' };
  ({ server: api, dataDir } = await newServerProcess('mgx-xproc', { ...common, MGX_ROLE: 'api' }));
  await api.start();
  client = createMgxClient({ url: api.url });
  toCancel = (
    await client.sessions.create.mutate({ framework: 'script', prompt: script({ say: 'up' }, { sleep: 600_000 }), timeoutSeconds: 900 })
  ).id;
  const steps: unknown[] = [{ say: 'begin' }, { sleep: 3000 }];
  for (let i = 0; i < 5; i++) steps.push({ events: { count: 40, size: 64 } }, { sleep: 150 });
  steps.push({ say: 'end' });
  toFollow = (await client.sessions.create.mutate({ framework: 'script', prompt: script(...steps), timeoutSeconds: 120 })).id;

  worker = new ServerProcess({
    ...common,
    MGX_ROLE: 'worker',
    MGX_PORT: String(await freePort()),
    MGX_DATA_DIR: dataDir,
    MGX_OWNER: `mgx-xproc-worker-${randomBytes(4).toString('hex')}`,
    AGENT_MAX_CONCURRENT_CONTAINERS: '2',
    AGENT_MONITOR_POLL_SECONDS: '3600',
  });
  // followed through the API process from before the worker runs it: every event arrives live
  followed = followThroughApi(toFollow);
  await worker.start();
});

afterAll(async () => {
  await api?.stop('SIGTERM');
  await worker?.stop('SIGTERM');
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

/** Follows a session through the API process; `onEvent` sees each event as it arrives. */
async function followThroughApi(sessionId: string, onEvent: (ev: SessionEvent) => void = () => undefined): Promise<SessionEvent[]> {
  const events: SessionEvent[] = [];
  for await (const ev of followSession(client, sessionId)) {
    events.push(ev);
    onEvent(ev);
  }
  return events;
}

describe('an API process and a worker process sharing one SQLite store', () => {
  it('a cancel sent to the API process ends the session running on the worker: cancelled', async () => {
    const s = { id: toCancel };
    let up: () => void = () => undefined;
    const isUp = new Promise<void>((r) => (up = r));
    const following = followThroughApi(s.id, (ev) => {
      if (ev.type === 'MESSAGE' && ev.data.text === 'up') up();
    });
    await isUp;
    expect(await client.sessions.cancel.mutate({ sessionId: s.id })).toMatchObject({ cancelled: true });
    const events = await following;

    expect(events.at(-1)).toMatchObject({ type: 'FINISH', data: { status: 'cancelled', reason: 'cancelled' } });
    expect(events.filter((e) => e.type === 'CANCELLED')).toHaveLength(1);
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    const session = await client.sessions.get.query({ sessionId: s.id });
    expect(session).toMatchObject({ status: 'cancelled', reason: 'cancelled' });
    // removed by the worker shortly after FINISH
    expect(await containersLeft({ [LABELS.sessionId]: s.id })).toEqual([]);
  });

  it('a client following through the API process gets every event the worker stores, in order, once', async () => {
    const events = await followed;

    expect(events.at(-1)).toMatchObject({ type: 'FINISH', data: { status: 'succeeded' } });
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    expect(events.filter((e) => e.type === 'LOG' && typeof e.data.i === 'number')).toHaveLength(200);
    expect(events).toEqual(await storedEvents(client, toFollow));
  });
});
