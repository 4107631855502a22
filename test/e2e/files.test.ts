import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { buffer } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TRPCClientError } from '@trpc/client';
import { createMgxClient, followSession, type MgxClient } from '@mgx/client';
import { startPlatform, type Platform } from '../support/platform.js';
import { untar } from '../support/archive.js';
import { collect } from '../support/sessions.js';

// Workspace files over real HTTP and the real tRPC client, with files the agent made in a real container.
const NODE = '/usr/local/bin/node';
const ACME = `acme-${randomBytes(12).toString('hex')}`;
const GLOBEX = `globex-${randomBytes(12).toString('hex')}`;

let p: Platform;
let acme: MgxClient;
let globex: MgxClient;
beforeAll(async () => {
  p = await startPlatform({
    MGX_API_TOKENS: `acme:${ACME},globex:${GLOBEX}`,
    MGX_MAX_FILE_BYTES: '256k',
    MGX_WORKSPACE_QUOTA_BYTES: '1m',
    MGX_MAX_READ_BYTES: '64k',
  });
  acme = createMgxClient({ url: p.server.url, token: ACME });
  globex = createMgxClient({ url: p.server.url, token: GLOBEX });
});
afterAll(async () => {
  await p?.close();
});

const http = (path: string, init: RequestInit & { token?: string } = {}) => {
  const { token = ACME, ...rest } = init;
  return fetch(`${p.server.url}${path}`, { ...rest, headers: { authorization: `Bearer ${token}`, ...(rest.headers ?? {}) } });
};

const codeOf = async (call: Promise<unknown>): Promise<string> => {
  try {
    await call;
  } catch (err) {
    if (err instanceof TRPCClientError) return (err.data as { code: string }).code;
    throw err;
  }
  throw new Error('expected the call to fail');
};

/** Runs a node one-liner in a container on `workspaceId` and waits for its FINISH. */
async function agent(client: MgxClient, workspaceId: string, script: string) {
  const s = await client.sessions.create.mutate({
    framework: 'exec',
    prompt: 'files',
    workspaceId,
    options: { command: [NODE, '-e', script] },
  });
  const events = await collect(client, s.id);
  return { id: s.id, finish: events.at(-1)?.data, events };
}

const BINARY = Buffer.from(Array.from({ length: 300 }, (_, i) => i % 256));

