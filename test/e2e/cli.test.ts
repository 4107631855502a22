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
  return mgxWithEnv({}, ...args);
}

/** The CLI with extra variables in its own environment (where `--secret NAME` reads from). */
async function mgxWithEnv(extra: Record<string, string>, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [MGX, ...args], { env: { ...process.env, ...extra, MGX_URL: p.server.url }, timeout: 60_000 });
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
    // a signed preview link to a port of the session, and a clear refusal outside the preview ports
    const link = await mgx('preview', id, '3000');
    expect(link.code).toBe(0);
    expect(link.stdout.trim()).toMatch(
      new RegExp(`^http://127\\.0\\.0\\.1:\\d+/sessions/${id}/preview/3000/\\?mgx_preview_token=[0-9a-z]+\\.[\\w-]{43}$`),
    );
    const low = await mgx('preview', id, '80');
    expect(low.code).not.toBe(0);
    expect(low.stderr).toMatch(/port 80 is outside the preview ports 1024-65535/);
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

  it('run -f exec runs the command after -- with env and a secret from the environment; the secret is in no event', async () => {
    const secret = 's3cr3t-value-123';
    const program = [
      "console.log('greeting=' + process.env.GREETING.toUpperCase());",
      "process.exit(process.env.MY_SECRET === 's3cr3t-value-123' ? 0 : 3);",
    ].join(' ');
    const r = await mgxWithEnv(
      { MY_SECRET: secret },
      'run',
      '-f',
      'exec',
      '-e',
      'GREETING=hello',
      '--secret',
      'MY_SECRET',
      '--json',
      '--',
      'node',
      '-e',
      program,
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const events = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { sessionId: string; type: string; data: Record<string, unknown> });
    expect(events.at(-1)).toMatchObject({ type: 'FINISH', data: { status: 'succeeded' } });
    expect(events).toContainEqual(expect.objectContaining({ type: 'LOG', data: expect.objectContaining({ text: 'greeting=HELLO' }) }));
    // the stored events, not only the ones streamed, carry no trace of the secret
    const stored = await mgx('logs', events[0]!.sessionId, '--json');
    expect(stored.code).toBe(0);
    expect(stored.stdout.trim().split('\n')).toHaveLength(events.length);
    for (const out of [r.stdout, stored.stdout]) expect(out).not.toContain(secret);
  });

  it('refuses a secret value on the command line, bad --option and a command for a framework that runs none, with exit 2', async () => {
    const before = await mgx('ls', '--json');
    const secret = await mgx('run', '-f', 'exec', '--secret', 'MY_SECRET=s3cr3t-on-argv', '--', 'true');
    expect(secret.code).toBe(2);
    expect(secret.stderr).toMatch(/a secret value is never taken from the command line, where ps and the shell history show it/);
    expect(secret.stderr).toMatch(/--secret MY_SECRET=@path/);
    expect(secret.stderr).not.toContain('s3cr3t-on-argv');
    const option = await mgx('run', '-f', 'exec', '--option', 'timeoutSeconds', '--', 'true');
    expect(option.code).toBe(2);
    expect(option.stderr).toMatch(/--option "timeoutSeconds" has no "=": write KEY=VALUE/);
    const options = await mgx('run', '-f', 'exec', '--options', '{"timeoutSeconds":', '--', 'true');
    expect(options.code).toBe(2);
    expect(options.stderr).toMatch(/--options is not valid JSON/);
    const noCommand = await mgx('run', '-f', 'exec');
    expect(noCommand.code).toBe(2);
    expect(noCommand.stderr).toMatch(/framework "exec" needs option command: give the command after "--"/);
    const script = await mgx('run', '-f', 'script', '-p', 'hi', '--', 'node', 'x.js');
    expect(script.code).toBe(2);
    expect(script.stderr).toMatch(/framework "script" runs no command/);
    const unknown = await mgx('run', '-f', 'script', '--bogus');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown option '--bogus'/);
    // none of them created a session
    expect((await mgx('ls', '--json')).stdout).toBe(before.stdout);
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

describe('mgx workers', () => {
  const OPS = 'ops-token-0123456789abcdef';
  const ACME = 'acme-token-0123456789abcdef';
  let fleet: Platform;
  beforeAll(async () => {
    fleet = await startPlatform({ MGX_API_TOKENS: `acme:${ACME}`, MGX_OPERATOR_TOKENS: `ops:${OPS}` });
    // a worker of another host, as its record in the shared store looks (this server registered itself too)
    await fleet.server.store.workers.register(
      { id: 'cli-worker', hostname: 'cli.example', engine: 'podman test', capacity: 2, version: '0.0.0-test' },
      60_000,
    );
  });
  afterAll(async () => {
    await fleet?.close();
  });

  it('lists the workers to an operator as a table and as JSON lines', async () => {
    const table = await mgxWithEnv({ MGX_TOKEN: OPS }, '--url', fleet.server.url, 'workers');
    expect(table.code, table.stderr).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ID\s+STATE\s+IN USE\s+HEARTBEAT\s+ENGINE$/);
    expect(lines).toContainEqual(expect.stringMatching(/^cli-worker\s+alive\s+0\/2\s+\d+s ago\s+podman test$/));
    const json = await mgxWithEnv({ MGX_TOKEN: OPS }, '--url', fleet.server.url, 'workers', '--json');
    expect(json.code, json.stderr).toBe(0);
    const workers = json.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(workers).toContainEqual(
      expect.objectContaining({ id: 'cli-worker', state: 'alive', leaseExpired: false, capacity: 2, inUse: 0, engine: 'podman test' }),
    );
  });

  it("exits 2 with a clear message on a tenant's token", async () => {
    const r = await mgxWithEnv({ MGX_TOKEN: ACME }, '--url', fleet.server.url, 'workers');
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^mgx: `mgx workers` needs an operator token/);
  });

  it('asks a worker to drain; exits 2 for an unknown or stopped worker and for a tenant', async () => {
    const ok = await mgxWithEnv({ MGX_TOKEN: OPS }, '--url', fleet.server.url, 'workers', 'drain', 'cli-worker');
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/^cli-worker: drain requested/);
    expect(await fleet.server.store.workers.get('cli-worker')).toMatchObject({ state: 'alive', drainRequested: true });
    const table = await mgxWithEnv({ MGX_TOKEN: OPS }, '--url', fleet.server.url, 'workers');
    expect(table.stdout).toMatch(/^cli-worker\s+alive \(drain requested\)\s+0\/2/m);

    const unknown = await mgxWithEnv({ MGX_TOKEN: OPS }, '--url', fleet.server.url, 'workers', 'drain', 'no-such-worker');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toBe('mgx: worker no-such-worker does not exist\n');
    const { worker } = await fleet.server.store.workers.register(
      { id: 'cli-stopped', hostname: 'cli.example', engine: 'podman test', capacity: 1, version: '0.0.0-test' },
      60_000,
    );
    await fleet.server.store.workers.deregister('cli-stopped', worker.epoch);
    const stopped = await mgxWithEnv({ MGX_TOKEN: OPS }, '--url', fleet.server.url, 'workers', 'drain', 'cli-stopped');
    expect(stopped.code).toBe(2);
    expect(stopped.stderr).toBe('mgx: worker cli-stopped is stopped: there is nothing to drain\n');
    const tenant = await mgxWithEnv({ MGX_TOKEN: ACME }, '--url', fleet.server.url, 'workers', 'drain', 'cli-worker');
    expect(tenant.code).toBe(2);
    expect(tenant.stderr).toMatch(/^mgx: `mgx workers drain` needs an operator token/);
  });
});
