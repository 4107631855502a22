import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, existsSync, linkSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { gunzipSync, gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMgxClient, type MgxClient } from '@mgx/client';
import { startPlatform, type Platform } from '../support/platform.js';
import { untar } from '../support/archive.js';
import { codeOf, collect, within } from '../support/sessions.js';
import { measured, writeReport } from '../support/reliability.js';

// The files API against a workspace an agent in a real container booby-trapped: symlinks out
// of it, hard links, special files, and traversal in every path and id. Nothing outside the
// workspace may be read, listed, archived or written, and nothing may hang.

const NODE = '/usr/local/bin/node';
const ACME = `acme-${randomBytes(12).toString('hex')}`;
const GLOBEX = `globex-${randomBytes(12).toString('hex')}`;
const MARKER = `host-secret-${randomBytes(8).toString('hex')}`;

let p: Platform;
let acme: MgxClient;
let globex: MgxClient;
let outside: string;
let root: string;
const ws = `ws-trap-${randomBytes(4).toString('hex')}`;
const victim = `ws-victim-${randomBytes(4).toString('hex')}`;
const PASSWD = readFileSync('/etc/passwd', 'utf8');

beforeAll(async () => {
  p = await startPlatform({ MGX_API_TOKENS: `acme:${ACME},globex:${GLOBEX}` });
  root = p.server.settings.store.workspaceRoot;
  acme = createMgxClient({ url: p.server.url, token: ACME });
  globex = createMgxClient({ url: p.server.url, token: GLOBEX });
  // a host directory outside every workspace, and another tenant's workspace with a secret
  outside = mkdtempSync(join(tmpdir(), 'mgx-outside-'));
  writeFileSync(join(outside, 'secret.txt'), MARKER);
  const put = await fetch(`${p.server.url}/workspaces/${victim}/files/secret.txt`, {
    method: 'PUT',
    body: MARKER,
    headers: { authorization: `Bearer ${GLOBEX}` },
  });
  expect(put.status).toBe(201);

  // the agent lays its traps with the host paths it can guess
  const traps = [
    "const fs = require('fs'), net = require('net')",
    "fs.writeFileSync('ok.txt', 'fine')",
    "fs.symlinkSync('/etc/passwd', 'passwd')",
    "fs.symlinkSync('/etc', 'etc')",
    `fs.symlinkSync(${JSON.stringify(outside)}, 'outside')`,
    `fs.symlinkSync(${JSON.stringify(join(outside, 'secret.txt'))}, 'secret')`,
    `fs.symlinkSync(${JSON.stringify(join(root, victim))}, 'victim')`,
    "fs.symlinkSync('..', 'up')",
    "fs.mkdirSync('dir')",
    "fs.symlinkSync('../..', 'dir/upup')",
    "fs.writeFileSync('dir/file.txt', 'in dir')",
    "fs.linkSync('ok.txt', 'hard.txt')",
    // a hard link to a file outside the workspace crosses its mount: the kernel refuses it
    "let hardOut; try { fs.linkSync('/usr/local/bin/node', 'node-hard'); hardOut = 'linked'; } catch (e) { hardOut = e.code }",
    "const srv = net.createServer().listen('agent.sock', () => { console.log(JSON.stringify({ hardOut })); process.exit(0); })",
  ].join(';');
  const s = await acme.sessions.create.mutate({
    framework: 'exec',
    prompt: 'traps',
    workspaceId: ws,
    options: { command: [NODE, '-e', traps] },
  });
  const events = await collect(acme, s.id);
  expect(events.at(-1)?.data).toMatchObject({ status: 'succeeded' });
  const report = events.find((e) => e.type === 'LOG' && String(e.data.text).startsWith('{"hardOut"'));
  expect(JSON.parse(String(report?.data.text)).hardOut).not.toBe('linked');
  // Node in the image has no mkfifo; an agent image with one could: made here as the agent's user
  execFileSync('mkfifo', [join(root, ws, 'pipe')]);
  chownSync(join(root, ws, 'pipe'), 10001, 10001);
  // on a shared filesystem a file could be hard-linked in from outside: simulated from the host
  linkSync(join(outside, 'secret.txt'), join(root, ws, 'host-hard'));
});
afterAll(async () => {
  await p?.close();
  if (outside) rmSync(outside, { recursive: true, force: true });
  writeReport();
});

