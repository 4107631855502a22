import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { followSession, type SessionEvent } from '@mgx/client';
import { LABELS } from '@mgx/runtime';
import { containersLeft } from '../support/engine.js';
import { startPlatform, type Platform } from '../support/platform.js';
import { collect } from '../support/sessions.js';

// The agent image is FROM scratch: no shell, so every command is node itself.
const NODE = '/usr/local/bin/node';

let p: Platform;
beforeAll(async () => {
  p = await startPlatform({ AGENT_MAX_CONCURRENT_CONTAINERS: '2' });
  if (!(await p.server.runtime!.imageExists(p.server.settings.agent.image))) {
    throw new Error(`image ${p.server.settings.agent.image} is missing: run \`bash infra/build-agent.sh\` (npm test does this)`);
  }
});
afterAll(async () => {
  await p?.close();
});

const logs = (events: SessionEvent[], stream: string) =>
  events.filter((e) => e.type === 'LOG' && e.data.stream === stream).map((e) => e.data.text);
// removed shortly after FINISH, off the client's path: waited for, bounded
const containersOf = (sessionId: string) => containersLeft({ [LABELS.sessionId]: sessionId });

describe('the exec framework end to end, in real containers', () => {
  it('streams stdout/stderr lines as LOG events and NDJSON lines as events, and succeeds on exit 0', async () => {
    const script = [
      "console.log('hi')",
      "console.error('oops')",
      "console.log(JSON.stringify({ type: 'MESSAGE', data: { messageId: 'n1', role: 'assistant', text: 'native hello', done: true } }))",
      "console.log(JSON.stringify({ type: 'FINISH', data: { status: 'succeeded', reason: 'finished' } }))",
      "require('fs').writeFileSync('made-by-exec.txt', 'from the container')",
      'console.log(process.cwd())',
    ].join(';');
    const s = await p.client.sessions.create.mutate({
      framework: 'exec',
      prompt: 'run the one-liner',
      workspaceId: 'ws-e2e-exec',
      options: { command: [NODE, '-e', script] },
    });
    const events = await collect(p.client, s.id);
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    const types = events.map((e) => e.type);
    expect(types.slice(0, 3)).toEqual(['SESSION_QUEUED', 'CONTAINER_STARTED', 'START']);
    expect(types.filter((t) => t === 'FINISH')).toHaveLength(1);
    expect(events.at(-1)?.data).toMatchObject({ status: 'succeeded', reason: 'finished' });
    expect(events.find((e) => e.type === 'START')?.data).toMatchObject({ framework: 'exec' });
    // the FINISH line is only a LOG: the command cannot end the session by printing
    expect(logs(events, 'stdout')).toEqual(['hi', '{"type":"FINISH","data":{"status":"succeeded","reason":"finished"}}', '/workspace']);
    expect(logs(events, 'stderr')).toEqual(['oops']);
    expect(events.filter((e) => e.type === 'MESSAGE').map((e) => e.data)).toEqual([
      { messageId: 'n1', role: 'assistant', text: 'native hello', done: true },
    ]);
    expect(readFileSync(join(p.dataDir, 'workspaces', 'ws-e2e-exec', 'made-by-exec.txt'), 'utf8')).toBe('from the container');
    expect(events.find((e) => e.type === 'CONTAINER_EXITED')?.data).toMatchObject({ exitCode: 0 });
    expect(await containersOf(s.id)).toEqual([]);
  });

  it('ends failed with agent_error when the command exits non-zero', async () => {
    const s = await p.client.sessions.create.mutate({
      framework: 'exec',
      prompt: 'fail',
      options: { command: [NODE, '-e', "console.log('about to fail'); process.exit(5)"] },
    });
    const events = await collect(p.client, s.id);
    expect(logs(events, 'stdout')).toEqual(['about to fail']);
    expect(events.at(-1)?.data).toMatchObject({ status: 'failed', reason: 'agent_error', message: 'command exited with code 5' });
    expect(await p.client.sessions.get.query({ sessionId: s.id })).toMatchObject({ status: 'failed', reason: 'agent_error' });
    expect(await containersOf(s.id)).toEqual([]);
  });

  it('gives the command the session env, PATH and HOME, and nothing of the runner (MGX_*, NODE_ENV)', async () => {
    const s = await p.client.sessions.create.mutate({
      framework: 'exec',
      prompt: 'env',
      env: { GREETING: 'hi' },
      options: { command: [NODE, '-e', 'console.log(process.env.GREETING); console.log(JSON.stringify(Object.keys(process.env).sort()))'] },
    });
    const events = await collect(p.client, s.id);
    expect(events.at(-1)?.data).toMatchObject({ status: 'succeeded' });
    expect(logs(events, 'stdout')).toEqual(['hi', '["GREETING","HOME","PATH"]']);
  });

  it('hands the secrets named in secretEnv to the command, and keeps them out of stored events', async () => {
    const key = 'sk-exec-0123456789abcdef';
    const s = await p.client.sessions.create.mutate({
      framework: 'exec',
      prompt: 'use the key',
      secrets: { AGENT_API_KEY: key },
      options: {
        secretEnv: ['AGENT_API_KEY'],
        command: [NODE, '-e', "const k = process.env.AGENT_API_KEY; console.log(k.length, k.slice(0, 3)); console.log('careless', k)"],
      },
    });
    const events = await collect(p.client, s.id);
    expect(events.at(-1)?.data).toMatchObject({ status: 'succeeded' });
    expect(logs(events, 'stdout')).toEqual([`${key.length} sk-`, 'careless [REDACTED]']);
    expect(JSON.stringify(events)).not.toContain(key);
    const missing = await p.client.sessions.create.mutate({
      framework: 'exec',
      prompt: 'x',
      options: { secretEnv: ['NOPE'], command: [NODE, '-e', '0'] },
    });
    expect((await collect(p.client, missing.id)).at(-1)?.data).toMatchObject({
      status: 'failed',
      message: expect.stringContaining('no secret NOPE'),
    });
  });

  it('fails clearly when the command is not in the image', async () => {
    const s = await p.client.sessions.create.mutate({ framework: 'exec', prompt: 'x', options: { command: ['bash', '-c', 'echo hi'] } });
    const events = await collect(p.client, s.id);
    expect(events.at(-1)?.data).toMatchObject({
      status: 'failed',
      reason: 'agent_error',
      message: 'cannot start command "bash": it was not found in PATH /usr/local/bin:/usr/bin:/bin (ENOENT)',
    });
  });

  it("forwards the platform's SIGTERM to the command on cancel", async () => {
    const script =
      "process.on('SIGTERM', () => { console.log('command got SIGTERM'); process.exit(0) }); console.log('working'); setInterval(() => {}, 1000)";
    const s = await p.client.sessions.create.mutate({ framework: 'exec', prompt: 'x', options: { command: [NODE, '-e', script] } });
    const events: SessionEvent[] = [];
    for await (const ev of followSession(p.client, s.id)) {
      events.push(ev);
      if (ev.type === 'LOG' && ev.data.text === 'working') await p.client.sessions.cancel.mutate({ sessionId: s.id });
    }
    expect(events.at(-1)?.data).toMatchObject({ status: 'cancelled', reason: 'cancelled' });
    expect(logs(events, 'stdout')).toContain('command got SIGTERM');
    expect(await containersOf(s.id)).toEqual([]);
  });
});

