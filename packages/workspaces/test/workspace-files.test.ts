import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { gunzipSync, gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FilesError, WorkspaceFiles, type FileLimits } from '../src/index.js';

const LIMITS: FileLimits = {
  maxFileBytes: 1024 * 1024,
  maxUploadBytes: 4 * 1024 * 1024,
  maxUploadFiles: 100,
  quotaBytes: 0,
  maxReadBytes: 1024,
};

/** The code of the FilesError `p` rejects with. */
async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof FilesError) return err.code;
    throw err;
  }
  throw new Error('expected a FilesError');
}

/** The entries of a tar.gz as name → type, and file contents. */
async function untar(gz: Buffer): Promise<Map<string, { type: string; body: string; linkname?: string }>> {
  const out = new Map<string, { type: string; body: string; linkname?: string }>();
  const extract = tar.extract();
  extract.on('entry', (header, stream, next) => {
    void buffer(stream).then((body) => {
      out.set(header.name, {
        type: header.type ?? 'file',
        body: body.toString(),
        ...(header.linkname ? { linkname: header.linkname } : {}),
      });
      next();
    });
  });
  await new Promise<void>((resolve, reject) => {
    extract.on('finish', resolve);
    extract.on('error', reject);
    extract.end(gunzipSync(gz));
  });
  return out;
}

/** A tar.gz of the given entries. */
async function targz(entries: Array<tar.Headers & { body?: string }>): Promise<Buffer> {
  const pack = tar.pack();
  for (const { body, ...h } of entries) pack.entry(h, body ?? '');
  pack.finalize();
  return gzipSync(await buffer(pack));
}

