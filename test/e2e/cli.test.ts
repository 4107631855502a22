import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPlatform, type Platform } from '../support/platform.js';
import { script } from '../support/sessions.js';

const run = promisify(execFile);
const MGX = join(import.meta.dirname, '..', '..', 'apps', 'cli', 'bin', 'mgx.js');

let p: Platform;
beforeAll(async () => {
  p = await startPlatform();
});
afterAll(async () => {
  await p?.close();
});

async function mgx(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [MGX, ...args], { env: { ...process.env, MGX_URL: p.server.url }, timeout: 60_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('mgx CLI against a real server', () => {
  it('run --json prints every event as a JSON line, FINISH last, and exits 0 on success', async () => {
    const r = await mgx('run', '--framework', 'script', '--prompt', 'hi from the cli', '--json');
    expect(r.code).toBe(0);
    const lines = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { sessionId: string; seq: number; type: string; data: Record<string, unknown> });
    expect(lines.map((l) => l.seq)).toEqual(lines.map((_, i) => i + 1));
    expect(lines.at(-1)).toMatchObject({ type: 'FINISH', data: { status: 'succeeded' } });
    expect(new Set(lines.map((l) => l.sessionId)).size).toBe(1);
  });

  it('run exits 1 for a failed session, 3 for a timed-out one, with human output', async () => {
    const failed = await mgx('run', '-f', 'script', '-p', script({ fail: 'nope' }));
    expect(failed.code).toBe(1);
    expect(failed.stdout).toMatch(/FINISH\s+failed \(agent_error\): nope/);
    const timedOut = await mgx('run', '-f', 'script', '-p', script({ sleep: 30_000 }), '--timeout', '1');
    expect(timedOut.code).toBe(3);
    expect(timedOut.stdout).toMatch(/TIMEOUT/);
  });

  it('run --detach prints the id; logs, ls and cancel work on it', async () => {
    const d = await mgx('run', '-f', 'script', '-p', script({ say: 'detached' }, { sleep: 30_000 }), '--detach');
    expect(d.code).toBe(0);
    const id = d.stdout.trim();
    expect(id).toMatch(/^[a-z0-9]+$/);
    const ls = await mgx('ls', '--json');
    expect(
      ls.stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => (JSON.parse(l) as { id: string }).id),
    ).toContain(id);
    const c = await mgx('cancel', id);
    expect(c.code).toBe(0);
    const follow = await mgx('logs', id, '--follow', '--json');
    expect(follow.code).toBe(0);
    expect(
      follow.stdout
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as { type: string }).type)
        .at(-1),
    ).toBe('FINISH');
    const after = await mgx('logs', id, '--after', '1', '--json');
    const seqs = after.stdout
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { seq: number }).seq);
    expect(seqs[0]).toBe(2);
  });

  it("exits 2 with the server's reason for bad input, and 5 when no server answers", async () => {
    const bad = await mgx('run', '-f', 'nope', '-p', 'x');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/unknown framework "nope"/);
    const down = await mgx('--url', 'http://127.0.0.1:9', 'ls');
    expect(down.code).toBe(5);
    expect(down.stderr).toMatch(/is the server running/);
  });

  it('doctor checks the engine, runc, cgroups, the image, the store and the server', async () => {
    const r = await mgx('doctor', '--json');
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as { ok: boolean; checks: Array<{ name: string; ok: boolean; detail: string }> };
    expect(report.ok).toBe(true);
    const names = report.checks.map((c) => c.name);
    expect(names).toEqual(expect.arrayContaining(['engine binary', 'runc', 'cgroups', 'server', 'engine', 'agent image', 'store']));
    expect(report.checks.find((c) => c.name === 'engine')?.detail).toMatch(/^(podman|docker) \d/);
    const down = await mgx('--url', 'http://127.0.0.1:9', 'doctor');
    expect(down.code).toBe(1);
    expect(down.stdout).toMatch(/✖ server/);
  });
});