describe('workspace files, made by an agent in a real container', () => {
  const ws = `ws-files-${randomBytes(4).toString('hex')}`;
  beforeAll(async () => {
    const script = [
      "const fs = require('fs')",
      "fs.mkdirSync('src/components', { recursive: true })",
      "fs.writeFileSync('index.html', '<h1>built by the agent</h1>')",
      "fs.writeFileSync('src/app.js', 'console.log(42)\\n')",
      "fs.writeFileSync('src/components/b.css', 'b{}')",
      "fs.writeFileSync('src/components/a.css', 'a{}')",
      `fs.writeFileSync('data.bin', Buffer.from(${JSON.stringify([...BINARY])}))`,
      "fs.writeFileSync('big.txt', 'x'.repeat(100000))",
    ].join(';');
    const { finish } = await agent(acme, ws, script);
    expect(finish).toMatchObject({ status: 'succeeded' });
  });

  it('lists the workspace with its size, file count and last session', async () => {
    const { items } = await acme.workspaces.list.query({});
    const mine = items.find((w) => w.id === ws);
    expect(mine).toMatchObject({ holder: p.server.settings.owner, files: 6, lastSession: { status: 'succeeded' } });
    expect(mine?.sizeBytes).toBe(27 + 16 + 3 + 3 + 300 + 100000);
    expect((await globex.workspaces.list.query({})).items.map((w) => w.id)).not.toContain(ws);
  });

  it('lists entries with type, size and mtime, a directory or the whole tree, paged', async () => {
    const top = await acme.workspaces.files.query({ workspaceId: ws });
    expect(top.entries.map((e) => [e.name, e.type])).toEqual([
      ['big.txt', 'file'],
      ['data.bin', 'file'],
      ['index.html', 'file'],
      ['src', 'directory'],
    ]);
    expect(top.entries[2]).toMatchObject({ path: 'index.html', size: 27 });
    expect(top.entries[2]!.mtime).toBeGreaterThan(Date.now() - 3600_000);
    const paths: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await acme.workspaces.files.query({ workspaceId: ws, recursive: true, limit: 3, ...(cursor ? { cursor } : {}) });
      expect(page.entries.length).toBeLessThanOrEqual(3);
      paths.push(...page.entries.map((e) => e.path));
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
    expect(paths).toEqual([
      'big.txt',
      'data.bin',
      'index.html',
      'src',
      'src/app.js',
      'src/components',
      'src/components/a.css',
      'src/components/b.css',
    ]);
    expect((await acme.workspaces.files.query({ workspaceId: ws, path: 'src/components' })).entries.map((e) => e.name)).toEqual([
      'a.css',
      'b.css',
    ]);
  });

  it('reads text, binary as base64, and bounds what one read returns', async () => {
    expect(await acme.workspaces.read.query({ workspaceId: ws, path: 'src/app.js' })).toMatchObject({
      encoding: 'utf8',
      content: 'console.log(42)\n',
      remaining: 0,
    });
    const bin = await acme.workspaces.read.query({ workspaceId: ws, path: 'data.bin' });
    expect(bin.encoding).toBe('base64');
    expect(Buffer.from(bin.content, 'base64')).toEqual(BINARY);
    const big = await acme.workspaces.read.query({ workspaceId: ws, path: 'big.txt' });
    expect(big).toMatchObject({ length: 64 * 1024, remaining: 100000 - 64 * 1024 });
    expect(await acme.workspaces.read.query({ workspaceId: ws, path: 'big.txt', offset: 99990, length: 100 })).toMatchObject({
      content: 'x'.repeat(10),
    });
    expect(await codeOf(acme.workspaces.read.query({ workspaceId: ws, path: 'nope.txt' }))).toBe('NOT_FOUND');
    expect(await codeOf(acme.workspaces.read.query({ workspaceId: ws, path: 'src' }))).toBe('BAD_REQUEST');
  });

  it('serves a raw file with its content type and length, and byte ranges', async () => {
    const page = await http(`/workspaces/${ws}/files/index.html`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(page.headers.get('content-length')).toBe('27');
    expect(page.headers.get('accept-ranges')).toBe('bytes');
    // the agent's HTML must not run with the API's origin
    expect(page.headers.get('content-security-policy')).toContain('sandbox');
    expect(page.headers.get('x-content-type-options')).toBe('nosniff');
    expect(await page.text()).toBe('<h1>built by the agent</h1>');

    const bin = await http(`/workspaces/${ws}/files/data.bin`);
    expect(bin.headers.get('content-type')).toBe('application/octet-stream');
    expect(Buffer.from(await bin.arrayBuffer())).toEqual(BINARY);

    const part = await http(`/workspaces/${ws}/files/data.bin`, { headers: { range: 'bytes=10-19' } });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe('bytes 10-19/300');
    expect(part.headers.get('content-length')).toBe('10');
    expect(Buffer.from(await part.arrayBuffer())).toEqual(BINARY.subarray(10, 20));
    const tail = await http(`/workspaces/${ws}/files/data.bin`, { headers: { range: 'bytes=-5' } });
    expect(tail.headers.get('content-range')).toBe('bytes 295-299/300');
    expect(Buffer.from(await tail.arrayBuffer())).toEqual(BINARY.subarray(295));
    const open = await http(`/workspaces/${ws}/files/data.bin`, { headers: { range: 'bytes=290-' } });
    expect(Buffer.from(await open.arrayBuffer())).toEqual(BINARY.subarray(290));
    const outside = await http(`/workspaces/${ws}/files/data.bin`, { headers: { range: 'bytes=300-400' } });
    expect(outside.status).toBe(416);
    await outside.body?.cancel();

    const head = await http(`/workspaces/${ws}/files/big.txt`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe('100000');
    expect((await http(`/workspaces/${ws}/files/missing`)).status).toBe(404);
    expect((await http(`/workspaces/${ws}/files/src`)).status).toBe(400);
    expect((await http(`/workspaces/${ws}/files/index.html`, { token: 'wrong-token-wrong-token' })).status).toBe(401);
    expect((await fetch(`${p.server.url}/workspaces/${ws}/files/index.html`)).status).toBe(401);
  });

  it('streams the workspace, or a subtree, as a tar.gz', async () => {
    const res = await http(`/workspaces/${ws}/archive.tar.gz`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/gzip');
    const all = await untar(Buffer.from(await res.arrayBuffer()));
    expect([...all.keys()].sort()).toEqual([
      'big.txt',
      'data.bin',
      'index.html',
      'src/',
      'src/app.js',
      'src/components/',
      'src/components/a.css',
      'src/components/b.css',
    ]);
    expect(all.get('data.bin')?.body).toEqual(BINARY);
    const sub = await untar(Buffer.from(await (await http(`/workspaces/${ws}/archive.tar.gz?path=src/components`)).arrayBuffer()));
    expect([...sub.keys()].sort()).toEqual(['a.css', 'b.css']);
    expect((await http(`/workspaces/${ws}/archive.tar.gz?path=nope`)).status).toBe(404);
  });

  it("is another tenant's NOT_FOUND everywhere, and it cannot run a session on it", async () => {
    expect(await codeOf(globex.workspaces.files.query({ workspaceId: ws }))).toBe('NOT_FOUND');
    expect(await codeOf(globex.workspaces.read.query({ workspaceId: ws, path: 'index.html' }))).toBe('NOT_FOUND');
    expect(await codeOf(globex.workspaces.delete.mutate({ workspaceId: ws, path: 'index.html' }))).toBe('NOT_FOUND');
    expect(await codeOf(globex.workspaces.remove.mutate({ workspaceId: ws }))).toBe('NOT_FOUND');
    expect(
      await codeOf(
        globex.sessions.create.mutate({ framework: 'exec', prompt: 'x', workspaceId: ws, options: { command: [NODE, '-e', '1'] } }),
      ),
    ).toBe('NOT_FOUND');
    for (const [method, path] of [
      ['GET', `/workspaces/${ws}/files/index.html`],
      ['GET', `/workspaces/${ws}/archive.tar.gz`],
      ['PUT', `/workspaces/${ws}/files/index.html`],
      ['DELETE', `/workspaces/${ws}/files/index.html`],
      ['DELETE', `/workspaces/${ws}`],
    ] as const) {
      const res = await http(path, { method, token: GLOBEX, ...(method === 'PUT' ? { body: 'pwned' } : {}) });
      expect(res.status, `${method} ${path}`).toBe(404);
      await res.body?.cancel();
    }
    expect(readFileSync(join(p.server.settings.store.workspaceRoot, ws, 'index.html'), 'utf8')).toBe('<h1>built by the agent</h1>');
  });
});

describe('seeding a workspace before a session, and changing it between sessions', () => {
  it('PUTs a file and a tar.gz into a new workspace, which the next session sees', async () => {
    const ws = `ws-seed-${randomBytes(4).toString('hex')}`;
    const put = await http(`/workspaces/${ws}/files/config/app.json`, { method: 'PUT', body: '{"port":3000}' });
    expect(put.status).toBe(201);
    expect(await put.json()).toMatchObject({ path: 'config/app.json', size: 13 });
    const pack = tar.pack();
    pack.entry({ name: 'site/', type: 'directory' });
    pack.entry({ name: 'site/index.html' }, '<p>seeded</p>');
    pack.entry({ name: 'site/current', type: 'symlink', linkname: 'index.html' });
    pack.finalize();
    const up = await http(`/workspaces/${ws}/archive.tar.gz`, { method: 'PUT', body: gzipSync(await buffer(pack)) });
    expect(up.status).toBe(200);
    expect(await up.json()).toMatchObject({ files: 1, directories: 1, symlinks: 1 });
    // the workspace is acme's from its first write
    expect((await acme.workspaces.list.query({})).items.map((w) => w.id)).toContain(ws);
    expect((await http(`/workspaces/${ws}/files/site/index.html`, { token: GLOBEX })).status).toBe(404);

    const { finish, events } = await agent(
      acme,
      ws,
      "const fs = require('fs'); console.log(fs.readFileSync('config/app.json', 'utf8') + fs.readFileSync('site/current', 'utf8')); fs.writeFileSync('out.txt', 'done')",
    );
    expect(finish).toMatchObject({ status: 'succeeded' });
    expect(events.some((e) => e.type === 'LOG' && e.data.text === '{"port":3000}<p>seeded</p>')).toBe(true);
    expect(await (await http(`/workspaces/${ws}/files/out.txt`)).text()).toBe('done');

    // between sessions: replace, delete a file, then delete the workspace
    expect((await http(`/workspaces/${ws}/files/out.txt`, { method: 'PUT', body: 'again' })).status).toBe(201);
    expect(await (await http(`/workspaces/${ws}/files/out.txt`)).text()).toBe('again');
    expect((await http(`/workspaces/${ws}/files/out.txt`, { method: 'DELETE' })).status).toBe(200);
    expect((await http(`/workspaces/${ws}/files/out.txt`)).status).toBe(404);
    expect((await http(`/workspaces/${ws}/files/site`, { method: 'DELETE' })).status).toBe(409);
    expect(await acme.workspaces.delete.mutate({ workspaceId: ws, path: 'site', recursive: true })).toMatchObject({ type: 'directory' });
    const gone = await http(`/workspaces/${ws}`, { method: 'DELETE' });
    expect(gone.status).toBe(200);
    expect(existsSync(join(p.server.settings.store.workspaceRoot, ws))).toBe(false);
    expect((await acme.workspaces.list.query({})).items.map((w) => w.id)).not.toContain(ws);
  });

  it('refuses a file over MGX_MAX_FILE_BYTES and a write over the workspace quota, leaving nothing behind', async () => {
    const ws = `ws-quota-${randomBytes(4).toString('hex')}`;
    const tooBig = await http(`/workspaces/${ws}/files/big.bin`, { method: 'PUT', body: Buffer.alloc(256 * 1024 + 1) });
    expect(tooBig.status).toBe(413);
    expect(((await tooBig.json()) as { error: { code: string } }).error.code).toBe('FILES_TOO_LARGE');
    for (let i = 0; i < 4; i++) {
      expect((await http(`/workspaces/${ws}/files/part${i}.bin`, { method: 'PUT', body: Buffer.alloc(250 * 1024) })).status).toBe(201);
    }
    // 4 × 250 KiB + 100 KiB > 1 MiB
    const over = await http(`/workspaces/${ws}/files/more.bin`, { method: 'PUT', body: Buffer.alloc(100 * 1024) });
    expect(over.status).toBe(413);
    expect(((await over.json()) as { error: { code: string } }).error.code).toBe('FILES_QUOTA_EXCEEDED');
    const names = (await acme.workspaces.files.query({ workspaceId: ws })).entries.map((e) => e.name);
    expect(names).toEqual(['part0.bin', 'part1.bin', 'part2.bin', 'part3.bin']);
    // a smaller replacement fits: only the difference counts
    expect((await http(`/workspaces/${ws}/files/part0.bin`, { method: 'PUT', body: Buffer.alloc(100 * 1024) })).status).toBe(201);
    expect((await http(`/workspaces/${ws}/files/more.bin`, { method: 'PUT', body: Buffer.alloc(100 * 1024) })).status).toBe(201);
  });

  it('a session created while an upload is still arriving waits for it, then sees all of it; a cut upload changes nothing', async () => {
    const ws = `ws-race-${randomBytes(4).toString('hex')}`;
    const pack = tar.pack();
    pack.entry({ name: 'a.txt' }, 'first half;');
    pack.entry(
      { name: 'filler.bin' },
      randomBytes(300 * 1024)
        .toString('base64')
        .slice(0, 250 * 1024),
    );
    pack.entry({ name: 'b.txt' }, 'second half');
    pack.finalize();
    const gz = gzipSync(await buffer(pack));
    const url = new URL(`/workspaces/${ws}/archive.tar.gz`, p.server.url);
    const send = (body: Buffer, cut: boolean) => {
      const req = httpRequest(url, { method: 'PUT', headers: { authorization: `Bearer ${ACME}`, 'content-length': gz.length } });
      const answer = new Promise<number>((resolve, reject) => {
        req.on('response', (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
      });
      req.write(body.subarray(0, body.length >> 1));
      return { req, answer, rest: () => (cut ? req.destroy() : req.end(body.subarray(body.length >> 1))) };
    };
    // the first half is in; the session is created before the rest arrives
    const upload = send(gz, false);
    await new Promise((r) => setTimeout(r, 300));
    const s = await acme.sessions.create.mutate({
      framework: 'exec',
      prompt: 'read the upload',
      workspaceId: ws,
      options: {
        command: [NODE, '-e', "const fs = require('fs'); console.log(fs.readFileSync('a.txt', 'utf8') + fs.readFileSync('b.txt', 'utf8'))"],
      },
    });
    // however long the upload takes, the session is not claimed before it ends
    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setTimeout(r, 500));
      expect((await acme.sessions.get.query({ sessionId: s.id })).status).toBe('queued');
    }
    upload.rest();
    expect(await upload.answer).toBe(200);
    const events = await collect(acme, s.id);
    expect(events.at(-1)?.data).toMatchObject({ status: 'succeeded' });
    expect(events.some((e) => e.type === 'LOG' && e.data.text === 'first half;second half')).toBe(true);

    // a client that goes away mid-upload: nothing of it lands, and the next session is not held up
    expect((await http(`/workspaces/${ws}/files/a.txt`, { method: 'PUT', body: 'kept' })).status).toBe(201);
    const cut = send(gz, true);
    await new Promise((r) => setTimeout(r, 300));
    cut.rest();
    await cut.answer.catch(() => undefined);
    const after = await agent(acme, ws, "console.log(require('fs').readFileSync('a.txt', 'utf8'))");
    expect(after.finish).toMatchObject({ status: 'succeeded' });
    expect(after.events.some((e) => e.type === 'LOG' && e.data.text === 'kept')).toBe(true);
    const names = (await acme.workspaces.files.query({ workspaceId: ws })).entries.map((e) => e.name);
    expect(names.filter((n) => n.startsWith('.mgx-'))).toEqual([]);
  });

  it('refuses every write with CONFLICT while a session runs on the workspace, and accepts them once it ended', async () => {
    const ws = `ws-busy-${randomBytes(4).toString('hex')}`;
    expect((await http(`/workspaces/${ws}/files/keep.txt`, { method: 'PUT', body: 'before' })).status).toBe(201);
    const command = [
      NODE,
      '-e',
      "console.log('up'); const t = setInterval(() => { if (require('fs').existsSync('go')) { clearInterval(t); } }, 100);",
    ];
    const s = await acme.sessions.create.mutate({ framework: 'exec', prompt: 'wait', workspaceId: ws, options: { command } });
    const events = (async () => {
      let up: () => void = () => undefined;
      const isUp = new Promise<void>((r) => (up = r));
      const done = (async () => {
        for await (const ev of followSession(acme, s.id)) if (ev.type === 'LOG' && ev.data.text === 'up') up();
      })();
      return { isUp, done };
    })();
    const { isUp, done } = await events;
    await isUp;
    for (const [method, path, body] of [
      ['PUT', `/workspaces/${ws}/files/keep.txt`, 'during'],
      ['PUT', `/workspaces/${ws}/archive.tar.gz`, 'x'],
      ['DELETE', `/workspaces/${ws}/files/keep.txt`, undefined],
      ['DELETE', `/workspaces/${ws}`, undefined],
    ] as const) {
      const res = await http(path, { method, ...(body !== undefined ? { body } : {}) });
      expect(res.status, `${method} ${path}`).toBe(409);
      expect(((await res.json()) as { error: { message: string } }).error.message).toContain(s.id);
    }
    expect(await codeOf(acme.workspaces.delete.mutate({ workspaceId: ws, path: 'keep.txt' }))).toBe('CONFLICT');
    expect(await codeOf(acme.workspaces.remove.mutate({ workspaceId: ws }))).toBe('CONFLICT');
    // reads go on while it runs
    expect(await (await http(`/workspaces/${ws}/files/keep.txt`)).text()).toBe('before');
    writeFileSync(join(p.server.settings.store.workspaceRoot, ws, 'go'), '');
    await done;
    // FINISH is stored once the container is torn down: writes are accepted from then on
    expect((await http(`/workspaces/${ws}/files/keep.txt`, { method: 'PUT', body: 'after' })).status).toBe(201);
    expect(await acme.workspaces.remove.mutate({ workspaceId: ws })).toMatchObject({ removed: true });
  });
});