describe('WorkspaceFiles', () => {
  let root: string;
  let outside: string;
  let ws: string;
  let files: WorkspaceFiles;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'mgx-files-'));
    outside = mkdtempSync(join(tmpdir(), 'mgx-outside-'));
    writeFileSync(join(outside, 'secret.txt'), 'host secret');
    ws = join(root, 'w1');
    mkdirSync(join(ws, 'src', 'deep'), { recursive: true });
    writeFileSync(join(ws, 'README.md'), '# hello\n');
    writeFileSync(join(ws, 'src', 'app.js'), 'console.log(1)\n');
    writeFileSync(join(ws, 'src', 'deep', 'data.bin'), Buffer.from([0, 1, 2, 255]));
    files = new WorkspaceFiles({ root, user: '10001:10001', limits: LIMITS });
  });
  afterEach(() => {
    rmSync(root, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  });

  it('lists a directory or the whole tree in walk order, paged by cursor', async () => {
    const top = await files.list('w1', '', { limit: 10 });
    expect(top.entries.map((e) => [e.path, e.type])).toEqual([
      ['README.md', 'file'],
      ['src', 'directory'],
    ]);
    const all: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await files.list('w1', '', { recursive: true, limit: 2, ...(cursor ? { cursor } : {}) });
      all.push(...page.entries.map((e) => e.path));
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
    expect(all).toEqual(['README.md', 'src', 'src/app.js', 'src/deep', 'src/deep/data.bin']);
    expect((await files.list('w1', 'src/', { limit: 10 })).entries.map((e) => e.name)).toEqual(['app.js', 'deep']);
  });

  it('reads text as utf8 and bytes as base64, bounded and from an offset', async () => {
    expect(await files.read('w1', 'README.md')).toMatchObject({ encoding: 'utf8', content: '# hello\n', size: 8, remaining: 0 });
    expect(await files.read('w1', 'README.md', 2, 3)).toMatchObject({ content: 'hel', remaining: 3 });
    expect(await files.read('w1', 'src/deep/data.bin')).toMatchObject({ encoding: 'base64', content: 'AAEC/w==' });
    writeFileSync(join(ws, 'big.txt'), 'x'.repeat(5000));
    expect(await files.read('w1', 'big.txt')).toMatchObject({ length: 1024, remaining: 5000 - 1024 });
  });

  it('refuses traversal, absolute paths, NUL and bad ids before touching the disk', async () => {
    for (const p of ['../w2/x', 'src/../../etc/passwd', '/etc/passwd', 'a//b', './README.md', 'README.md\0', 'src\\app.js', '..']) {
      expect(await codeOf(files.read('w1', p)), p).toBe('FILES_INVALID_PATH');
    }
    for (const id of ['..', '.', 'w1/..', '', 'a b', '%2e%2e'])
      expect(await codeOf(files.list(id, '', { limit: 1 })), id).toBe('FILES_INVALID_PATH');
  });

  it('never follows a symlink the agent left, lists it as a link, and archives it as one', async () => {
    symlinkSync(outside, join(ws, 'out'));
    symlinkSync(join(outside, 'secret.txt'), join(ws, 'secret'));
    symlinkSync('/', join(ws, 'src', 'root'));
    const top = await files.list('w1', '', { limit: 10 });
    expect(top.entries.find((e) => e.name === 'secret')).toMatchObject({ type: 'symlink', target: join(outside, 'secret.txt') });
    expect(await codeOf(files.read('w1', 'secret'))).toBe('FILES_REFUSED');
    expect(await codeOf(files.read('w1', 'out/secret.txt'))).toBe('FILES_REFUSED');
    expect(await codeOf(files.list('w1', 'src/root', { limit: 10 }))).toBe('FILES_REFUSED');
    expect(await codeOf(files.list('w1', 'out', { limit: 10 }))).toBe('FILES_REFUSED');
    // recursion does not go through links either
    const all = await files.list('w1', '', { recursive: true, limit: 100 });
    expect(all.entries.map((e) => e.path)).not.toContain('out/secret.txt');
    const archive = await untar(await buffer(await files.archive('w1')));
    expect(archive.get('secret')).toMatchObject({ type: 'symlink', linkname: join(outside, 'secret.txt') });
    expect([...archive.keys()].some((k) => k.includes('secret.txt'))).toBe(false);
    // a write to a link's name replaces the link, never writes through it
    await files.writeFile('w1', 'secret', Readable.from([Buffer.from('mine')]));
    expect(readFileSync(join(outside, 'secret.txt'), 'utf8')).toBe('host secret');
    expect(lstatSync(join(ws, 'secret')).isFile()).toBe(true);
    // a write under a linked directory is refused
    expect(await codeOf(files.writeFile('w1', 'out/new.txt', Readable.from([Buffer.from('x')])))).toBe('FILES_REFUSED');
    expect(() => readFileSync(join(outside, 'new.txt'))).toThrow();
    // deleting a link deletes the link
    await files.remove('w1', 'out');
    expect(readFileSync(join(outside, 'secret.txt'), 'utf8')).toBe('host secret');
    expect(readlinkSync(join(ws, 'src', 'root'))).toBe('/');
  });

  it('never opens a FIFO, and refuses a hardlinked file', async () => {
    execFileSync('mkfifo', [join(ws, 'pipe')]);
    linkSync(join(outside, 'secret.txt'), join(ws, 'hard'));
    const entries = (await files.list('w1', '', { limit: 10 })).entries;
    expect(entries.find((e) => e.name === 'pipe')).toMatchObject({ type: 'other' });
    expect(entries.find((e) => e.name === 'hard')).toMatchObject({ type: 'file', links: 2 });
    // a FIFO opened for reading would block until a writer came: the call returning proves it was not
    expect(await codeOf(files.read('w1', 'pipe'))).toBe('FILES_REFUSED');
    expect(await codeOf(files.read('w1', 'hard'))).toBe('FILES_REFUSED');
    const archive = await untar(await buffer(await files.archive('w1')));
    expect(archive.has('pipe')).toBe(false);
    expect(archive.has('hard')).toBe(false);
    expect(archive.get('README.md')?.body).toBe('# hello\n');
    // overwriting the hardlink replaces the name: the other link keeps its content
    await files.writeFile('w1', 'hard', Readable.from([Buffer.from('new')]));
    expect(readFileSync(join(outside, 'secret.txt'), 'utf8')).toBe('host secret');
  });

  it('archives a subtree with names relative to it', async () => {
    const archive = await untar(await buffer(await files.archive('w1', 'src')));
    expect([...archive.keys()].sort()).toEqual(['app.js', 'deep/', 'deep/data.bin']);
    expect(await codeOf(files.archive('w1', 'nope'))).toBe('FILES_NOT_FOUND');
  });

  it('writes files with their directories into a new workspace, within the file size and the quota', async () => {
    expect(await files.exists('fresh')).toBe(false);
    expect(await files.writeFile('fresh', 'a/b/c.txt', Readable.from([Buffer.from('abc')]))).toEqual({ path: 'a/b/c.txt', size: 3 });
    expect(readFileSync(join(root, 'fresh', 'a', 'b', 'c.txt'), 'utf8')).toBe('abc');
    if (process.getuid?.() === 0) expect(lstatSync(join(root, 'fresh', 'a', 'b', 'c.txt')).uid).toBe(10001);
    const small = new WorkspaceFiles({ root, user: '10001:10001', limits: { ...LIMITS, maxFileBytes: 10, quotaBytes: 20 } });
    expect(await codeOf(small.writeFile('fresh', 'big', Readable.from([Buffer.alloc(11)])))).toBe('FILES_TOO_LARGE');
    await small.writeFile('fresh', 'nine', Readable.from([Buffer.alloc(9)]));
    // 3 + 9 + 9 > 20
    expect(await codeOf(small.writeFile('fresh', 'nine2', Readable.from([Buffer.alloc(9)])))).toBe('FILES_QUOTA_EXCEEDED');
    // replacing a file counts only the difference
    await small.writeFile('fresh', 'nine', Readable.from([Buffer.alloc(8)]));
    expect((await small.list('fresh', '', { limit: 10 })).entries.map((e) => e.name)).toEqual(['a', 'nine']);
    expect(await codeOf(files.writeFile('fresh', 'a', Readable.from([Buffer.from('x')])))).toBe('FILES_WRONG_TYPE');
  });

  it('unpacks a tar.gz upload with its limits, refusing traversal, hard links and special files', async () => {
    const ok = await targz([
      // tar-fs and `tar -C dir .` name the root itself first
      { name: './', type: 'directory' },
      { name: 'site/', type: 'directory' },
      { name: 'site/index.html', body: '<h1>hi</h1>' },
      { name: './site/link', type: 'symlink', linkname: '/etc/passwd' },
    ]);
    expect(await files.upload('w1', 'up', Readable.from([ok]))).toEqual({ files: 1, directories: 2, symlinks: 1, bytes: 11 });
    expect(readFileSync(join(ws, 'up', 'site', 'index.html'), 'utf8')).toBe('<h1>hi</h1>');
    expect(readlinkSync(join(ws, 'up', 'site', 'link'))).toBe('/etc/passwd');
    for (const bad of [
      [{ name: '../escape.txt', body: 'x' }],
      [{ name: '/abs.txt', body: 'x' }],
      [{ name: 'h', type: 'link' as const, linkname: 'README.md' }],
      [{ name: 'fifo', type: 'fifo' as const }],
    ]) {
      expect(await codeOf(files.upload('w1', '', Readable.from([await targz(bad)]))), bad[0]?.name).toBe('FILES_BAD_ARCHIVE');
    }
    expect(() => readFileSync(join(root, 'escape.txt'))).toThrow();
    expect(await codeOf(files.upload('w1', '', Readable.from([Buffer.from('not gzip')])))).toBe('FILES_BAD_ARCHIVE');
    const few = new WorkspaceFiles({ root, user: '10001:10001', limits: { ...LIMITS, maxUploadFiles: 2 } });
    const three = await targz([
      { name: 'a', body: '1' },
      { name: 'b', body: '2' },
      { name: 'c', body: '3' },
    ]);
    expect(await codeOf(few.upload('w1', '', Readable.from([three])))).toBe('FILES_TOO_LARGE');
    const tight = new WorkspaceFiles({ root, user: '10001:10001', limits: { ...LIMITS, maxUploadBytes: 5 } });
    const six = await targz([
      { name: 'a', body: '123' },
      { name: 'b', body: '456' },
    ]);
    expect(await codeOf(tight.upload('w1', '', Readable.from([six])))).toBe('FILES_TOO_LARGE');
  });

  it('applies an upload whole or not at all: a refused or cut archive changes no file and leaves no temporary', async () => {
    await files.writeFile('w1', 'keep.txt', Readable.from([Buffer.from('original')]));
    const leftovers = () => readdirSync(ws, { recursive: true }).filter((n) => String(n).includes('.mgx-'));
    const refusedLate = await targz([
      { name: 'keep.txt', body: 'replaced' },
      { name: 'new/first.txt', body: 'first' },
      { name: 'fifo', type: 'fifo' as const },
    ]);
    expect(await codeOf(files.upload('w1', '', Readable.from([refusedLate])))).toBe('FILES_BAD_ARCHIVE');
    expect(readFileSync(join(ws, 'keep.txt'), 'utf8')).toBe('original');
    expect(() => readFileSync(join(ws, 'new', 'first.txt'))).toThrow();
    expect(leftovers()).toEqual([]);
    // a client that goes away mid-body: the gzip stream ends short
    const whole = await targz([
      { name: 'keep.txt', body: 'replaced' },
      { name: 'big.bin', body: randomBytes(256 * 1024).toString('base64') },
    ]);
    expect(await codeOf(files.upload('w1', '', Readable.from([whole.subarray(0, whole.length - 4096)])))).toBe('FILES_BAD_ARCHIVE');
    expect(readFileSync(join(ws, 'keep.txt'), 'utf8')).toBe('original');
    expect(() => readFileSync(join(ws, 'big.bin'))).toThrow();
    expect(leftovers()).toEqual([]);
    // the same name twice: the later entry wins, as tar does
    const twice = await targz([
      { name: 'keep.txt', body: 'one' },
      { name: 'keep.txt', body: 'two' },
    ]);
    expect((await files.upload('w1', '', Readable.from([twice]))).files).toBe(2);
    expect(readFileSync(join(ws, 'keep.txt'), 'utf8')).toBe('two');
    expect(leftovers()).toEqual([]);
  });

  it('deletes files, empty directories, trees with recursive, and the workspace', async () => {
    await files.remove('w1', 'README.md');
    expect(await codeOf(files.remove('w1', 'src'))).toBe('FILES_NOT_EMPTY');
    await files.remove('w1', 'src', { recursive: true });
    expect((await files.list('w1', '', { limit: 10 })).entries).toEqual([]);
    expect(await codeOf(files.remove('w1', ''))).toBe('FILES_INVALID_PATH');
    expect(await files.removeWorkspace('w1')).toBe(true);
    expect(await files.exists('w1')).toBe(false);
    expect(await files.removeWorkspace('w1')).toBe(false);
  });

  it("stops the walk and closes every descriptor when the archive's reader goes away", async () => {
    const fds = () => readdirSync('/proc/self/fd').length;
    // links with long random targets: bodiless entries that gzip cannot shrink, deep in the tree
    const deep = join(ws, 'a', 'b', 'c');
    mkdirSync(deep, { recursive: true });
    for (let i = 0; i < 3000; i++) symlinkSync(randomBytes(60).toString('hex'), join(deep, `l${i}`));
    for (let f = 0; f < 5; f++) writeFileSync(join(ws, 'a', `f${f}`), randomBytes(256 * 1024));
    const before = fds();
    const archive = await files.archive('w1');
    // read a little, then go away while the walk is deep in the tree and waiting on the reader
    for await (const _chunk of archive) break;
    // bounded wait for the walk to notice: closing is asynchronous
    for (let i = 0; i < 200 && fds() > before; i++) await new Promise((r) => setTimeout(r, 10));
    expect(fds()).toBe(before);

    // the same while the walk is inside a large file, waiting for the reader to drain it
    const big = join(root, 'w2');
    mkdirSync(big);
    writeFileSync(join(big, 'big.bin'), randomBytes(16 * 1024 * 1024));
    const into = () =>
      readdirSync('/proc/self/fd').filter((fd) => {
        try {
          return readlinkSync(`/proc/self/fd/${fd}`).startsWith(big);
        } catch {
          return false;
        }
      }).length;
    const partial = await files.archive('w2');
    let read = 0;
    for await (const chunk of partial) {
      read += (chunk as Buffer).length;
      if (read > 64 * 1024) break;
    }
    for (let i = 0; i < 200 && into() > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(into()).toBe(0);
  });

  it('counts usage of regular files', async () => {
    expect(await files.usage('w1')).toEqual({ bytes: 8 + 15 + 4, files: 3, directories: 2 });
  });
});
