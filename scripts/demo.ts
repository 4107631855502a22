// The demo: a real platform (in this process), a real agent session in a real container,
// followed live over the tRPC subscription like a front end would.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { loadSettings } from '@mgx/config';
import { createMgxClient, followSession } from '@mgx/client';
import { startServer } from '@mgx/server';

const dataDir = process.env.MGX_DATA_DIR ?? mkdtempSync(join(tmpdir(), 'mgx-demo-'));
const settings = loadSettings({ MGX_PORT: '0', ...process.env, MGX_DATA_DIR: dataDir });
const t0 = performance.now();
const server = await startServer(settings, { logger: pino({ level: 'warn' }) });
// all-in-one: the server runs sessions, so it started only with an engine
const { runtime } = server;
if (!runtime) throw new Error('the demo server has no container engine');
console.log(`mgx server up at ${server.url} (engine ${(await runtime.info()).engine}, store ${server.store.describe()})`);

const client = createMgxClient({ url: server.url });
const prompt = JSON.stringify({
  steps: [
    { say: 'Hello! I am a scripted agent running in an isolated container.' },
    { write: { path: 'index.html', content: '<!doctype html><h1>Hello from mgx</h1>\n' } },
    { sleep: 300 },
    { say: 'I wrote index.html into my workspace and I am done.' },
  ],
});
const session = await client.sessions.create.mutate({
  framework: 'script',
  prompt,
  workspaceId: 'demo',
  memory: '256m',
  timeoutSeconds: 60,
});
console.log(`session ${session.id} queued; following its events:\n`);

const created = Date.now();
let startAt: number | undefined;
let count = 0;
let finish: Record<string, unknown> | undefined;
for await (const ev of followSession(client, session.id)) {
  count++;
  if (ev.type === 'START') startAt = ev.ts;
  const at = `+${String(ev.ts - created).padStart(5)} ms`;
  const d = ev.data;
  let detail = JSON.stringify(d);
  if (ev.type === 'MESSAGE') detail = d.done ? `assistant: ${String(d.text)}` : `delta ${JSON.stringify(d.delta)}`;
  if (ev.type === 'FILE_CHANGED') detail = `${String(d.path)} (${String(d.bytes)} bytes)`;
  if (ev.type === 'FINISH') finish = d;
  console.log(`${at}  #${String(ev.seq).padStart(2)} ${ev.type.padEnd(17)} ${detail.length > 110 ? `${detail.slice(0, 110)}…` : detail}`);
}

const final = await client.sessions.get.query({ sessionId: session.id });
const files = readdirSync(join(dataDir, 'workspaces', 'demo'));
console.log(`
summary
  session          ${final.id}
  status           ${final.status} (${final.reason})
  events           ${count}, FINISH last
  create → START   ${startAt ? `${startAt - created} ms` : 'n/a'}
  duration         ${final.endedAt && final.createdAt ? `${final.endedAt - final.createdAt} ms` : 'n/a'}
  workspace files  ${files.join(', ')}
  containers left  ${(await runtime.list({ 'mgx.session-id': final.id })).length}
  total            ${Math.round(performance.now() - t0)} ms`);

await server.close({ drain: true });
if (!process.env.MGX_DATA_DIR) rmSync(dataDir, { recursive: true, force: true });
process.exit(finish?.status === 'succeeded' ? 0 : 1);
