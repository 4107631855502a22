import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LABELS } from '@mgx/runtime';
import { containersLeft } from '../support/engine.js';
import { startPlatform, type Platform } from '../support/platform.js';
import { collect, script } from '../support/sessions.js';

let p: Platform;
beforeAll(async () => {
  p = await startPlatform({ AGENT_MAX_CONCURRENT_CONTAINERS: '2' });
  if (!(await p.server.runtime!.imageExists(p.server.settings.agent.image))) {
    throw new Error(`image ${p.server.settings.agent.image} is missing: run \`npx nx run runner:build-agent\` (npm test does this)`);
  }
});
afterAll(async () => {
  await p?.close();
});

// removed shortly after FINISH, off the client's path: waited for, bounded
const containersOf = (sessionId: string) => containersLeft({ [LABELS.sessionId]: sessionId });

describe('one agent session end to end in a real container', () => {
  it('streams every event in order over the tRPC subscription, FINISH last and once, and removes the container', async () => {
    const s = await p.client.sessions.create.mutate({ framework: 'script', prompt: 'hello from the end to end test' });
    expect(s.status).toBe('queued');
    const events = await collect(p.client, s.id);
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    const types = events.map((e) => e.type);
    expect(types.slice(0, 3)).toEqual(['SESSION_QUEUED', 'CONTAINER_STARTED', 'START']);
    expect(types.filter((t) => t === 'FINISH')).toHaveLength(1);
    expect(types.at(-1)).toBe('FINISH');
    expect(events.at(-1)?.data).toMatchObject({ status: 'succeeded', reason: 'finished' });
    const text = events
      .filter((e) => e.type === 'MESSAGE' && e.data.delta)
      .map((e) => e.data.delta)
      .join('');
    expect(text).toBe('hello from the end to end test');
    const final = await p.client.sessions.get.query({ sessionId: s.id });
    expect(final).toMatchObject({ status: 'succeeded', reason: 'finished', prompt: 'hello from the end to end test' });
    expect(await containersOf(s.id)).toEqual([]);
    expect(events.find((e) => e.type === 'CONTAINER_EXITED')?.data).toMatchObject({ exitCode: 0 });
  });

  it('resumes a stream after a given event id with no gap and no duplicate', async () => {
    const s = await p.client.sessions.create.mutate({
      framework: 'script',
      prompt: script({ say: 'one two three four' }, { say: 'five' }),
    });
    const all = await collect(p.client, s.id);
    const rest = await collect(p.client, s.id, 3);
    expect(rest.map((e) => e.seq)).toEqual(all.slice(3).map((e) => e.seq));
    expect(rest).toEqual(all.slice(3));
  });

  it('writes files into the session workspace on the host', async () => {
    const s = await p.client.sessions.create.mutate({
      framework: 'script',
      workspaceId: 'ws-e2e-files',
      prompt: script({ write: { path: 'src/app.js', content: 'console.log(1)\n' } }),
    });
    const events = await collect(p.client, s.id);
    expect(events.find((e) => e.type === 'FILE_CHANGED')?.data).toMatchObject({ path: 'src/app.js' });
    const file = join(p.dataDir, 'workspaces', 'ws-e2e-files', 'src', 'app.js');
    expect(existsSync(file)).toBe(true);
    expect(readFileSync(file, 'utf8')).toBe('console.log(1)\n');
  });

  it('kills a sleeping agent at its deadline and ends the session timed_out', async () => {
    const s = await p.client.sessions.create.mutate({ framework: 'script', prompt: script({ sleep: 60_000 }), timeoutSeconds: 1 });
    const events = await collect(p.client, s.id);
    const types = events.map((e) => e.type);
    expect(types).toContain('TIMEOUT');
    expect(types.indexOf('TIMEOUT')).toBeLessThan(types.indexOf('FINISH'));
    expect(events.at(-1)?.data).toMatchObject({ status: 'timed_out', reason: 'timeout' });
    expect(await p.client.sessions.get.query({ sessionId: s.id })).toMatchObject({ status: 'timed_out', reason: 'timeout' });
    expect(await containersOf(s.id)).toEqual([]);
  });

  it('ends an agent that exits without FINISH as failed, with its exit code', async () => {
    const s = await p.client.sessions.create.mutate({ framework: 'script', prompt: script({ say: 'bye' }, { exit: 7 }) });
    const events = await collect(p.client, s.id);
    // what it said before exiting is kept
    expect(events.some((e) => e.type === 'MESSAGE' && e.data.text === 'bye')).toBe(true);
    expect(events.at(-1)?.data).toMatchObject({ status: 'failed', reason: 'exited_without_finish', exitCode: 7 });
    expect(await p.client.sessions.get.query({ sessionId: s.id })).toMatchObject({ status: 'failed', exitCode: 7 });
    expect(await containersOf(s.id)).toEqual([]);
  });

  it('reports an agent failure as failed with reason agent_error', async () => {
    const s = await p.client.sessions.create.mutate({ framework: 'script', prompt: script({ fail: 'could not build the app' }) });
    const events = await collect(p.client, s.id);
    expect(events.at(-1)?.data).toMatchObject({ status: 'failed', reason: 'agent_error', message: 'could not build the app' });
  });

  it('cancels a running session: stopped, FINISH cancelled, container gone', async () => {
    const s = await p.client.sessions.create.mutate({ framework: 'script', prompt: script({ say: 'working' }, { sleep: 60_000 }) });
    const events: string[] = [];
    const { followSession } = await import('@mgx/client');
    for await (const ev of followSession(p.client, s.id)) {
      events.push(ev.type);
      if (ev.type === 'MESSAGE' && ev.data.done) {
        const r = await p.client.sessions.cancel.mutate({ sessionId: s.id });
        expect(r.cancelled).toBe(true);
      }
    }
    expect(events).toContain('CANCELLED');
    expect(events.at(-1)).toBe('FINISH');
    expect(await p.client.sessions.get.query({ sessionId: s.id })).toMatchObject({ status: 'cancelled', reason: 'cancelled' });
    expect(await containersOf(s.id)).toEqual([]);
  });

  it('lists sessions newest first with cursor pages', async () => {
    const page1 = await p.client.sessions.list.query({ limit: 2 });
    expect(page1.items).toHaveLength(2);
    expect(page1.nextCursor).not.toBeNull();
    const page2 = await p.client.sessions.list.query({ limit: 2, cursor: page1.nextCursor! });
    expect(page2.items[0]!.createdAt).toBeLessThanOrEqual(page1.items[1]!.createdAt);
    expect(new Set([...page1.items, ...page2.items].map((s) => s.id)).size).toBe(4);
  });

  it('refuses an unknown framework and a bad workspace id with clear errors', async () => {
    await expect(p.client.sessions.create.mutate({ framework: 'nope', prompt: 'x' })).rejects.toThrow(
      /unknown framework "nope"; available: script/,
    );
    await expect(p.client.sessions.create.mutate({ framework: 'script', prompt: 'x', workspaceId: '../etc' })).rejects.toThrow(
      /workspaceId must be/,
    );
    await expect(p.client.sessions.get.query({ sessionId: 'does-not-exist' })).rejects.toThrow(/not found/);
  });
});

