import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMgxClient, followSession, type SessionEvent } from '@mgx/client';
import { LABELS } from '@mgx/runtime';
import { startPlatform, type Platform } from '../support/platform.js';
import { collect, script, sleep } from '../support/sessions.js';
import { docker, goneWithin, runtime } from '../support/engine.js';
import { newServerProcess } from '../support/server-process.js';

/** Running, idle pool containers of `owner` (but `taken`), once there are `n` of them (within 30 s). */
async function pooled(owner: string, n: number, taken: string[] = []): Promise<string[]> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    // a claimed container keeps its pool label; it is renamed after its session
    const idle = (await runtime.list({ [LABELS.owner]: owner }).catch(() => [])).filter(
      (c) => c.state === 'running' && c.labels[LABELS.pool] && c.name.replace(/^\//, '').startsWith('mgx-pool-') && !taken.includes(c.id),
    );
    if (idle.length === n) return idle.map((c) => c.id).sort();
    if (Date.now() > deadline) throw new Error(`expected ${n} idle pool containers of ${owner}, found ${idle.length}`);
    await sleep(100);
  }
}

async function metric(p: Platform, line: string): Promise<number> {
  const text = await p.server.metrics.registry.metrics();
  const found = text.split('\n').find((l) => l.startsWith(line));
  return found ? Number(found.split(' ').at(-1)) : Number.NaN;
}

const startedOn = (events: SessionEvent[]) =>
  events.find((e) => e.type === 'CONTAINER_STARTED')?.data as { containerId: string; warm: boolean };

