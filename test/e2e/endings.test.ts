import { existsSync, lstatSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { connect, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { discoverSocket, LABELS } from '@mgx/runtime';
import { containersLeft } from '../support/engine.js';
import { startPlatform, type Platform } from '../support/platform.js';
import { collect, script } from '../support/sessions.js';

// Every way a container can end, told apart, with nothing left running afterwards.
let p: Platform;
beforeAll(async () => {
  p = await startPlatform({ AGENT_STOP_GRACE_SECONDS: '1', AGENT_MAX_CONCURRENT_CONTAINERS: '2' });
});
afterAll(async () => {
  await p?.close();
});
// removed shortly after FINISH, off the client's path: waited for, bounded
const leftovers = () => containersLeft({ [LABELS.owner]: p.env.MGX_OWNER! });

describe('how a container ended', () => {
  it('an agent past its memory limit ends failed, oom_killed', async () => {
    const s = await p.client.sessions.create.mutate({
      framework: 'script',
      prompt: script({ say: 'allocating' }, { alloc_mb: 600 }, { say: 'unreachable' }),
      memory: '64m',
    });
    const events = await collect(p.client, s.id);
    expect(events.at(-1)?.data).toMatchObject({ status: 'failed', reason: 'oom_killed', exitCode: 137 });
    expect(events.find((e) => e.type === 'CONTAINER_EXITED')?.data).toMatchObject({ exitCode: 137, oomKilled: true, killedBy: null });
    expect(events.some((e) => e.type === 'MESSAGE' && e.data.text === 'unreachable')).toBe(false);
    expect(await leftovers()).toEqual([]);
  });

  it('an agent that ignores SIGTERM is killed at its deadline after the grace period', async () => {
    const s = await p.client.sessions.create.mutate({
      framework: 'script',
      prompt: script({ ignore_sigterm: true }, { say: 'ignoring SIGTERM' }, { sleep: 60_000 }),
      // room for the runner to boot and install its handler first, on a loaded machine too
      timeoutSeconds: 4,
    });
    const started = Date.now();
    const events = await collect(p.client, s.id);
    expect(events.at(-1)?.data).toMatchObject({ status: 'timed_out', reason: 'timeout' });
    const saidAt = events.findIndex((e) => e.type === 'MESSAGE' && e.data.text === 'ignoring SIGTERM');
    expect(saidAt, 'the agent ignored SIGTERM before its deadline').toBeGreaterThan(-1);
    expect(saidAt).toBeLessThan(events.findIndex((e) => e.type === 'TIMEOUT'));
    // SIGKILL after the 1 s grace: exit 137, by us, so not counted as OOM
    expect(events.find((e) => e.type === 'CONTAINER_EXITED')?.data).toMatchObject({
      exitCode: 137,
      killedBy: 'deadline',
      oomKilled: false,
    });
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(await leftovers()).toEqual([]);
  });

  it('a cooperative agent stops on SIGTERM without needing SIGKILL', async () => {
    const s = await p.client.sessions.create.mutate({ framework: 'script', prompt: script({ sleep: 60_000 }), timeoutSeconds: 1 });
    const events = await collect(p.client, s.id);
    expect(events.find((e) => e.type === 'CONTAINER_EXITED')?.data).toMatchObject({ exitCode: 143, killedBy: 'deadline' });
  });

  it("captures the container's stdout and stderr as LOG events before FINISH", async () => {
    const s = await p.client.sessions.create.mutate({
      framework: 'script',
      prompt: script({ print: { stream: 'stdout', text: 'to stdout' } }, { print: { stream: 'stderr', text: 'to stderr' } }, { exit: 2 }),
    });
    const events = await collect(p.client, s.id);
    const logs = events.filter((e) => e.type === 'LOG' && e.data.source === 'container').map((e) => [e.data.stream, e.data.text]);
    expect(logs).toEqual(
      expect.arrayContaining([
        ['stdout', 'to stdout'],
        ['stderr', 'to stderr'],
      ]),
    );
    expect(events.at(-1)?.type).toBe('FINISH');
    expect(events.at(-1)?.data).toMatchObject({ reason: 'exited_without_finish', exitCode: 2 });
  });

  it('symlinks an agent makes in its workspace resolve inside its container, never on the host', async () => {
    const marker = `mgx-escape-${randomBytes(6).toString('hex')}`;
    const first = await p.client.sessions.create.mutate({
      framework: 'script',
      workspaceId: 'ws-links',
      prompt: script({ symlink: { path: 'to-root', target: '/' } }, { symlink: { path: 'to-tmp', target: '/tmp' } }),
    });
    expect((await collect(p.client, first.id)).at(-1)?.data).toMatchObject({ status: 'succeeded' });
    const ws = join(p.dataDir, 'workspaces', 'ws-links');
    expect(lstatSync(join(ws, 'to-root')).isSymbolicLink()).toBe(true);
    // a second session in the same workspace writes through the links
    const second = await p.client.sessions.create.mutate({
      framework: 'script',
      workspaceId: 'ws-links',
      prompt: script({ write: { path: `to-tmp/${marker}`, content: 'x' } }),
    });
    expect((await collect(p.client, second.id)).at(-1)?.data).toMatchObject({ status: 'succeeded' });
    expect(existsSync(join('/tmp', marker))).toBe(false);
  });
});

describe('engine failures', () => {
  it('an engine that is down fails the session with runtime_error instead of hanging; health recovers when it is back', async () => {
    const path = `/tmp/mgx-no-engine-${randomBytes(4).toString('hex')}.sock`;
    const down = await startPlatform({ CONTAINER_HOST: `unix://${path}` });
    let relay: Server | undefined;
    try {
      const health = await fetch(`${down.server.url}/healthz`);
      expect(health.status).toBe(503);
      const s = await down.client.sessions.create.mutate({ framework: 'script', prompt: 'x' });
      const events = await collect(down.client, s.id);
      expect(events.map((e) => e.type)).toEqual(['SESSION_QUEUED', 'FINISH']);
      expect(events.at(-1)?.data).toMatchObject({
        status: 'failed',
        reason: 'runtime_error',
        message: expect.stringContaining('container engine unavailable'),
      });

      // the engine appears at that path (a relay to the real one): /healthz turns healthy, and
      // the engine's full info, which failed at start, is asked again and shown
      const real = discoverSocket({ containerHost: process.env.CONTAINER_HOST, dockerHost: process.env.DOCKER_HOST });
      if (real.kind !== 'unix') throw new Error('this test relays to a unix socket');
      relay = createServer((client) => {
        const engine = connect(real.path);
        client.on('error', () => engine.destroy());
        engine.on('error', () => client.destroy());
        client.pipe(engine).pipe(client);
      });
      await new Promise<void>((resolve) => relay!.listen(path, resolve));
      const healthz = async () => {
        const r = await fetch(`${down.server.url}/healthz`);
        return { status: r.status, body: (await r.json()) as { engine?: { engine?: string; cgroupVersion?: string } } };
      };
      await expect.poll(async () => (await healthz()).status, { timeout: 10_000 }).toBe(200);
      await expect.poll(async () => (await healthz()).body.engine?.cgroupVersion, { timeout: 20_000 }).toMatch(/^(1|2)$/);
      expect(['podman', 'docker']).toContain((await healthz()).body.engine?.engine);
    } finally {
      relay?.close();
      await down.close();
    }
  });
});
