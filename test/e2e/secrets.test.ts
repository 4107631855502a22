import { Writable } from 'node:stream';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadSettings } from '@mgx/config';
import { createMgxClient, followSession, type MgxClient } from '@mgx/client';
import { LABELS } from '@mgx/runtime';
import { startServer, type RunningServer } from '@mgx/server';
import { collect, script } from '../support/sessions.js';
import { docker } from '../support/engine.js';

const SECRET = `sk-test-${randomBytes(12).toString('hex')}`;
let logs = '';
let server: RunningServer;
let client: MgxClient;
let dataDir: string;

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'mgx-secrets-'));
  // every log line the server writes, at the most verbose level, is kept to search it
  const sink = new Writable({ write: (chunk, _e, cb) => ((logs += String(chunk)), cb()) });
  const settings = loadSettings({
    MGX_PORT: '0',
    MGX_DATA_DIR: dataDir,
    MGX_OWNER: `mgx-sec-${randomBytes(4).toString('hex')}`,
    AGENT_CONTAINER_MEMORY_LIMIT: '256m',
    ...(process.env.AGENT_CONTAINER_IMAGE ? { AGENT_CONTAINER_IMAGE: process.env.AGENT_CONTAINER_IMAGE } : {}),
  });
  server = await startServer(settings, { logger: pino({ level: 'trace' }, sink) });
  client = createMgxClient({ url: server.url });
});
afterAll(async () => {
  await server?.close({ drain: true });
  rmSync(dataDir, { recursive: true, force: true });
});

describe('per-session secrets', () => {
  it('reach the agent but never the events, logs, sessions.get, metrics, container env or labels', async () => {
    const s = await client.sessions.create.mutate({
      framework: 'script',
      prompt: script({ getsecret: 'API_KEY' }, { sleep: 1500 }),
      secrets: { API_KEY: SECRET },
    });
    // look at the container while it runs
    let inspected = '';
    for await (const ev of followSession(client, s.id)) {
      if (ev.type === 'START') {
        const [c] = await docker.listContainers({ filters: { label: [`${LABELS.sessionId}=${s.id}`] } });
        inspected = JSON.stringify(await docker.getContainer(c!.Id).inspect());
      }
    }
    expect(inspected).toContain(s.id);
    expect(inspected).not.toContain(SECRET);
    const events = await collect(client, s.id);
    expect(events.at(-1)?.data).toMatchObject({ status: 'succeeded' });
    // the agent had it (it said it back), and the platform redacted it from the stored event
    expect(events.find((e) => e.type === 'MESSAGE' && e.data.done)?.data.text).toBe('API_KEY=[REDACTED]');
    expect(JSON.stringify(events)).not.toContain(SECRET);
    expect(JSON.stringify(await client.sessions.get.query({ sessionId: s.id }))).not.toContain(SECRET);
    expect(JSON.stringify(await client.sessions.list.query({}))).not.toContain(SECRET);
    expect(await (await fetch(`${server.url}/metrics`)).text()).not.toContain(SECRET);
    expect(logs.length).toBeGreaterThan(1000);
    expect(logs).not.toContain(SECRET);
  });

  it('refuses malformed secret names and values', async () => {
    await expect(client.sessions.create.mutate({ framework: 'script', prompt: 'x', secrets: { 'bad name': 'x' } })).rejects.toThrow(
      /secret name/,
    );
    await expect(client.sessions.create.mutate({ framework: 'script', prompt: 'x', secrets: { OK: 'a\nb' } })).rejects.toThrow(
      /secret OK contains a NUL or newline/,
    );
  });
});
