import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Emitter, SessionEvent } from '@mgx/agent-sdk';
import { execFramework } from '../src/frameworks/exec.js';
import { runSessionOnHost as runSessionOnHost_, type RunInput } from './host-session.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const runSessionOnHost = (framework: string, input: RunInput = {}) =>
  runSessionOnHost_(framework, input, { prompt: '', network: 'none' }, (undo) => cleanups.push(undo));

const finishOf = (events: SessionEvent[]) => events.at(-1)!;
const logs = (events: SessionEvent[], stream?: string) =>
  events.filter((e) => e.type === 'LOG' && (stream === undefined || e.data.stream === stream)).map((e) => e.data.text);
const node = process.execPath;

describe('exec framework, runner on the host with a real ingest socket and SQLite store', () => {
  it('turns stdout and stderr lines into LOG events with their stream, and NDJSON event lines into those events', async () => {
    const script = `
      console.log('hello from stdout');
      console.error('oops on stderr');
      console.log(JSON.stringify({ type: 'MESSAGE', data: { messageId: 'x1', role: 'assistant', text: 'native message', done: true } }));
      console.log(JSON.stringify({ type: 'FILE_CHANGED', data: { path: 'a.txt', bytes: 3, change: 'written' } }));
      console.log(JSON.stringify({ type: 'FINISH', data: { status: 'succeeded', reason: 'finished' } }));
      console.log(JSON.stringify({ type: 'START', data: {} }));
      console.log(JSON.stringify({ type: 'SESSION_QUEUED', data: {} }));
      console.log(JSON.stringify({ type: 'MESSAGE', data: 'not an object' }));
      console.error(JSON.stringify({ type: 'MESSAGE', data: { messageId: 'e', role: 'assistant', text: 'on stderr' } }));
      process.stdout.write('last line without newline');
    `;
    const { code, events } = await runSessionOnHost('exec', { options: { command: [node, '-e', script] } });
    expect(code).toBe(0);
    const types = events.map((e) => e.type);
    expect(types[0]).toBe('SESSION_QUEUED');
    expect(types[1]).toBe('START');
    expect(types.filter((t) => t === 'FINISH')).toHaveLength(1);
    expect(finishOf(events).data).toMatchObject({ status: 'succeeded', reason: 'finished' });
    expect(logs(events, 'stdout')).toEqual([
      'hello from stdout',
      '{"type":"FINISH","data":{"status":"succeeded","reason":"finished"}}',
      '{"type":"START","data":{}}',
      '{"type":"SESSION_QUEUED","data":{}}',
      '{"type":"MESSAGE","data":"not an object"}',
      'last line without newline',
    ]);
    // stdout and stderr are read independently, so only each stream's own order is fixed
    expect(logs(events, 'stderr')).toEqual([
      'oops on stderr',
      '{"type":"MESSAGE","data":{"messageId":"e","role":"assistant","text":"on stderr"}}',
    ]);
    expect(events.filter((e) => e.type === 'MESSAGE').map((e) => e.data)).toEqual([
      { messageId: 'x1', role: 'assistant', text: 'native message', done: true },
    ]);
    expect(events.filter((e) => e.type === 'FILE_CHANGED').map((e) => e.data)).toEqual([{ path: 'a.txt', bytes: 3, change: 'written' }]);
  });

  it('runs in the workspace with PATH, HOME and the session env only: nothing of the runner (MGX_*) leaks', async () => {
    process.env.MGX_LEAK_CHECK = 'must-not-leak';
    cleanups.push(() => {
      delete process.env.MGX_LEAK_CHECK;
    });
    // `node` without a path: found through the fixed PATH
    const { events, workspace } = await runSessionOnHost('exec', {
      options: { command: ['node', '-e', 'console.log(process.cwd()); console.log(JSON.stringify(process.env))'] },
      env: { GREETING: 'hi' },
    });
    expect(finishOf(events).data).toMatchObject({ status: 'succeeded' });
    const [cwd, env] = logs(events, 'stdout') as [string, string];
    expect(cwd).toBe(workspace);
    expect(JSON.parse(env)).toEqual({ PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/tmp', GREETING: 'hi' });
  });

  it('ends failed with agent_error and the exit code when the command exits non-zero', async () => {
    const { code, events } = await runSessionOnHost('exec', { options: { command: [node, '-e', 'console.log("bye"); process.exit(3)'] } });
    expect(code).toBe(1);
    expect(logs(events)).toEqual(['bye']);
    expect(finishOf(events)).toMatchObject({
      type: 'FINISH',
      data: { status: 'failed', reason: 'agent_error', message: 'command exited with code 3' },
    });
  });

  it('fails clearly, naming the command, when it cannot be started', async () => {
    const { events } = await runSessionOnHost('exec', { options: { command: ['no-such-command-mgx', '--flag'] } });
    expect(finishOf(events).data).toMatchObject({
      status: 'failed',
      reason: 'agent_error',
      message: 'cannot start command "no-such-command-mgx": it was not found in PATH /usr/local/bin:/usr/bin:/bin (ENOENT)',
    });
  });

  it('refuses bad options with a message that names the option', async () => {
    const missing = await runSessionOnHost('exec', { options: {} });
    expect(finishOf(missing.events).data).toMatchObject({
      status: 'failed',
      message: expect.stringContaining('options.command must be a non-empty array of strings'),
    });
    const extra = await runSessionOnHost('exec', { options: { command: ['true'], shell: true } });
    expect(finishOf(extra.events).data).toMatchObject({ status: 'failed', message: expect.stringContaining('unknown option "shell"') });
  });

  it('feeds options.stdin to the command and stops it at options.timeoutSeconds', async () => {
    const echo = await runSessionOnHost('exec', {
      options: {
        command: [node, '-e', 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(s.toUpperCase()))'],
        stdin: 'shout\n',
      },
    });
    expect(logs(echo.events, 'stdout')).toEqual(['SHOUT', '']);
    const slow = await runSessionOnHost('exec', { options: { command: [node, '-e', 'setTimeout(() => {}, 60000)'], timeoutSeconds: 0.5 } });
    expect(finishOf(slow.events).data).toMatchObject({ status: 'failed', reason: 'agent_error', message: 'command timed out after 0.5 s' });
  });

  it('cuts a huge line at 64 KiB with a marker, and keeps every line of a chatty command in order', async () => {
    const { events } = await runSessionOnHost('exec', {
      options: {
        command: [
          node,
          '-e',
          'process.stdout.write("y".repeat(200000) + "\\nafter\\n"); for (let i = 0; i < 20000; i++) console.error("line " + i)',
        ],
      },
    });
    expect(finishOf(events).data).toMatchObject({ status: 'succeeded' });
    const [big, after] = logs(events, 'stdout') as [string, string];
    expect(big.startsWith('y'.repeat(65536))).toBe(true);
    expect(big.slice(65536)).toBe(' … [line cut at 65536 of 200000 bytes]');
    expect(after).toBe('after');
    expect(logs(events, 'stderr')).toEqual(Array.from({ length: 20000 }, (_, i) => `line ${i}`));
  });
});

/** An emitter that records LOG lines, for calling a framework's run() directly. */
function recordingEmitter() {
  const lines: string[] = [];
  const emit: Emitter = {
    emit: () => {},
    messageDelta: () => {},
    messageDone: () => {},
    log: (text) => void lines.push(text),
    drain: async () => {},
  };
  const waitFor = async (text: string) => {
    const until = Date.now() + 10_000;
    while (!lines.includes(text)) {
      if (Date.now() > until) throw new Error(`no line "${text}"; got ${JSON.stringify(lines)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return { lines, emit, waitFor };
}

describe('exec framework: stopping the command when the session is stopped', () => {
  const ctxFor = (workspace: string, command: string[], emit: Emitter, signal: AbortSignal) => ({
    sessionId: 's',
    prompt: '',
    workspace,
    options: { command },
    env: {},
    secrets: {},
    emit,
    signal,
  });

  it("forwards SIGTERM to the command's whole process group and resolves once it exited", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mgx-exec-term-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const grandchild = `process.on("SIGTERM", () => { require("fs").writeFileSync("grandchild.term", "1"); process.exit(0) }); console.log("grandchild ready"); setInterval(() => {}, 1000)`;
    const child = `
      const { spawn } = require('child_process');
      spawn(process.execPath, ['-e', ${JSON.stringify(grandchild)}], { stdio: 'inherit' });
      process.on('SIGTERM', () => { require('fs').writeFileSync('child.term', '1'); setTimeout(() => process.exit(0), 200) });
      console.log('child ready');
      setInterval(() => {}, 1000);
    `;
    const rec = recordingEmitter();
    const ac = new AbortController();
    const running = execFramework.run(ctxFor(dir, [node, '-e', child], rec.emit, ac.signal));
    await rec.waitFor('child ready');
    await rec.waitFor('grandchild ready');
    const t0 = Date.now();
    ac.abort();
    const result = await running;
    expect(Date.now() - t0).toBeLessThan(4000);
    expect(result).toEqual({ status: 'failed', reason: 'agent_error', message: 'command stopped: the session was stopped' });
    expect(existsSync(join(dir, 'child.term'))).toBe(true);
    expect(readFileSync(join(dir, 'grandchild.term'), 'utf8')).toBe('1');
  });

  it('SIGKILLs a command that ignores SIGTERM after the 5 s grace', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mgx-exec-kill-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const stubborn = `process.on('SIGTERM', () => { require('fs').writeFileSync('got.term', '1'); console.log('ignoring SIGTERM') }); console.log('ready'); setInterval(() => {}, 1000)`;
    const rec = recordingEmitter();
    const ac = new AbortController();
    const running = execFramework.run(ctxFor(dir, [node, '-e', stubborn], rec.emit, ac.signal));
    await rec.waitFor('ready');
    const t0 = Date.now();
    ac.abort();
    const result = await running;
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(4900);
    expect(took).toBeLessThan(8000);
    expect(existsSync(join(dir, 'got.term'))).toBe(true);
    expect(rec.lines).toContain('ignoring SIGTERM');
    expect(result).toMatchObject({ status: 'failed', message: 'command stopped: the session was stopped' });
  });
});
