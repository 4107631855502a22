import { Writable } from 'node:stream';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadSettings } from '@mgx/config';
import { createMgxClient, type MgxClient, type SessionEvent } from '@mgx/client';
import { startServer, type RunningServer } from '@mgx/server';
import { script, codeOf, follow, within } from '../support/sessions.js';
import { measured, writeReport } from '../support/reliability.js';
import { containerOf, docker, ownedLeft } from '../support/engine.js';
import { PROC_SCAN, scanArg, type ScanResult } from '../support/proc-scan.js';

// Sessions and tenants kept apart: by the mounts each container gets, by the API's tenant
// checks, and by secrets that never leave memory and the agent's socket.

const ACME = `acme-${randomBytes(12).toString('hex')}`;
const GLOBEX = `globex-${randomBytes(12).toString('hex')}`;
const SECRET = `sk-iso-${randomBytes(16).toString('hex')}`;
let logs = '';
let server: RunningServer;
let dataDir: string;
let owner: string;
let acme: MgxClient;
let globex: MgxClient;

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'mgx-sec-iso-'));
  owner = `mgx-sec-iso-${randomBytes(4).toString('hex')}`;
  // every line the server logs, at its most verbose, is kept to search for the secret
  const sink = new Writable({ write: (chunk, _e, cb) => ((logs += String(chunk)), cb()) });
  const settings = loadSettings({
    MGX_PORT: '0',
    MGX_DATA_DIR: dataDir,
    MGX_OWNER: owner,
    MGX_API_TOKENS: `acme:${ACME},globex:${GLOBEX}`,
    AGENT_CONTAINER_MEMORY_LIMIT: '256m',
    AGENT_STOP_GRACE_SECONDS: '1',
    AGENT_MONITOR_POLL_SECONDS: '1',
    ...(process.env.CONTAINER_HOST ? { CONTAINER_HOST: process.env.CONTAINER_HOST } : {}),
    ...(process.env.AGENT_CONTAINER_IMAGE ? { AGENT_CONTAINER_IMAGE: process.env.AGENT_CONTAINER_IMAGE } : {}),
  });
  server = await startServer(settings, { logger: pino({ level: 'trace' }, sink) });
  acme = createMgxClient({ url: server.url, token: ACME });
  globex = createMgxClient({ url: server.url, token: GLOBEX });
});
afterAll(async () => {
  await server?.close({ drain: true });
  rmSync(dataDir, { recursive: true, force: true });
  writeReport();
});

const PROBE = (other: string) => `
const fs = require('fs'), net = require('net');
const out = { runMgx: fs.readdirSync('/run/mgx'), otherVisible: fs.existsSync(${JSON.stringify(other)}) };
try { fs.writeFileSync('/run/mgx/x', 'x'); out.writeRunMgx = 'ok'; } catch (e) { out.writeRunMgx = e.code; }
const s = net.connect(${JSON.stringify(other)});
s.on('connect', () => { out.connectOther = 'connected'; s.destroy(); done(); });
s.on('error', (e) => { out.connectOther = e.code; done(); });
function done() { console.log(JSON.stringify(out)); process.exit(0); }`;

