import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPlatform, type Platform } from '../support/platform.js';
import { collect } from '../support/sessions.js';

const run = promisify(execFile);
const MGX = join(import.meta.dirname, '..', '..', 'apps', 'cli', 'bin', 'mgx.js');

let p: Platform;
let local: string;
const ws = `ws-cli-${randomBytes(4).toString('hex')}`;
beforeAll(async () => {
  p = await startPlatform();
  local = mkdtempSync(join(tmpdir(), 'mgx-cli-files-'));
  const make = [
    "const fs = require('fs')",
    "fs.mkdirSync('src/lib', { recursive: true })",
    "fs.writeFileSync('src/app.js', 'console.log(1)\\n')",
    "fs.writeFileSync('src/lib/util.js', 'module.exports = 2\\n')",
    "fs.writeFileSync('README.md', '# readme\\n')",
    "fs.symlinkSync('/etc/passwd', 'src/passwd')",
    "fs.symlinkSync('app.js', 'src/inside')",
  ].join(';');
  const s = await p.client.sessions.create.mutate({
    framework: 'exec',
    prompt: 'files',
    workspaceId: ws,
    options: { command: ['/usr/local/bin/node', '-e', make] },
  });
  expect((await collect(p.client, s.id)).at(-1)?.data).toMatchObject({ status: 'succeeded' });
});
afterAll(async () => {
  await p?.close();
  if (local) rmSync(local, { recursive: true, force: true });
});

async function mgx(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [MGX, ...args], { env: { ...process.env, MGX_URL: p.server.url }, timeout: 60_000, cwd: local });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('mgx files and mgx cp against a real server', () => {
  it('files lists a directory, or the tree with -r, and --json gives one entry per line', async () => {
    const top = await mgx('files', ws);
    expect(top.code).toBe(0);
    expect(top.stdout).toMatch(/^- +9 +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d {2}README\.md$/m);
    expect(top.stdout).toMatch(/^d .* src\/$/m);
    const tree = await mgx('files', ws, '-r', '--json');
    const entries = tree.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { path: string; type: string; target?: string });
    expect(entries.map((e) => e.path)).toEqual([
      'README.md',
      'src',
      'src/app.js',
      'src/inside',
      'src/lib',
      'src/lib/util.js',
      'src/passwd',
    ]);
    expect(entries.at(-1)).toMatchObject({ type: 'symlink', target: '/etc/passwd' });
    expect((await mgx('files', ws, 'src/lib')).stdout).toContain('src/lib/util.js');
    const missing = await mgx('files', `${ws}-nope`);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('not found');
  });

  it('cp ID:path dest copies a file, to a file, into a directory or to stdout', async () => {
    expect((await mgx('cp', `${ws}:src/app.js`, 'copy.js')).code).toBe(0);
    expect(readFileSync(join(local, 'copy.js'), 'utf8')).toBe('console.log(1)\n');
    mkdirSync(join(local, 'into'));
    expect((await mgx('cp', `${ws}:src/lib/util.js`, 'into')).code).toBe(0);
    expect(readFileSync(join(local, 'into', 'util.js'), 'utf8')).toBe('module.exports = 2\n');
    const out = await mgx('cp', `${ws}:README.md`, '-');
    expect(out).toMatchObject({ code: 0, stdout: '# readme\n' });
    const refused = await mgx('cp', `${ws}:src/passwd`, '-');
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('symbolic link');
    expect((await mgx('cp', `${ws}:nope.txt`, 'x')).code).toBe(2);
  });

  it('cp ID: dest and ID:dir dest unpack a directory, links as links', async () => {
    mkdirSync(join(local, 'whole'));
    writeFileSync(join(local, 'whole', 'keep.txt'), 'mine');
    const whole = await mgx('cp', `${ws}:`, 'whole');
    expect(whole.code).toBe(0);
    expect(readFileSync(join(local, 'whole', 'src', 'lib', 'util.js'), 'utf8')).toBe('module.exports = 2\n');
    expect(readlinkSync(join(local, 'whole', 'src', 'inside'))).toBe('app.js');
    // the agent's link out of the workspace is not recreated here
    expect(whole.stderr).toContain('left out src/passwd -> /etc/passwd');
    expect(existsSync(join(local, 'whole', 'src', 'passwd'))).toBe(false);
    expect(readFileSync(join(local, 'whole', 'keep.txt'), 'utf8')).toBe('mine');
    expect((await mgx('cp', `${ws}:src/lib`, 'lib-copy')).code).toBe(0);
    expect(readFileSync(join(local, 'lib-copy', 'util.js'), 'utf8')).toBe('module.exports = 2\n');
  });

  it('cp src ID:path puts a file or a directory into a workspace, which a session then sees', async () => {
    const seed = `ws-cli-seed-${randomBytes(4).toString('hex')}`;
    mkdirSync(join(local, 'seed', 'public'), { recursive: true });
    writeFileSync(join(local, 'seed', 'public', 'index.html'), '<p>seed</p>');
    writeFileSync(join(local, 'config.json'), '{"a":1}');
    const dir = await mgx('cp', 'seed', `${seed}:`);
    expect(dir.code).toBe(0);
    expect(dir.stderr).toContain('1 files');
    expect((await mgx('cp', 'config.json', `${seed}:etc/`)).code).toBe(0);
    expect((await mgx('cp', 'config.json', `${seed}:renamed.json`)).code).toBe(0);
    const read = (path: string) => p.client.workspaces.read.query({ workspaceId: seed, path }).then((r) => r.content);
    expect(await read('public/index.html')).toBe('<p>seed</p>');
    expect(await read('etc/config.json')).toBe('{"a":1}');
    expect(await read('renamed.json')).toBe('{"a":1}');
    expect((await mgx('cp', 'nowhere', `${seed}:`)).code).toBe(2);
    expect((await mgx('cp', 'seed', 'elsewhere')).code).toBe(2);
  });
});