const http = (path: string, init: RequestInit & { token?: string } = {}) => {
  const { token = ACME, ...rest } = init;
  return fetch(`${p.server.url}${path}`, { ...rest, headers: { authorization: `Bearer ${token}`, ...(rest.headers ?? {}) } });
};

/** A request with its path sent byte for byte (fetch would resolve `..` before sending). */
const raw = (method: string, path: string, body?: Buffer | string) =>
  new Promise<{ status: number; body: string }>((resolve, reject) => {
    const url = new URL(p.server.url);
    const req = request({ host: url.hostname, port: url.port, method, path, headers: { authorization: `Bearer ${ACME}` } }, (res) => {
      void buffer(res).then((b) => resolve({ status: res.statusCode ?? 0, body: b.toString() }));
    });
    req.on('error', reject);
    req.end(body);
  });

const targz = async (entries: Array<tar.Headers & { body?: string }>) => {
  const pack = tar.pack();
  for (const { body, ...h } of entries) pack.entry(h, body ?? '');
  pack.finalize();
  return gzipSync(await buffer(pack));
};

describe('traversal in every path and id', () => {
  const PATHS = [
    '..',
    '../x',
    `../${victim}/secret.txt`,
    'dir/../../x',
    '%2e%2e',
    '%2e%2e%2f%2e%2e%2fetc%2fpasswd',
    `..%2f${victim}%2fsecret.txt`,
    'ok.txt%00.png',
    '%00',
    'dir%5c..%5cok.txt',
    '/etc/passwd',
    '%2fetc%2fpasswd',
    './ok.txt',
    'dir//file.txt',
  ];
  const IDS = ['..', '%2e%2e', `..%2f${victim}`, '.', 'a%2fb', '%00', `${ws}%00`, 'x'.repeat(65), '%2fetc'];

  it('refuses them with 400 over HTTP on every route, sent byte for byte', async () => {
    await measured(
      { area: 'security/files', fault: `path traversal in file paths, HTTP (${PATHS.length} paths × 4 routes)` },
      async (row) => {
        const wrong: string[] = [];
        for (const path of PATHS) {
          for (const [method, url] of [
            ['GET', `/workspaces/${ws}/files/${path}`],
            ['PUT', `/workspaces/${ws}/files/${path}`],
            ['DELETE', `/workspaces/${ws}/files/${path}`],
            ['GET', `/workspaces/${ws}/archive.tar.gz?path=${path}`],
          ] as const) {
            row.tries++;
            const res = await raw(method, url, method === 'PUT' ? 'pwned' : undefined);
            if (res.status !== 400 || res.body.includes(MARKER) || res.body.includes('root:x:0')) {
              row.leaks++;
              wrong.push(`${method} ${url} → ${res.status}`);
            }
          }
        }
        row.note = `${row.tries - row.leaks}/${row.tries} refused with 400`;
        expect(wrong).toEqual([]);
      },
    );
    await measured(
      { area: 'security/files', fault: `path traversal in workspace ids, HTTP (${IDS.length} ids × 4 routes)` },
      async (row) => {
        const wrong: string[] = [];
        for (const id of IDS) {
          for (const [method, url] of [
            ['GET', `/workspaces/${id}/files/secret.txt`],
            ['PUT', `/workspaces/${id}/files/x`],
            ['GET', `/workspaces/${id}/archive.tar.gz`],
            ['DELETE', `/workspaces/${id}`],
          ] as const) {
            row.tries++;
            const res = await raw(method, url, method === 'PUT' ? 'pwned' : undefined);
            // ids that are not ids: 400; the route matches no id pattern at all: 404
            if (![400, 404].includes(res.status) || res.body.includes(MARKER)) {
              row.leaks++;
              wrong.push(`${method} ${url} → ${res.status}`);
            }
          }
        }
        row.note = `${row.tries - row.leaks}/${row.tries} refused`;
        expect(wrong).toEqual([]);
      },
    );
    // nothing was written anywhere by the attempts
    expect(existsSync(join(root, 'x'))).toBe(false);
    expect(readFileSync(join(root, victim, 'secret.txt'), 'utf8')).toBe(MARKER);
  });

  it('refuses them with BAD_REQUEST over tRPC', async () => {
    const decoded = [
      '..',
      '../x',
      `../${victim}/secret.txt`,
      'dir/../../x',
      '/etc/passwd',
      'ok.txt\u0000',
      'dir\\..\\ok.txt',
      'a//b',
      './ok.txt',
    ];
    await measured(
      { area: 'security/files', fault: `path traversal in file paths and ids, tRPC (${decoded.length} paths, ${IDS.length} ids)` },
      async (row) => {
        const wrong: string[] = [];
        const check = async (label: string, call: () => Promise<unknown>) => {
          row.tries++;
          const got = await within(codeOf(call()), 15_000, label);
          if (got !== 'BAD_REQUEST') {
            row.leaks++;
            wrong.push(`${label} → ${got}`);
          }
        };
        for (const path of decoded) {
          await check(`files ${path}`, () => acme.workspaces.files.query({ workspaceId: ws, path }));
          await check(`read ${path}`, () => acme.workspaces.read.query({ workspaceId: ws, path }));
          await check(`delete ${path}`, () => acme.workspaces.delete.mutate({ workspaceId: ws, path }));
          await check(`cursor ${path}`, () => acme.workspaces.files.query({ workspaceId: ws, cursor: path }));
        }
        for (const id of ['..', '../x', '.', 'a/b', '\u0000', 'x'.repeat(65), '/etc']) {
          await check(`files id ${id.slice(0, 10)}`, () => acme.workspaces.files.query({ workspaceId: id }));
          await check(`remove id ${id.slice(0, 10)}`, () => acme.workspaces.remove.mutate({ workspaceId: id }));
        }
        row.note = `${row.tries - row.leaks}/${row.tries} refused with BAD_REQUEST`;
        expect(wrong).toEqual([]);
      },
    );
  });
});

