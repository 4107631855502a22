import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { createMgxClient } from '@mgx/client';
import { loadSettings } from '@mgx/config';
import { startServer, StartupError, type RunningServer } from '@mgx/server';

// Only workers need a container engine: an API node serves from the store alone.
const started: RunningServer[] = [];
afterAll(async () => {
  for (const s of started) await s.close();
});

const settingsFor = (role: string) =>
  loadSettings({ MGX_DATA_DIR: mkdtempSync(join(tmpdir(), 'mgx-api-node-')), MGX_PORT: '0', MGX_ROLE: role });

describe('an API node without a container engine', () => {
  it('starts, is healthy, lists frameworks and queues sessions', async () => {
    const server = await startServer(settingsFor('api'), { runtime: null, logger: pino({ level: 'silent' }) });
    started.push(server);
    expect(server.runtime).toBeUndefined();
    const client = createMgxClient({ url: server.url });
    const health = await client.system.health.query();
    expect(health.ok).toBe(true);
    expect(health.checks.engine).toMatchObject({ ok: true, detail: 'none here: this API node runs no sessions' });
    const healthz = await fetch(`${server.url}/healthz`);
    expect(healthz.status).toBe(200);
    expect(await healthz.json()).toMatchObject({ ok: true, role: 'api', engine: null });
    expect((await client.system.info.query()).engine).toBeNull();
    expect((await client.frameworks.list.query()).map((f) => f.name)).toContain('script');
    const s = await client.sessions.create.mutate({ framework: 'script', prompt: 'hello' });
    expect((await client.sessions.get.query({ sessionId: s.id })).status).toBe('queued');
  });

  it('refuses to start a process that runs sessions without one', async () => {
    for (const role of ['worker', 'all']) {
      const err = await startServer(settingsFor(role), { runtime: null, logger: pino({ level: 'silent' }) }).then(
        (s) => {
          started.push(s);
          return null;
        },
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(StartupError);
      expect(err).toMatchObject({ code: 'NO_ENGINE', message: `MGX_ROLE=${role} runs sessions and needs a container engine` });
    }
  });
});
