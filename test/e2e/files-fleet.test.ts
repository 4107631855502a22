import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TRPCClientError } from '@trpc/client';
import { createMgxClient, type MgxClient } from '@mgx/client';
import { loadSettings } from '@mgx/config';
import { startServer, type RunningServer } from '@mgx/server';
import { freePort } from '../support/server-process.js';
import { serverLogFile } from '../support/server-log.js';
import { collect } from '../support/sessions.js';

// A fleet on one SQLite file: an API node without workspaces and a worker that advertises its
// URL. A file request to the API node reaches the worker that holds the workspace.

const TOKEN = `acme-${randomBytes(12).toString('hex')}`;
const OTHER = `globex-${randomBytes(12).toString('hex')}`;
let dataDir: string;
let api: RunningServer;
let worker: RunningServer;
let client: MgxClient;

const logger = (name: string) => pino({ level: 'info' }, pino.destination({ dest: serverLogFile(name), sync: true }));

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'mgx-files-fleet-'));
  const common = {
    MGX_DATA_DIR: dataDir,
    MGX_API_TOKENS: `acme:${TOKEN},globex:${OTHER}`,
    AGENT_CONTAINER_MEMORY_LIMIT: '256m',
    AGENT_MONITOR_POLL_SECONDS: '1',
    ...(process.env.CONTAINER_HOST ? { CONTAINER_HOST: process.env.CONTAINER_HOST } : {}),
  };
  const port = await freePort();
  worker = await startServer(
    loadSettings({
      ...common,
      MGX_ROLE: 'worker',
      MGX_PORT: String(port),
      MGX_OWNER: `files-worker-${randomBytes(3).toString('hex')}`,
      MGX_WORKER_URL: `http://127.0.0.1:${port}`,
    }),
    { logger: logger('files fleet worker') },
  );
  api = await startServer(
    loadSettings({ ...common, MGX_ROLE: 'api', MGX_PORT: '0', MGX_OWNER: `files-api-${randomBytes(3).toString('hex')}` }),
    {
      runtime: null,
      logger: logger('files fleet api'),
    },
  );
  client = createMgxClient({ url: api.url, token: TOKEN });
});
afterAll(async () => {
  await api?.close();
  await worker?.close({ drain: true });
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

const http = (base: string, path: string, init: RequestInit = {}) =>
  fetch(`${base}${path}`, { ...init, headers: { authorization: `Bearer ${TOKEN}`, ...(init.headers ?? {}) } });

describe('workspace files in a fleet', () => {
  it('an API node forwards file requests to the worker that holds the workspace; tRPC file calls are answered by that worker', async () => {
    const ws = `ws-fleet-${randomBytes(4).toString('hex')}`;
    const s = await client.sessions.create.mutate({
      framework: 'exec',
      prompt: 'files',
      workspaceId: ws,
      options: { command: ['/usr/local/bin/node', '-e', "require('fs').writeFileSync('made.txt', 'on the worker')"] },
    });
    expect((await collect(client, s.id)).at(-1)?.data).toMatchObject({ status: 'succeeded' });
    // the API node keeps no files: the holder measures them
    expect((await client.workspaces.list.query({})).items.find((w) => w.id === ws)).toMatchObject({
      holder: worker.settings.owner,
      sizeBytes: 'on the worker'.length,
      files: 1,
    });

    const got = await http(api.url, `/workspaces/${ws}/files/made.txt`, { headers: { range: 'bytes=3-' } });
    expect(got.status).toBe(206);
    expect(await got.text()).toBe('the worker');
    const put = await http(api.url, `/workspaces/${ws}/files/from-api.txt`, { method: 'PUT', body: 'through the API node' });
    expect(put.status).toBe(201);
    expect(await (await http(worker.url, `/workspaces/${ws}/files/from-api.txt`)).text()).toBe('through the API node');
    const archive = await http(api.url, `/workspaces/${ws}/archive.tar.gz`);
    expect(archive.status).toBe(200);
    expect(archive.headers.get('content-type')).toBe('application/gzip');
    await archive.body?.cancel();
    // the worker checks the token again: a bad one is refused on the API node before any forwarding
    expect((await fetch(`${api.url}/workspaces/${ws}/files/made.txt`)).status).toBe(401);

    // tRPC file calls on the API node are answered by the worker, as the same caller
    const names = (await client.workspaces.files.query({ workspaceId: ws })).entries.map((e) => e.name);
    expect(names).toEqual(['from-api.txt', 'made.txt']);
    expect(await client.workspaces.read.query({ workspaceId: ws, path: 'made.txt' })).toMatchObject({ content: 'on the worker' });
    // its refusals come back with their code
    const missing = await client.workspaces.read.query({ workspaceId: ws, path: 'nope.txt' }).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(TRPCClientError);
    expect((missing as TRPCClientError<never>).data).toMatchObject({ code: 'NOT_FOUND' });
    expect(await client.workspaces.delete.mutate({ workspaceId: ws, path: 'from-api.txt' })).toMatchObject({ type: 'file' });
    expect((await http(worker.url, `/workspaces/${ws}/files/from-api.txt`)).status).toBe(404);
    // another tenant's token is checked again on the worker: the same NOT_FOUND as anywhere
    const stranger = createMgxClient({ url: api.url, token: OTHER });
    const hidden = await stranger.workspaces.files.query({ workspaceId: ws }).catch((e: unknown) => e);
    expect((hidden as TRPCClientError<never>).data).toMatchObject({ code: 'NOT_FOUND' });

    // a new workspace has no holder yet: its first write, sent to the API node, lands on a worker
    const fresh = `ws-new-${randomBytes(3).toString('hex')}`;
    expect((await http(api.url, `/workspaces/${fresh}/files/a.txt`, { method: 'PUT', body: 'seeded via the API node' })).status).toBe(201);
    expect((await client.workspaces.list.query({})).items.find((w) => w.id === fresh)).toMatchObject({
      holder: worker.settings.owner,
      files: 1,
    });
    const seeded = await client.sessions.create.mutate({
      framework: 'exec',
      prompt: 'read the seed',
      workspaceId: fresh,
      options: { command: ['/usr/local/bin/node', '-e', "console.log(require('fs').readFileSync('a.txt', 'utf8'))"] },
    });
    const events = await collect(client, seeded.id);
    expect(events.some((e) => e.type === 'LOG' && e.data.text === 'seeded via the API node')).toBe(true);
    expect(await client.workspaces.remove.mutate({ workspaceId: fresh })).toMatchObject({ removed: true, files: true });
    expect((await client.workspaces.list.query({})).items.map((w) => w.id)).not.toContain(fresh);
  });
});