describe('what the agent left in its workspace', () => {
  it('lists links as links and special files as other, never following them', async () => {
    const { entries } = await acme.workspaces.files.query({ workspaceId: ws, recursive: true, limit: 1000 });
    const byPath = new Map(entries.map((e) => [e.path, e]));
    expect(byPath.get('passwd')).toMatchObject({ type: 'symlink', target: '/etc/passwd' });
    expect(byPath.get('victim')).toMatchObject({ type: 'symlink', target: join(root, victim) });
    expect(byPath.get('pipe')).toMatchObject({ type: 'other' });
    expect(byPath.get('agent.sock')).toMatchObject({ type: 'other' });
    expect(byPath.get('hard.txt')).toMatchObject({ type: 'file', links: 2 });
    // the recursive walk does not enter a linked directory
    expect([...byPath.keys()].filter((k) => /^(etc|outside|victim|up|dir\/upup)\//.test(k))).toEqual([]);
    for (const path of ['etc', 'outside', 'victim', 'up', 'dir/upup']) {
      expect(await codeOf(acme.workspaces.files.query({ workspaceId: ws, path })), path).toBe('FORBIDDEN');
    }
  });

  it('serves nothing through a symlink, a FIFO, a socket or a hard link, and does not hang on the FIFO', async () => {
    await measured(
      { area: 'security/files', fault: 'reads through symlinks, FIFOs, sockets and hard links the agent left' },
      async (row) => {
        const targets = [
          'passwd',
          'etc/passwd',
          'secret',
          'outside/secret.txt',
          'victim/secret.txt',
          `up/${victim}/secret.txt`,
          'dir/upup/etc/passwd',
          'pipe',
          'agent.sock',
          'hard.txt',
          'host-hard',
        ];
        const wrong: string[] = [];
        for (const path of targets) {
          row.tries += 3;
          const res = await within(http(`/workspaces/${ws}/files/${path}`), 15_000, `GET ${path}`);
          const body = await res.text();
          if (res.status !== 403 || body.includes(MARKER) || body.includes('root:x:0')) wrong.push(`GET ${path} → ${res.status}`);
          const rpc = await within(codeOf(acme.workspaces.read.query({ workspaceId: ws, path })), 15_000, `read ${path}`);
          if (rpc !== 'FORBIDDEN') wrong.push(`read ${path} → ${rpc}`);
          const arch = await within(http(`/workspaces/${ws}/archive.tar.gz?path=${path}`), 15_000, `archive ${path}`);
          await arch.body?.cancel();
          // a file, link or special file is not a directory to archive
          if (![400, 403].includes(arch.status)) wrong.push(`archive ${path} → ${arch.status}`);
        }
        row.leaks = wrong.length;
        row.note = `${row.tries - row.leaks}/${row.tries} refused`;
        expect(wrong).toEqual([]);
      },
    );
  });

  it('archives links as links, leaves special and hard-linked files out, and holds nothing from outside', async () => {
    const res = await http(`/workspaces/${ws}/archive.tar.gz`);
    expect(res.status).toBe(200);
    const gz = Buffer.from(await res.arrayBuffer());
    const entries = await untar(gz);
    expect(entries.get('passwd')).toMatchObject({ type: 'symlink', linkname: '/etc/passwd' });
    expect(entries.get('victim')).toMatchObject({ type: 'symlink' });
    expect(entries.get('dir/file.txt')).toMatchObject({ type: 'file' });
    expect(entries.get('dir/file.txt')?.body.toString()).toBe('in dir');
    // both names of a hard-linked file are left out (ok.txt is hard.txt)
    for (const left of ['pipe', 'agent.sock', 'hard.txt', 'ok.txt', 'host-hard']) expect(entries.has(left), left).toBe(false);
    expect([...entries.keys()].filter((k) => k.includes('/') && !k.startsWith('dir/'))).toEqual([]);
    const all = gunzipSync(gz).toString('latin1');
    expect(all).not.toContain(MARKER);
    expect(all).not.toContain('root:x:0');
  });

  it('writes nothing through a link, and deleting a link deletes the link', async () => {
    const wrong: string[] = [];
    for (const path of ['etc/mgx-evil', 'outside/evil.txt', 'victim/secret.txt', 'up/evil.txt', 'dir/upup/evil.txt']) {
      const res = await http(`/workspaces/${ws}/files/${path}`, { method: 'PUT', body: 'pwned' });
      if (res.status !== 403) wrong.push(`PUT ${path} → ${res.status}`);
      await res.body?.cancel();
    }
    for (const path of ['etc/hosts', 'victim/secret.txt', 'outside/secret.txt']) {
      const res = await http(`/workspaces/${ws}/files/${path}`, { method: 'DELETE' });
      if (res.status !== 403) wrong.push(`DELETE ${path} → ${res.status}`);
      await res.body?.cancel();
    }
    const tarThroughLink = await http(`/workspaces/${ws}/archive.tar.gz?path=outside`, {
      method: 'PUT',
      body: await targz([{ name: 'evil.txt', body: 'pwned' }]),
    });
    if (tarThroughLink.status !== 403) wrong.push(`upload under outside → ${tarThroughLink.status}`);
    const tarEntryThroughLink = await http(`/workspaces/${ws}/archive.tar.gz`, {
      method: 'PUT',
      body: await targz([{ name: 'victim/secret.txt', body: 'pwned' }]),
    });
    if (tarEntryThroughLink.status !== 403) wrong.push(`upload entry victim/secret.txt → ${tarEntryThroughLink.status}`);
    const tarTraversal = await http(`/workspaces/${ws}/archive.tar.gz`, {
      method: 'PUT',
      body: await targz([{ name: '../escaped.txt', body: 'pwned' }]),
    });
    if (tarTraversal.status !== 400) wrong.push(`upload entry ../escaped.txt → ${tarTraversal.status}`);
    expect(wrong).toEqual([]);
    expect(existsSync('/etc/mgx-evil')).toBe(false);
    expect(existsSync(join(outside, 'evil.txt'))).toBe(false);
    expect(existsSync(join(root, 'escaped.txt'))).toBe(false);
    expect(existsSync(join(root, 'evil.txt'))).toBe(false);
    expect(readFileSync(join(root, victim, 'secret.txt'), 'utf8')).toBe(MARKER);

    // a PUT on a link's own name replaces the link; what it pointed to is untouched
    expect((await http(`/workspaces/${ws}/files/passwd`, { method: 'PUT', body: 'mine' })).status).toBe(201);
    expect(readFileSync('/etc/passwd', 'utf8')).toBe(PASSWD);
    expect((await http(`/workspaces/${ws}/files/host-hard`, { method: 'PUT', body: 'mine' })).status).toBe(201);
    expect(readFileSync(join(outside, 'secret.txt'), 'utf8')).toBe(MARKER);
    expect((await http(`/workspaces/${ws}/files/outside`, { method: 'DELETE' })).status).toBe(200);
    expect(readFileSync(join(outside, 'secret.txt'), 'utf8')).toBe(MARKER);
    // a recursive delete of a directory holding a link to `..` stays inside
    expect(await acme.workspaces.delete.mutate({ workspaceId: ws, path: 'dir', recursive: true })).toMatchObject({ type: 'directory' });
    expect(readFileSync(join(root, ws, 'ok.txt'), 'utf8')).toBe('fine');
    // deleting the workspace removes its links, not their targets
    expect((await http(`/workspaces/${ws}`, { method: 'DELETE' })).status).toBe(200);
    expect(existsSync(join(root, ws))).toBe(false);
    expect(readFileSync('/etc/passwd', 'utf8')).toBe(PASSWD);
    expect(readFileSync(join(root, victim, 'secret.txt'), 'utf8')).toBe(MARKER);
    expect(readFileSync(join(outside, 'secret.txt'), 'utf8')).toBe(MARKER);
  });
});

describe("another tenant's workspace", () => {
  it('is NOT_FOUND on every route, for reads, writes and sessions alike', async () => {
    await measured(
      { area: 'security/files', fault: "another tenant's workspace: files, read, archive, writes, delete, session create" },
      async (row) => {
        const wrong: string[] = [];
        for (const [method, path] of [
          ['GET', `/workspaces/${victim}/files/secret.txt`],
          ['HEAD', `/workspaces/${victim}/files/secret.txt`],
          ['GET', `/workspaces/${victim}/archive.tar.gz`],
          ['PUT', `/workspaces/${victim}/files/secret.txt`],
          ['PUT', `/workspaces/${victim}/archive.tar.gz`],
          ['DELETE', `/workspaces/${victim}/files/secret.txt`],
          ['DELETE', `/workspaces/${victim}`],
        ] as const) {
          row.tries++;
          const res = await http(path, { method, ...(method === 'PUT' ? { body: 'pwned' } : {}) });
          const body = method === 'HEAD' ? '' : await res.text();
          if (res.status !== 404 || body.includes(MARKER)) wrong.push(`${method} ${path} → ${res.status}`);
        }
        for (const [label, call] of [
          ['files', () => acme.workspaces.files.query({ workspaceId: victim })],
          ['read', () => acme.workspaces.read.query({ workspaceId: victim, path: 'secret.txt' })],
          ['delete', () => acme.workspaces.delete.mutate({ workspaceId: victim, path: 'secret.txt' })],
          ['remove', () => acme.workspaces.remove.mutate({ workspaceId: victim })],
          [
            'session',
            () =>
              acme.sessions.create.mutate({ framework: 'exec', prompt: 'x', workspaceId: victim, options: { command: [NODE, '-e', '1'] } }),
          ],
        ] as const) {
          row.tries++;
          const got = await codeOf(call());
          if (got !== 'NOT_FOUND') wrong.push(`${label} → ${got}`);
        }
        row.leaks = wrong.length;
        row.note = `${row.tries - row.leaks}/${row.tries} NOT_FOUND`;
        expect(wrong).toEqual([]);
      },
    );
    expect((await acme.workspaces.list.query({})).items.map((w) => w.id)).not.toContain(victim);
    expect(readFileSync(join(root, victim, 'secret.txt'), 'utf8')).toBe(MARKER);
    expect(await globex.workspaces.read.query({ workspaceId: victim, path: 'secret.txt' })).toMatchObject({ content: MARKER });
  });
});