describe('queue and limits', () => {
  it('cancels a queued session so that it never starts', async () => {
    const q = await startPlatform({ AGENT_MAX_CONCURRENT_CONTAINERS: '1' });
    try {
      const blocker = await q.client.sessions.create.mutate({ framework: 'script', prompt: script({ sleep: 60_000 }), timeoutSeconds: 30 });
      const queued = await q.client.sessions.create.mutate({ framework: 'script', prompt: 'never runs' });
      expect((await q.client.sessions.get.query({ sessionId: queued.id })).status).toBe('queued');
      const r = await q.client.sessions.cancel.mutate({ sessionId: queued.id });
      expect(r).toMatchObject({ status: 'cancelled', cancelled: true });
      const events = await collect(q.client, queued.id);
      expect(events.map((e) => e.type)).toEqual(['SESSION_QUEUED', 'CANCELLED', 'FINISH']);
      await q.client.sessions.cancel.mutate({ sessionId: blocker.id });
      const blockerEvents = await collect(q.client, blocker.id);
      expect(blockerEvents.at(-1)?.data).toMatchObject({ status: 'cancelled' });
      expect(await q.server.runtime!.list({ [LABELS.sessionId]: queued.id })).toEqual([]);
    } finally {
      await q.close();
    }
  });

  it('fails a session whose image is missing with runtime_error and says how to build it', async () => {
    const m = await startPlatform({ AGENT_CONTAINER_IMAGE: 'localhost/mgx-no-such-image:none' });
    try {
      const s = await m.client.sessions.create.mutate({ framework: 'script', prompt: 'x' });
      const events = await collect(m.client, s.id);
      expect(events.map((e) => e.type)).toEqual(['SESSION_QUEUED', 'FINISH']);
      expect(events.at(-1)?.data).toMatchObject({
        status: 'failed',
        reason: 'runtime_error',
        message: expect.stringContaining('nx run runner:build-agent'),
      });
      expect(await m.server.runtime!.list({ [LABELS.owner]: m.env.MGX_OWNER! })).toEqual([]);
    } finally {
      await m.close();
    }
  });
});
