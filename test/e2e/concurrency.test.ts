import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LABELS } from '@mgx/runtime';
import { collect, startPlatform, type Platform } from './platform.js';

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
    const ids = await Promise.all(Array.from({ length: SESSIONS }, (_, i) => p.client.sessions.create.mutate({ framework: 'script', prompt: `session ${i}` }).then((s) => s.id)));
    let done = false;
    let samples = 0;
    let most = 0;
    const sampler = (async () => {
      // sample the engine itself, not our own counter
      while (!done) {
        const running = (await p.server.runtime.list({ [LABELS.owner]: p.env.MGX_OWNER! })).filter((c) => c.state === 'running').length;
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
      for (let i = 0; i < 100 && (await q.client.sessions.get.query({ sessionId: first.id })).status === 'queued'; i++) await new Promise((r) => setTimeout(r, 50));
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
});