describe('one session cannot reach another', () => {
  it("mounts each container's own socket directory read-only at /run/mgx and its own workspace, nothing of the other's", async () => {
    await measured(
      { area: 'security/isolation', fault: "session A's container reaching session B's ingest socket or workspace" },
      async (row) => {
        const a = await acme.sessions.create.mutate({
          framework: 'script',
          prompt: script({ say: 'a' }, { sleep: 4000 }, { say: 'a done' }),
        });
        const b = await globex.sessions.create.mutate({
          framework: 'script',
          prompt: script({ say: 'b' }, { sleep: 4000 }, { say: 'b done' }),
        });
        row.sessions = 2;
        const [ia, ib] = await Promise.all([containerOf(a.id), containerOf(b.id)]);
        const binds = (info: typeof ia) =>
          info.Mounts.filter((m) => m.Type === 'bind').map((m) => ({ src: m.Source, dst: m.Destination, rw: m.RW }));
        const socketDir = (id: string) => join(dataDir, 'run', 'sessions', id);
        const own = (id: string, ws: string) => [
          { src: socketDir(id), dst: '/run/mgx', rw: false },
          { src: join(dataDir, 'workspaces', ws), dst: '/workspace', rw: true },
        ];
        const sort = (x: Array<{ dst: string }>) => [...x].sort((p, q) => p.dst.localeCompare(q.dst));
        expect(sort(binds(ia))).toEqual(own(a.id, a.workspaceId));
        expect(sort(binds(ib))).toEqual(own(b.id, b.workspaceId));
        const leaksBetween =
          binds(ib).filter((m) => m.src.includes(a.id) || m.src.includes(a.workspaceId)).length +
          binds(ia).filter((m) => m.src.includes(b.id) || m.src.includes(b.workspaceId)).length;
        // on the host, the socket belongs to the container's user only
        const sock = statSync(join(socketDir(a.id), 'ingest.sock'));
        const sockOpen = process.getuid?.() === 0 && (sock.mode & 0o077) !== 0 ? 1 : 0;

        // and from inside B: only its own socket, A's host path does not exist there
        const probe = await server.runtime!.exec(ib.Id, ['/usr/local/bin/node', '-e', PROBE(join(socketDir(a.id), 'ingest.sock'))]);
        const seen = JSON.parse(probe.stdout) as { runMgx: string[]; otherVisible: boolean; writeRunMgx: string; connectOther: string };
        row.tries = 4;
        row.leaks =
          leaksBetween +
          sockOpen +
          Number(seen.otherVisible) +
          Number(seen.connectOther === 'connected') +
          Number(seen.writeRunMgx === 'ok');
        row.note = `B sees /run/mgx = [${seen.runMgx.join(', ')}], A's socket ${seen.otherVisible ? 'visible' : 'absent'}, connect → ${seen.connectOther}, write /run/mgx → ${seen.writeRunMgx}; socket mode ${(sock.mode & 0o777).toString(8)} uid ${sock.uid}`;
        // its own sockets only: events, and the tunnel the host dials into it through
        expect(seen.runMgx.sort()).toEqual(['ingest.sock', 'tunnel.sock']);
        expect(seen.otherVisible).toBe(false);
        expect(seen.connectOther).toBe('ENOENT');
        expect(seen.writeRunMgx).toBe('EROFS');
        expect(leaksBetween).toBe(0);
        if (process.getuid?.() === 0) expect({ uid: sock.uid, mode: sock.mode & 0o777 }).toEqual({ uid: 10001, mode: 0o600 });

        const [ea, eb] = await Promise.all([follow(acme, a.id, 30_000), follow(globex, b.id, 30_000)]);
        const texts = (ev: SessionEvent[]) => ev.filter((e) => e.type === 'MESSAGE' && e.data.done).map((e) => e.data.text);
        expect(texts(ea)).toEqual(['a', 'a done']);
        expect(texts(eb)).toEqual(['b', 'b done']);
        row.completed = [ea, eb].filter((ev) => ev.at(-1)?.data.status === 'succeeded').length;
        row.orphans = (await ownedLeft(owner)).length;
        expect(row.completed).toBe(2);
        expect(row.orphans).toBe(0);
      },
    );
  }, 60_000);
});

describe('tenants', () => {
  it("makes another tenant's session NOT_FOUND on every procedure and filters it from lists; a foreign cancel changes nothing", async () => {
    await measured(
      { area: 'security/isolation', fault: "tenant B on tenant A's session: get, events, stream, cancel, list" },
      async (row) => {
        const s = await acme.sessions.create.mutate({ framework: 'script', prompt: script({ sleep: 1500 }, { say: 'acme only' }) });
        row.sessions = 1;
        const attempts: Array<[string, () => Promise<unknown>, string]> = [
          ['get', () => globex.sessions.get.query({ sessionId: s.id }), 'NOT_FOUND'],
          ['events', () => globex.sessions.events.query({ sessionId: s.id }), 'NOT_FOUND'],
          ['events afterSeq', () => globex.sessions.events.query({ sessionId: s.id, afterSeq: 1, limit: 1000 }), 'NOT_FOUND'],
          ['stream', () => follow(globex, s.id, 10_000), 'NOT_FOUND'],
          ['cancel', () => globex.sessions.cancel.mutate({ sessionId: s.id }), 'NOT_FOUND'],
          ['no token: get', () => createMgxClient({ url: server.url }).sessions.get.query({ sessionId: s.id }), 'UNAUTHORIZED'],
          ['no token: list', () => createMgxClient({ url: server.url }).sessions.list.query({}), 'UNAUTHORIZED'],
          [
            'token prefix',
            () => createMgxClient({ url: server.url, token: ACME.slice(0, -1) }).sessions.get.query({ sessionId: s.id }),
            'UNAUTHORIZED',
          ],
          [
            'token with a suffix',
            () => createMgxClient({ url: server.url, token: `${ACME}x` }).sessions.get.query({ sessionId: s.id }),
            'UNAUTHORIZED',
          ],
        ];
        const wrong: string[] = [];
        for (const [label, call, want] of attempts) {
          row.tries++;
          const got = await within(codeOf(call()), 15_000, label);
          if (got !== want) wrong.push(`${label} → ${got}`);
        }
        // lists: by default, by status, and paged to the end
        row.tries += 3;
        const listed = [
          ...(await globex.sessions.list.query({})).items,
          ...(await globex.sessions.list.query({ status: ['queued', 'starting', 'running', 'succeeded'] })).items,
          ...(await globex.sessions.list.query({ limit: 1, cursor: String(Number.MAX_SAFE_INTEGER).slice(0, 15) })).items,
        ].filter((x) => x.id === s.id);
        if (listed.length > 0) wrong.push(`listed ${listed.length} times`);
        row.leaks = wrong.length;
        const events = await follow(acme, s.id, 30_000);
        if (events.at(-1)?.data.status === 'succeeded') row.completed = 1;
        row.note = `${row.tries - wrong.length}/${row.tries} refused or filtered; session ${String(events.at(-1)?.data.status)} despite the foreign cancel`;
        expect(wrong).toEqual([]);
        expect(events.at(-1)?.data).toMatchObject({ status: 'succeeded' });
        expect(events.some((e) => e.type === 'CANCELLED')).toBe(false);
      },
    );
  });
});