describe('warm pool', () => {
  let p: Platform;
  let owner: string;
  beforeAll(async () => {
    // one ready container for the defaults (256m) and one for 128m sessions
    p = await startPlatform({ MGX_WARM_POOL_SIZE: '1', MGX_WARM_POOL_SPECS: 'memory=128m' });
    owner = p.env.MGX_OWNER!;
  });
  /** Both pools full, as the engine and as the pool itself count (the engine sees "running" first). */
  const poolReady = async (): Promise<string[]> => {
    const ids = await pooled(owner, 2);
    for (let i = 0; i < 100 && Object.values(p.server.pool!.ready).some((n) => n < 1); i++) await sleep(50);
    return ids;
  };
  afterAll(async () => {
    await p?.close();
    // closing removes what was idle in the pool
    expect(await runtime.list({ [LABELS.owner]: owner })).toEqual([]);
  });

  it('keeps started, hardened containers that hold nothing of any session', async () => {
    const ids = await poolReady();
    for (const id of ids) {
      const c = await docker.getContainer(id).inspect();
      expect(c.State.Running).toBe(true);
      expect(Object.keys(c.Config.Labels)).not.toContain(LABELS.sessionId);
      expect(Object.keys(c.Config.Labels)).not.toContain(LABELS.tenant);
      expect(c.Config.Labels[LABELS.pool]).toMatch(/^(256|128)m-100mcpu-none$/);
      expect(c.Config.Env.filter((e) => e.startsWith('MGX_')).sort()).toEqual([
        'MGX_INGEST_SOCKET=/run/mgx/ingest.sock',
        'MGX_POOLED=1',
        'MGX_WORKSPACE=/workspace',
      ]);
      expect(c.Config.User).toBe('10001:10001');
      // Podman lists the capabilities it dropped one by one; what counts is what is left
      const status = await runtime.exec(id, [
        'node',
        '-e',
        'process.stdout.write(require("fs").readFileSync("/proc/self/status", "utf8"))',
      ]);
      expect(status.stdout).toMatch(/^CapEff:\s+0+$/m);
      expect(status.stdout).toMatch(/^NoNewPrivs:\s+1$/m);
      expect(c.HostConfig.ReadonlyRootfs).toBe(true);
      expect(c.HostConfig.NetworkMode).toBe('none');
      expect([128 * 1024 ** 2, 256 * 1024 ** 2]).toContain(c.HostConfig.Memory);
      // its workspace and socket directories are empty, seen from the host and from inside
      for (const m of c.Mounts.filter((x) => ['/workspace', '/run/mgx'].includes(x.Destination))) expect(readdirSync(m.Source)).toEqual([]);
      const inside = await runtime.exec(id, [
        'node',
        '-e',
        'console.log(JSON.stringify([require("fs").readdirSync("/workspace"), require("fs").readdirSync("/run/mgx")]))',
      ]);
      expect(JSON.parse(inside.stdout)).toEqual([[], []]);
    }
    expect(await metric(p, 'mgx_warm_pool_target')).toBe(1);
    expect(await metric(p, 'mgx_warm_pool_ready{spec="256m-100mcpu-none"}')).toBe(1);
    expect(await metric(p, 'mgx_warm_pool_ready{spec="128m-100mcpu-none"}')).toBe(1);
  });

  it('starts a session on a ready container, renames it for the session, and tops the pool up', async () => {
    const before = await poolReady();
    const s = await p.client.sessions.create.mutate({
      framework: 'script',
      prompt: script({ write: { path: 'out.txt', content: 'warm' } }, { sleep: 1500 }, { say: 'done' }),
    });
    const events: SessionEvent[] = [];
    let name = '';
    for await (const ev of followSession(p.client, s.id)) {
      events.push(ev);
      if (ev.type === 'START') {
        // the rename is not on the session's path: give it a moment
        for (let i = 0; i < 50 && !name.endsWith(s.id); i++, await sleep(50))
          name = (await docker.getContainer(startedOn(events).containerId).inspect()).Name;
      }
    }
    expect(events.at(-1)).toMatchObject({ type: 'FINISH', data: { status: 'succeeded' } });
    const on = startedOn(events);
    expect(on.warm).toBe(true);
    expect(before).toContain(on.containerId);
    expect(name.replace(/^\//, '')).toBe(`mgx-${s.id}`);
    expect((await p.client.sessions.get.query({ sessionId: s.id })).containerId).toBe(on.containerId);
    // the file the agent wrote is in the session's workspace on the host
    expect(readFileSync(join(p.dataDir, 'workspaces', s.workspaceId, 'out.txt'), 'utf8')).toBe('warm');
    expect(await metric(p, 'mgx_warm_pool_hits_total')).toBe(1);
    // topped up with a new container; the used one is removed shortly after its session's FINISH
    const after = await pooled(owner, 2);
    expect(after).not.toContain(on.containerId);
    expect(await goneWithin(on.containerId)).toBe(true);
    expect(existsSync(join(p.dataDir, 'run', 'sessions', s.id))).toBe(false);
  });

  it('serves each configured spec, and starts cold when the limits or an existing workspace do not fit', async () => {
    await poolReady();
    const hitsBefore = await metric(p, 'mgx_warm_pool_hits_total');
    const small = await p.client.sessions.create.mutate({
      framework: 'script',
      prompt: script({ write: { path: 'notes.txt', content: 'kept' } }),
      memory: '128m',
    });
    const smallEvents = await collect(p.client, small.id);
    expect(startedOn(smallEvents).warm).toBe(true);
    expect(await metric(p, 'mgx_warm_pool_hits_total')).toBe(hitsBefore + 1);

    const other = await p.client.sessions.create.mutate({ framework: 'script', prompt: script({ say: 'hi' }), memory: '64m' });
    const otherEvents = await collect(p.client, other.id);
    expect(startedOn(otherEvents).warm).toBe(false);
    expect(otherEvents.at(-1)).toMatchObject({ type: 'FINISH', data: { status: 'succeeded' } });
    expect(await metric(p, 'mgx_warm_pool_misses_total{reason="no_pool"}')).toBe(1);

    // a workspace with files cannot be swapped into a running container: a new one mounts it
    await poolReady();
    const again = await p.client.sessions.create.mutate({
      framework: 'script',
      prompt: script({ read: 'notes.txt' }),
      workspaceId: small.workspaceId,
    });
    const againEvents = await collect(p.client, again.id);
    expect(startedOn(againEvents).warm).toBe(false);
    expect(againEvents.filter((e) => e.type === 'MESSAGE' && e.data.done).map((e) => e.data.text)).toEqual(['notes.txt=kept']);
    expect(await metric(p, 'mgx_warm_pool_misses_total{reason="workspace_exists"}')).toBe(1);
  });

  it('replaces an idle container that dies', async () => {
    const [victim] = await poolReady();
    await runtime.kill(victim!, 'SIGKILL');
    const deadline = Date.now() + 30_000;
    let ids: string[] = [];
    while (Date.now() < deadline) {
      ids = await pooled(owner, 2).catch(() => []);
      if (ids.length === 2 && !ids.includes(victim!)) break;
      await sleep(200);
    }
    expect(ids).toHaveLength(2);
    expect(ids).not.toContain(victim);
    expect(await runtime.inspect(victim!)).toBeNull();
  });
});

describe('warm pool across a server crash', () => {
  it('a restarted server adopts the session running on a pooled container and removes the idle ones', async () => {
    const { server, dataDir, owner } = await newServerProcess('mgx-pool-restart', {
      MGX_LOG_LEVEL: 'warn',
      AGENT_MONITOR_POLL_SECONDS: '1',
      AGENT_CONTAINER_MEMORY_LIMIT: '256m',
      MGX_WARM_POOL_SIZE: '1',
    });
    try {
      await server.start();
      const client = createMgxClient({ url: server.url });
      const [first] = await pooled(owner, 1);
      // and counted ready by the pool (the engine says "running" a moment earlier)
      for (let i = 0; i < 100; i++, await sleep(50)) {
        const text = await fetch(`${server.url}/metrics`).then((r) => r.text());
        if (/^mgx_warm_pool_ready\{[^}]*\} 1$/m.test(text)) break;
      }
      const s = await client.sessions.create.mutate({
        framework: 'script',
        prompt: script({ say: 'before' }, { sleep: 2500 }, { events: { count: 200, size: 50 } }, { say: 'after' }),
        timeoutSeconds: 120,
      });
      for await (const ev of followSession(client, s.id)) if (ev.type === 'START') break;
      // the taken one is renamed off the session's path: it may still carry its pool name here
      const [topUp] = await pooled(owner, 1, [first!]);
      await server.stop('SIGKILL');
      await server.start();

      const events = await collect(createMgxClient({ url: server.url }), s.id);
      expect(events.at(-1)).toMatchObject({ type: 'FINISH', data: { status: 'succeeded' } });
      expect(startedOn(events)).toMatchObject({ containerId: first, warm: true });
      expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
      expect(events.filter((e) => e.type === 'LOG' && typeof e.data.i === 'number')).toHaveLength(200);
      expect(events.filter((e) => e.type === 'MESSAGE' && e.data.done).map((e) => e.data.text)).toEqual(['before', 'after']);
      // the idle container of the killed process was removed; the new process has its own
      expect(await runtime.inspect(topUp!)).toBeNull();
      const [fresh] = await pooled(owner, 1);
      expect([first, topUp]).not.toContain(fresh);
      await server.stop('SIGTERM');
      expect(await runtime.list({ [LABELS.owner]: owner })).toEqual([]);
    } finally {
      await server.stop('SIGKILL').catch(() => null);
      for (const c of await runtime.list({ [LABELS.owner]: owner })) await runtime.remove(c.id);
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 120_000);
});
