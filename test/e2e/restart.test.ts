import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { createMgxClient, followSession } from '@mgx/client';
import { LABELS } from '@mgx/runtime';
import { collect, script } from '../support/sessions.js';
import { newServerProcess, type ServerProcess } from '../support/server-process.js';
import { runtime } from '../support/engine.js';

const servers: ServerProcess[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.stop('SIGTERM').catch(() => null);
});

async function scenario(signal: 'SIGKILL' | 'SIGTERM') {
  const { server, dataDir, owner } = await newServerProcess('mgx-restart', {
    MGX_LOG_LEVEL: 'warn',
    AGENT_MONITOR_POLL_SECONDS: '1',
    AGENT_CONTAINER_MEMORY_LIMIT: '256m',
  });
  servers.push(server);
  await server.start();
  const client = createMgxClient({ url: server.url });
  const s = await client.sessions.create.mutate({
    framework: 'script',
    prompt: script(
      { say: 'before' },
      { events: { count: 300, size: 64 } },
      { sleep: 2500 },
      { events: { count: 300, size: 64 } },
      { say: 'after' },
    ),
    timeoutSeconds: 120,
  });
  // kill it while the agent is running
  for await (const ev of followSession(client, s.id)) if (ev.type === 'START') break;
  const code = await server.stop(signal);
  if (signal === 'SIGTERM') expect(code).toBe(0);
  // the agent keeps running without a server
  expect((await runtime.list({ [LABELS.sessionId]: s.id }))[0]?.state).toBe('running');
  await new Promise((r) => setTimeout(r, 500));
  await server.start();

  const events = await collect(createMgxClient({ url: server.url }), s.id);
  expect(events.at(-1)).toMatchObject({ type: 'FINISH', data: { status: 'succeeded' } });
  expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
  const logs = events.filter((e) => e.type === 'LOG' && typeof e.data.i === 'number');
  expect(logs).toHaveLength(600);
  expect(events.filter((e) => e.type === 'MESSAGE' && e.data.done).map((e) => e.data.text)).toEqual(['before', 'after']);
  expect(events.filter((e) => e.type === 'START')).toHaveLength(1);
  await server.stop('SIGTERM');
  expect(await runtime.list({ [LABELS.owner]: owner })).toEqual([]);
  rmSync(dataDir, { recursive: true, force: true });
}

describe('server restarts mid-session', () => {
  it('kill -9, then restart: the session finishes, its events are dense and complete, no container is left', async () => {
    await scenario('SIGKILL');
  });

  it('graceful SIGTERM leaves the running session to the next start, which adopts it', async () => {
    await scenario('SIGTERM');
  });
});
