import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  parseEnv,
  parseOptions,
  parseSecrets,
  runInput,
  UsageError,
  type FrameworkInfo,
  type RunInputDeps,
} from '../../apps/cli/src/run-input.js';
import { script, startPlatform, type Platform } from './platform.js';

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

const FRAMEWORKS: FrameworkInfo[] = [
  { name: 'script', optionsSchema: { type: 'object', properties: {} } },
  {
    name: 'exec',
    optionsSchema: {
      type: 'object',
      properties: { command: { type: 'array', items: { type: 'string' } }, secretEnv: { type: 'array' } },
      required: ['command'],
    },
  },
  {
    name: 'openai',
    optionsSchema: { type: 'object', properties: { baseUrl: { type: 'string' }, model: {} }, required: ['baseUrl', 'model'] },
  },
];

const deps = (over: Partial<RunInputDeps> = {}): RunInputDeps => ({
  env: { MY_SECRET: 's3cr3t', HOME_DIR: '/home/x' },
  readFile: (path) => {
    if (path === '/secret.txt') return 'from-file\n';
    if (path === '/prompt.md') return 'do it\n';
    if (path === '/empty') return '\n';
    throw Object.assign(new Error('no such file'), { code: 'ENOENT' });
  },
  readStdin: () => Promise.resolve('from stdin'),
  listFrameworks: () => Promise.resolve(FRAMEWORKS),
  ...over,
});

const usage = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error('expected a UsageError');
};

describe('mgx run input, checked before a session exists', () => {
  describe('--option and --options', () => {
    it('parses values as JSON when they parse, else keeps the string; --option wins over --options', () => {
      expect(
        parseOptions('{"model":"a","maxSteps":3}', [
          'model=gpt-4o-mini',
          'maxSteps=5',
          'flag=true',
          'list=["a","b"]',
          'url=http://x/v1?a=b',
          'e=',
        ]),
      ).toEqual({ model: 'gpt-4o-mini', maxSteps: 5, flag: true, list: ['a', 'b'], url: 'http://x/v1?a=b', e: '' });
    });

    it('names what was wrong', () => {
      expect(usage(() => parseOptions(undefined, ['model']))).toMatch(/--option "model" has no "=": write KEY=VALUE/);
      expect(usage(() => parseOptions(undefined, ['=5']))).toMatch(/--option "=5" has an empty name/);
      expect(usage(() => parseOptions('{model:1}', []))).toMatch(/--options is not valid JSON/);
      expect(usage(() => parseOptions('[1,2]', []))).toMatch(/--options must be a JSON object/);
    });
  });

  describe('--env', () => {
    it('takes NAME=value, and NAME alone from this environment', () => {
      expect(parseEnv(['A=1', 'B=x=y', 'HOME_DIR'], deps().env)).toEqual({ A: '1', B: 'x=y', HOME_DIR: '/home/x' });
      expect(usage(() => parseEnv(['NOPE'], {}))).toMatch(/no variable "NOPE" in this environment/);
      expect(usage(() => parseEnv(['=x'], {}))).toMatch(/--env "=x" has an empty name/);
    });
  });

  describe('--secret and --secret-file', () => {
    const d = deps();
    it('reads a secret from the environment or a file, dropping one trailing newline', () => {
      expect(parseSecrets(['MY_SECRET', 'B=@/secret.txt'], ['C=/secret.txt'], d.env, d.readFile)).toEqual({
        MY_SECRET: 's3cr3t',
        B: 'from-file',
        C: 'from-file',
      });
    });

    it('refuses a value on the command line without repeating it', () => {
      const msg = usage(() => parseSecrets(['API_KEY=sk-live-123'], [], d.env, d.readFile));
      expect(msg).toMatch(/never taken from the command line, where ps and the shell history show it/);
      expect(msg).toMatch(/--secret API_KEY\b/);
      expect(msg).not.toContain('sk-live-123');
    });

    it('says which secret is missing, unreadable or empty', () => {
      expect(usage(() => parseSecrets(['NOPE'], [], d.env, d.readFile))).toMatch(/--secret NOPE: the variable NOPE is not set/);
      expect(usage(() => parseSecrets(['X'], [], { X: '' }, d.readFile))).toMatch(/--secret X: the variable X is empty/);
      expect(usage(() => parseSecrets(['K=@/missing'], [], d.env, d.readFile))).toMatch(/--secret K: cannot read \/missing \(ENOENT\)/);
      expect(usage(() => parseSecrets([], ['K=/empty'], d.env, d.readFile))).toMatch(/--secret-file K: \/empty is empty/);
      expect(usage(() => parseSecrets([], ['K'], d.env, d.readFile))).toMatch(/--secret-file "K" has no "="/);
    });
  });

  describe('runInput', () => {
    it('maps what follows -- to exec options.command, needs no prompt, and hands the secrets to the command', async () => {
      const input = await runInput({ framework: 'exec', env: ['A=1'], secret: ['MY_SECRET'] }, ['node', '-e', 'x'], deps());
      expect(input).toEqual({
        prompt: '',
        options: { command: ['node', '-e', 'x'], secretEnv: ['MY_SECRET'] },
        env: { A: '1' },
        secrets: { MY_SECRET: 's3cr3t' },
      });
      const explicit = await runInput({ framework: 'exec', secret: ['MY_SECRET'], option: ['secretEnv=[]'] }, ['true'], deps());
      expect(explicit.options.secretEnv).toEqual([]);
    });

    it('refuses a command for a framework that runs none, a command given twice, and missing options', async () => {
      await expect(runInput({ framework: 'script', prompt: 'hi' }, ['node'], deps())).rejects.toThrow(
        /framework "script" runs no command, so nothing may follow "--"/,
      );
      await expect(runInput({ framework: 'exec', option: ['command=["ls"]'] }, ['ls'], deps())).rejects.toThrow(
        /the command is given twice/,
      );
      await expect(runInput({ framework: 'exec' }, [], deps())).rejects.toThrow(
        /framework "exec" needs option command: give the command after "--"/,
      );
      await expect(runInput({ framework: 'openai', prompt: 'x', option: ['model=m'] }, [], deps())).rejects.toThrow(
        /framework "openai" needs option baseUrl: give --option baseUrl=…/,
      );
    });

    it('needs a prompt for a framework that runs no command: -p, -p - or --prompt-file', async () => {
      await expect(runInput({ framework: 'script' }, [], deps())).rejects.toThrow(/framework "script" needs a prompt/);
      expect((await runInput({ framework: 'script', prompt: '-' }, [], deps())).prompt).toBe('from stdin');
      expect((await runInput({ framework: 'script', promptFile: '/prompt.md' }, [], deps())).prompt).toBe('do it\n');
      await expect(runInput({ framework: 'script', promptFile: '/nope' }, [], deps())).rejects.toThrow(/--prompt-file: cannot read \/nope/);
      await expect(runInput({ framework: 'script', prompt: 'a', promptFile: '/prompt.md' }, [], deps())).rejects.toThrow(
        /give the prompt once/,
      );
    });

    it('leaves an unknown framework to the server, which names the ones it has', async () => {
      expect(await runInput({ framework: 'nope', prompt: 'x' }, [], deps())).toEqual({ prompt: 'x', options: {}, env: {}, secrets: {} });
    });
  });
});
