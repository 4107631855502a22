import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMgxClient, followSession, type MgxClient, type SessionEvent } from '@mgx/client';
import { ownedContainers } from '../support/engine.js';
import { freePort, newServerProcess, ServerProcess } from '../support/server-process.js';
import { sleep } from '../support/sessions.js';

// Draining a worker, in real processes over one SQLite file: an API process, and worker
// processes that are drained by a signal (MGX_STOP=drain) or by an operator through the API
// (system.drainWorker). A drained worker claims nothing more, lets its running session end,
// deregisters (state stopped) and exits 0, leaving no container behind. The running session
// ends when the test opens its gate (a file in its workspace), not after a fixed time, so each
// step is seen while the drain waits for it on a machine of any speed.

/** Each test starts worker processes and containers one after the other: on a loaded machine that takes a while. */
const PROCESSES_MS = 300_000;

let api: ServerProcess;
let dataDir: string;
let client: MgxClient;
const workers: ServerProcess[] = [];
/** Queued while the first worker drained; the second worker runs it. */
let queuedMeanwhile: { id: string; open: () => void } | undefined;

/** A worker process on the shared store, with a short heartbeat and a fast claim poll. */
async function startWorker(env: Record<string, string> = {}): Promise<{ worker: ServerProcess; owner: string }> {
  const owner = env.MGX_OWNER ?? `mgx-drain-w-${randomBytes(4).toString('hex')}`;
  const worker = new ServerProcess({
    MGX_LOG_LEVEL: 'info',
    AGENT_CONTAINER_MEMORY_LIMIT: '256m',
    MGX_ROLE: 'worker',
    MGX_PORT: String(await freePort()),
    MGX_DATA_DIR: dataDir,
    MGX_OWNER: owner,
    AGENT_MAX_CONCURRENT_CONTAINERS: '2',
    AGENT_MONITOR_POLL_SECONDS: '0.2',
    MGX_WORKER_HEARTBEAT_SECONDS: '0.5',
    MGX_WORKER_LEASE_SECONDS: '10',
    ...env,
  });
  workers.push(worker);
  await worker.start();
  return { worker, owner };
}

/**
 * A session that says `up` once running and ends `succeeded` a moment after `open()` puts a
 * file in its workspace: it outlasts the drain's first steps however slow the machine is.
 */
async function gatedSession(): Promise<{ id: string; open: () => void }> {
  const workspaceId = `ws-drain-${randomBytes(4).toString('hex')}`;
  const command = [
    '/usr/local/bin/node',
    '-e',
    "console.log('up'); const t = setInterval(() => { if (require('fs').existsSync('go')) { clearInterval(t); console.log('end'); } }, 100);",
  ];
  const { id } = await client.sessions.create.mutate({ framework: 'exec', prompt: 'wait for the gate', workspaceId, options: { command } });
  return { id, open: () => writeFileSync(join(dataDir, 'workspaces', workspaceId, 'go'), '') };
}

/** Follows a session until FINISH; `up` resolves once its command printed `up` (it is running). */
function followUntilUp(sessionId: string): { up: Promise<void>; events: Promise<SessionEvent[]> } {
  let isUp: () => void = () => undefined;
  const up = new Promise<void>((r) => (isUp = r));
  const events = (async () => {
    const all: SessionEvent[] = [];
    for await (const ev of followSession(client, sessionId)) {
      all.push(ev);
      if (ev.type === 'LOG' && ev.data.text === 'up') isUp();
    }
    return all;
  })();
  return { up, events };
}

/** Resolves after the worker stored two more heartbeats: its claim poll (0.2 s) ran meanwhile too. */
async function twoHeartbeats(id: string): Promise<void> {
  const beat = async () => (await client.system.workers.query()).workers.find((w) => w.id === id)?.lastHeartbeat ?? 0;
  const first = await beat();
  let seen = 0;
  for (let last = first; seen < 2; await sleep(100)) {
    const now = await beat();
    if (now > last) {
      seen++;
      last = now;
    }
  }
}

const workerState = async (id: string) => (await client.system.workers.query()).workers.find((w) => w.id === id)?.state;

/** Every state the store shows for worker `id` until `done` settles (polled, so none is missed while it lasts). */
async function statesUntil(id: string, done: Promise<unknown>): Promise<string[]> {
  let over = false;
  void done.finally(() => (over = true));
  const seen: string[] = [];
  while (!over) {
    const state = await workerState(id);
    if (state && seen.at(-1) !== state) seen.push(state);
    await sleep(50);
  }
  return seen;
}

/** The engine state of a session's container(s). */
const containerStates = async (owner: string) => (await ownedContainers(owner)).map((c) => c.state);

/** The exit code of a server process, once it exits by itself. */
const exitOf = (p: ServerProcess) => new Promise<number | null>((resolve) => p.child!.once('exit', (code) => resolve(code)));

beforeAll(async () => {
  ({ server: api, dataDir } = await newServerProcess('mgx-drain', { MGX_LOG_LEVEL: 'warn', MGX_ROLE: 'api' }));
  await api.start();
  // no tokens, loopback: the one caller is the operator of this fleet
  client = createMgxClient({ url: api.url });
});

