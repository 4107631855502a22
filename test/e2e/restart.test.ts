import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createMgxClient, followSession } from '@mgx/client';
import { LABELS } from '@mgx/runtime';
import { collect, script } from '../support/sessions.js';
import { newServerProcess, type ServerProcess } from '../support/server-process.js';
import { runtime } from '../support/engine.js';
import { fakeOpenAI } from '../support/fake-openai.js';

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

/** Calls the model through the gateway each time a file `go<N>` appears in the workspace, twice, printing each answer's status. */
const TWO_CALLS = String.raw`
const fs = require('fs');
const ask = () => fetch(process.env.OPENAI_BASE_URL + '/chat/completions', {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }),
}).then((r) => console.log('status ' + r.status));
const waitFor = (name) => new Promise((r) => { const t = setInterval(() => { if (fs.existsSync(name)) { clearInterval(t); r(); } }, 100); });
(async () => { await ask(); await waitFor('go'); await ask(); await new Promise((r) => setTimeout(r, 30000)); })();`;

describe('a session taken over after a restart', () => {
  it('keeps its model budget: the calls it made under the previous start count against maxModelCalls', async () => {
    const fake = await fakeOpenAI();
    try {
      fake.reset([{ text: 'one', promptTokens: 10, completionTokens: 2 }]);
      const key = `sk-${randomBytes(8).toString('hex')}`;
      const { server, dataDir } = await newServerProcess('mgx-restart-model', {
        MGX_LOG_LEVEL: 'warn',
        AGENT_MONITOR_POLL_SECONDS: '1',
        AGENT_CONTAINER_MEMORY_LIMIT: '256m',
        MGX_MODEL_PROVIDERS: JSON.stringify([{ name: 'fake', baseUrl: fake.baseUrl, apiKeyEnv: 'MGX_TEST_FAKE_KEY', models: ['*'] }]),
        MGX_TEST_FAKE_KEY: key,
      });
      servers.push(server);
      await server.start();
      const client = createMgxClient({ url: server.url });
      const s = await client.sessions.create.mutate({
        framework: 'exec',
        prompt: '',
        options: { command: ['/usr/local/bin/node', '-e', TWO_CALLS] },
        maxModelCalls: 1,
        timeoutSeconds: 120,
      });
      for await (const ev of followSession(client, s.id)) if (ev.type === 'MODEL_CALL') break;
      expect(await server.stop('SIGTERM')).toBe(0);
      await server.start();
      // the second call is made under the new start: the session's one call is used already
      writeFileSync(join(dataDir, 'workspaces', s.workspaceId, 'go'), '');
      const events = await collect(createMgxClient({ url: server.url }), s.id);
      expect(events.at(-1)?.data).toMatchObject({
        status: 'failed',
        reason: 'budget_exceeded',
        usage: { model: { calls: 1, promptTokens: 10, completionTokens: 2, refused: 1 } },
      });
      expect(events.filter((e) => e.type === 'MODEL_CALL').map((e) => [e.data.status, e.data.total])).toEqual([
        ['ok', { calls: 1, promptTokens: 10, completionTokens: 2, refused: 0 }],
        ['refused', { calls: 1, promptTokens: 10, completionTokens: 2, refused: 1 }],
      ]);
      expect(fake.requests).toHaveLength(1);
      await server.stop('SIGTERM');
      rmSync(dataDir, { recursive: true, force: true });
    } finally {
      await fake.close();
    }
  });
});
