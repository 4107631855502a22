import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LABELS } from '@mgx/runtime';
import { createMgxClient } from '@mgx/client';
import { startPlatform, type Platform } from '../support/platform.js';
import { collect, script } from '../support/sessions.js';

const LIMIT = 4;
const SESSIONS = 100;

let p: Platform;
beforeAll(async () => {
  p = await startPlatform({ AGENT_MAX_CONCURRENT_CONTAINERS: String(LIMIT), MGX_MAX_QUEUED_SESSIONS: '200' });
});
afterAll(async () => {
  await p?.close();
});

describe('concurrency limit', () => {
  it(`runs ${SESSIONS} sessions submitted at once with never more than ${LIMIT} containers, counted by the engine`, async () => {
    const ids = await Promise.all(
      Array.from({ length: SESSIONS }, (_, i) =>
        p.client.sessions.create.mutate({ framework: 'script', prompt: `session ${i}` }).then((s) => s.id),
      ),
    );
    let done = false;
    let samples = 0;
    let most = 0;
    const sampler = (async () => {
      // sample the engine itself, not our own counter
      while (!done) {
        const running = (await p.server.runtime!.list({ [LABELS.owner]: p.env.MGX_OWNER! })).filter((c) => c.state === 'running').length;
        most = Math.max(most, running);
        samples++;
        await new Promise((r) => setTimeout(r, 25));
      }
    })();
    const finishes = await Promise.all(ids.map((id) => collect(p.client, id).then((ev) => ev.at(-1))));
    done = true;
    await sampler;
    expect(finishes.every((f) => f?.type === 'FINISH' && f.data.status === 'succeeded')).toBe(true);
    expect(samples).toBeGreaterThan(20);
    expect(most).toBeGreaterThan(1);
    expect(most).toBeLessThanOrEqual(LIMIT);
  }, 300_000);

  it('refuses new sessions with a clear error when the queue is full', async () => {
    const q = await startPlatform({ AGENT_MAX_CONCURRENT_CONTAINERS: '1', MGX_MAX_QUEUED_SESSIONS: '1' });
    try {
      const first = await q.client.sessions.create.mutate({ framework: 'script', prompt: JSON.stringify({ steps: [{ sleep: 30_000 }] }) });
      // wait until the first one holds the only slot, then fill the one queue place
      for (let i = 0; i < 100 && (await q.client.sessions.get.query({ sessionId: first.id })).status === 'queued'; i++)
        await new Promise((r) => setTimeout(r, 50));
      const second = await q.client.sessions.create.mutate({ framework: 'script', prompt: 'waits' });
      await expect(q.client.sessions.create.mutate({ framework: 'script', prompt: 'refused' })).rejects.toMatchObject({
        data: { code: 'TOO_MANY_REQUESTS' },
        message: expect.stringContaining('queue is full'),
      });
      await q.client.sessions.cancel.mutate({ sessionId: second.id });
      await q.client.sessions.cancel.mutate({ sessionId: first.id });
      await collect(q.client, first.id);
    } finally {
      await q.close();
    }
  });

  it('holds a per-tenant limit: a busy tenant queues behind itself, not in front of others', async () => {
    const tokens = { a: 'tenant-a-token-0123456789', b: 'tenant-b-token-0123456789' };
    const q = await startPlatform({
      AGENT_MAX_CONCURRENT_CONTAINERS: '4',
      MGX_MAX_CONCURRENT_PER_TENANT: '1',
      MGX_API_TOKENS: `ta:${tokens.a},tb:${tokens.b}`,
    });
    try {
      const a = createMgxClient({ url: q.server.url, token: tokens.a });
      const b = createMgxClient({ url: q.server.url, token: tokens.b });
      const slow = script({ sleep: 1500 });
      const aIds = [];
      for (let i = 0; i < 3; i++) aIds.push((await a.sessions.create.mutate({ framework: 'script', prompt: slow })).id);
      const bId = (await b.sessions.create.mutate({ framework: 'script', prompt: slow })).id;
      let done = false;
      let mostA = 0;
      const sampler = (async () => {
        while (!done) {
          const running = (await q.server.runtime!.list({ [LABELS.tenant]: 'ta', [LABELS.owner]: q.env.MGX_OWNER! })).filter(
            (c) => c.state === 'running',
          ).length;
          mostA = Math.max(mostA, running);
          await new Promise((r) => setTimeout(r, 25));
        }
      })();
      await Promise.all([...aIds.map((id) => collect(a, id)), collect(b, bId)]);
      done = true;
      await sampler;
      expect(mostA).toBe(1);
      const started = async (c: typeof a, id: string) => (await c.sessions.get.query({ sessionId: id })).startedAt!;
      // tenant b did not wait for tenant a's queue
      expect(await started(b, bId)).toBeLessThan(await started(a, aIds[1]!));
    } finally {
      await q.close();
    }
  });

  it('ends a session whose agent goes quiet for longer than its idle timeout', async () => {
    const s = await p.client.sessions.create.mutate({
      framework: 'script',
      prompt: script({ say: 'then silence' }, { sleep: 60_000 }),
      timeoutSeconds: 60,
      idleTimeoutSeconds: 1,
    });
    const events = await collect(p.client, s.id);
    expect(events.find((e) => e.type === 'TIMEOUT')?.data).toMatchObject({ idle: true, idleTimeoutMs: 1000 });
    expect(events.at(-1)?.data).toMatchObject({
      status: 'timed_out',
      reason: 'timeout',
      message: expect.stringContaining('emitted nothing for 1 s'),
    });
  });
});