afterAll(async () => {
  for (const w of workers) await w.stop('SIGTERM');
  await api?.stop('SIGTERM');
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe('draining a worker', () => {
  it(
    'MGX_STOP=drain: SIGTERM drains, claims nothing new, lets the running session succeed, deregisters and exits 0',
    async () => {
      const { worker, owner } = await startWorker({ MGX_STOP: 'drain' });
      const running = await gatedSession();
      const followed = followUntilUp(running.id);
      await followed.up;
      expect((await client.sessions.get.query({ sessionId: running.id })).workerId).toBe(owner);

      const exited = worker.stop('SIGTERM');
      const states = statesUntil(owner, exited);
      while ((await workerState(owner)) !== 'draining') await sleep(50);
      // a slot is free and the worker polls the queue every 0.2 s: only the drain keeps it from this one
      queuedMeanwhile = await gatedSession();
      await twoHeartbeats(owner);
      expect(await client.sessions.get.query({ sessionId: queuedMeanwhile.id })).toMatchObject({ status: 'queued', workerId: null });
      expect(await workerState(owner)).toBe('draining');
      running.open();

      const events = await followed.events;
      expect(events.at(-1)).toMatchObject({ type: 'FINISH', data: { status: 'succeeded' } });
      expect(events.some((e) => e.type === 'LOG' && e.data.text === 'end')).toBe(true);
      expect(await exited).toBe(0);
      // the first look may come before the drain was stored
      expect((await states).filter((st) => st !== 'alive')).toEqual(['draining', 'stopped']);
      expect(await workerState(owner)).toBe('stopped');
      expect(await client.sessions.get.query({ sessionId: queuedMeanwhile.id })).toMatchObject({ status: 'queued', workerId: null });
      expect(await ownedContainers(owner)).toEqual([]);
    },
    PROCESSES_MS,
  );

  it(
    'system.drainWorker: the worker hears it at its next heartbeat and drains the same way, then exits 0',
    async () => {
      // the session the first worker left queued is this one's to run
      const running = queuedMeanwhile!;
      const followed = followUntilUp(running.id);
      const { worker, owner } = await startWorker();
      await followed.up;
      expect((await client.sessions.get.query({ sessionId: running.id })).workerId).toBe(owner);

      const exited = exitOf(worker);
      const states = statesUntil(owner, exited);
      const { worker: view } = await client.system.drainWorker.mutate({ workerId: owner });
      expect(view).toMatchObject({ id: owner, drainRequested: true });
      while ((await workerState(owner)) !== 'draining') await sleep(50);
      const queued = await gatedSession();
      await twoHeartbeats(owner);
      expect(await client.sessions.get.query({ sessionId: queued.id })).toMatchObject({ status: 'queued', workerId: null });
      running.open();

      const events = await followed.events;
      expect(events.at(-1)).toMatchObject({ type: 'FINISH', data: { status: 'succeeded' } });
      expect(await exited).toBe(0);
      expect(await states).toEqual(['alive', 'draining', 'stopped']);
      expect(await client.sessions.get.query({ sessionId: queued.id })).toMatchObject({ status: 'queued', workerId: null });
      expect(await ownedContainers(owner)).toEqual([]);
      // no worker is left to run it
      await client.sessions.cancel.mutate({ sessionId: queued.id });
      // nothing runs there any more: a second request is refused, and so is one for a worker never seen
      await expect(client.system.drainWorker.mutate({ workerId: owner })).rejects.toMatchObject({ data: { code: 'BAD_REQUEST' } });
      await expect(client.system.drainWorker.mutate({ workerId: 'no-such-worker' })).rejects.toMatchObject({
        data: { code: 'NOT_FOUND' },
      });
    },
    PROCESSES_MS,
  );

  it(
    'a second SIGTERM during a drain hands over at once: the session keeps running, and the next start adopts it',
    async () => {
      const { worker, owner } = await startWorker({ MGX_STOP: 'drain' });
      const running = await gatedSession();
      const followed = followUntilUp(running.id);
      await followed.up;

      const exited = worker.stop('SIGTERM');
      while ((await workerState(owner)) !== 'draining') await sleep(50);
      worker.child!.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(readFileSync(worker.logFile, 'utf8')).toMatch(/asked again during the drain: handing over now/);
      // handed over: the lease is kept (not stopped), the session and its container run on
      expect(await workerState(owner)).toBe('draining');
      expect(await client.sessions.get.query({ sessionId: running.id })).toMatchObject({ status: 'running', workerId: owner });
      expect(await containerStates(owner)).toEqual(['running']);

      const { worker: again } = await startWorker({ MGX_OWNER: owner });
      expect(await workerState(owner)).toBe('alive');
      running.open();
      const events = await followed.events;
      expect(events.at(-1)).toMatchObject({ type: 'FINISH', data: { status: 'succeeded' } });
      expect(events.some((e) => e.type === 'LOG' && e.data.text === 'end')).toBe(true);
      expect(await again.stop('SIGTERM')).toBe(0);
      expect(await ownedContainers(owner)).toEqual([]);
    },
    PROCESSES_MS,
  );
});