describe('frameworks.list', () => {
  it('lists script, exec and openai with their options schemas', async () => {
    const list = await p.client.frameworks.list.query();
    const byName = new Map(list.map((f) => [f.name, f]));
    expect([...byName.keys()].sort()).toEqual(['exec', 'openai', 'script']);
    expect(byName.get('exec')).toMatchObject({
      requiresEgress: false,
      optionsSchema: {
        type: 'object',
        required: ['command'],
        properties: {
          command: { type: 'array', items: { type: 'string' } },
          timeoutSeconds: { type: 'number' },
          stdin: { type: 'string' },
        },
      },
    });
    expect(byName.get('openai')).toMatchObject({
      requiresEgress: true,
      optionsSchema: {
        type: 'object',
        required: ['model'],
        properties: {
          baseUrl: { type: 'string' },
          provider: { type: 'string' },
          model: { type: 'string' },
          maxSteps: {},
          systemPrompt: {},
          temperature: {},
        },
      },
    });
    expect(byName.get('script')?.optionsSchema).toMatchObject({ type: 'object' });
  });

  it('refuses an openai session without network egress', async () => {
    await expect(
      p.client.sessions.create.mutate({ framework: 'openai', prompt: 'x', options: { baseUrl: 'http://127.0.0.1:9/v1', model: 'm' } }),
    ).rejects.toThrow(/framework "openai" needs network egress/);
  });
});