describe('secrets', () => {
  it('reach the agent and never the events, logs, metrics, container env or labels, nor the store file', async () => {
    await measured(
      { area: 'security/isolation', fault: 'a secret searched for in events, API, logs, metrics, container config and the store file' },
      async (row) => {
        const s = await acme.sessions.create.mutate({
          framework: 'script',
          prompt: script({ getsecret: 'API_KEY' }, { print: { stream: 'stderr', text: 'stderr line' } }, { sleep: 1500 }),
          secrets: { API_KEY: SECRET },
        });
        row.sessions = 1;
        const info = await containerOf(s.id);
        const inspected = JSON.stringify(await docker.getContainer(info.Id).inspect());
        const events = await follow(acme, s.id, 30_000);
        if (events.at(-1)?.data.status === 'succeeded') row.completed = 1;
        // the agent had it: it said it back, and the platform redacted it
        expect(events.find((e) => e.type === 'MESSAGE' && e.data.done)?.data.text).toBe('API_KEY=[REDACTED]');
        const store = ['mgx.sqlite', 'mgx.sqlite-wal']
          .map((f) => join(dataDir, f))
          .filter((f) => existsSync(f))
          .map((f) => readFileSync(f).toString('latin1'))
          .join('');
        const places: Array<[string, string]> = [
          ['events', JSON.stringify(events)],
          ['sessions.get', JSON.stringify(await acme.sessions.get.query({ sessionId: s.id }))],
          ['sessions.list', JSON.stringify(await acme.sessions.list.query({}))],
          ['metrics', await (await fetch(`${server.url}/metrics`)).text()],
          ['server logs', logs],
          ['container inspect (env, labels, cmd)', inspected],
          ['store file', store],
          ['workspace file names', JSON.stringify(readdirSync(join(dataDir, 'workspaces'), { recursive: true }))],
        ];
        row.tries = places.length;
        const found = places.filter(([, text]) => text.includes(SECRET)).map(([where]) => where);
        row.leaks = found.length;
        row.note = found.length
          ? `found in: ${found.join(', ')}`
          : `absent from ${places.map(([w]) => w).join(', ')} (${logs.length} bytes of logs searched)`;
        expect(inspected).toContain(s.id);
        expect(logs.length).toBeGreaterThan(1000);
        expect(found).toEqual([]);
        expect(row.completed).toBe(1);
      },
    );
  });

  it("reach only what asks for them: a command scanning every process's environment and memory finds no secret it did not name", async () => {
    await measured(
      { area: 'security/isolation', fault: "an exec command reading the runner's memory (/proc/<pid>/mem) for a secret it was not given" },
      async (row) => {
        const wanted = `sk-wanted-${randomBytes(12).toString('hex')}`;
        const unwanted = `sk-unwanted-${randomBytes(12).toString('hex')}`;
        const marker = `marker-${randomBytes(12).toString('hex')}`;
        const s = await acme.sessions.create.mutate({
          framework: 'exec',
          prompt: '',
          // the marker is session env: the runner holds it beside the secrets it was sent
          env: { MARKER: marker },
          secrets: { WANTED: wanted, UNWANTED: unwanted },
          options: {
            command: ['/usr/local/bin/node', '-e', PROC_SCAN, scanArg({ wanted, unwanted, marker })],
            secretEnv: ['WANTED'],
          },
        });
        row.sessions = 1;
        const events = await follow(acme, s.id, 60_000);
        if (events.at(-1)?.data.status === 'succeeded') row.completed = 1;
        const line = events.find((e) => e.type === 'LOG' && e.data.stream === 'stdout' && String(e.data.text).startsWith('{'));
        const scan = JSON.parse(String(line?.data.text)) as ScanResult;
        row.tries = scan.pids.length;
        row.leaks = scan.found.unwanted?.length ?? 0;
        row.note = `${scan.pids.map((x) => `${x.comm}[${x.pid}]`).join(' ')} scanned, ${Math.round(scan.readBytes / 2 ** 20)} MiB of memory read; marker found in ${scan.found.marker?.join(', ')}; unrequested secret found in [${scan.found.unwanted?.join(', ')}]`;
        expect(row.completed).toBe(1);
        // the scan reads the runner's memory: the session env it holds is there
        expect(scan.found.marker?.some((w) => w.endsWith(' mem'))).toBe(true);
        expect(scan.readBytes).toBeGreaterThan(1024 * 1024);
        expect(scan.found.unwanted).toEqual([]);
      },
    );
  }, 90_000);
});
