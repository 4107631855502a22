import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMgxClient, followSession, type MgxClient, type SessionEvent, type SessionUsage } from '@mgx/client';
import { startPlatform, type Platform } from '../support/platform.js';
import { collect, script } from '../support/sessions.js';

// What sessions cost, measured on the engine in use (Podman, and Docker with CONTAINER_HOST):
// usage sampled while they run, totals in FINISH, warnings, and the per-tenant sums.

const NODE = '/usr/local/bin/node';
const MiB = 1024 ** 2;
const MGX = join(import.meta.dirname, '..', '..', 'apps', 'cli', 'bin', 'mgx.js');
const TOKENS = { alpha: 'alpha-token-0123456789abcdef', beta: 'beta-token-0123456789abcdef', ops: 'ops-token-0123456789abcdef' };

let p: Platform;
let alpha: MgxClient;
let beta: MgxClient;
let ops: MgxClient;
beforeAll(async () => {
  p = await startPlatform({
    MGX_USAGE_INTERVAL_SECONDS: '1',
    AGENT_CONTAINER_MEMORY_LIMIT: '512m',
    AGENT_MAX_CONCURRENT_CONTAINERS: '2',
    MGX_API_TOKENS: `alpha:${TOKENS.alpha},beta:${TOKENS.beta}`,
    MGX_OPERATOR_TOKENS: `ops:${TOKENS.ops}`,
  });
  alpha = createMgxClient({ url: p.server.url, token: TOKENS.alpha });
  beta = createMgxClient({ url: p.server.url, token: TOKENS.beta });
  ops = createMgxClient({ url: p.server.url, token: TOKENS.ops });
});
afterAll(async () => {
  await p?.close();
});

/** A command that runs `body`, then ends (exit 0) once the test puts the file `go` in its workspace. */
const gated = (body: string) => [
  NODE,
  '-e',
  `${body}; console.log('ready'); setInterval(() => { if (require('fs').existsSync('go')) process.exit(0); }, 100);`,
];

/** Creates an exec session of `client` in a workspace of its own, and the function that opens its gate. */
async function gatedSession(client: MgxClient, command: string[], over: { memory?: string; cpus?: number } = {}) {
  const workspaceId = `ws-usage-${randomBytes(4).toString('hex')}`;
  const s = await client.sessions.create.mutate({ framework: 'exec', prompt: 'measure me', workspaceId, options: { command }, ...over });
  return { id: s.id, open: () => writeFileSync(join(p.dataDir, 'workspaces', workspaceId, 'go'), '') };
}

/** Follows a session to FINISH; `until(pred)` resolves with the first event that matches. */
function follow(client: MgxClient, sessionId: string) {
  const waiting: Array<{ pred: (e: SessionEvent) => boolean; resolve: (e: SessionEvent) => void }> = [];
  const events = (async () => {
    const all: SessionEvent[] = [];
    for await (const ev of followSession(client, sessionId)) {
      all.push(ev);
      for (const w of waiting.filter((x) => x.pred(ev))) {
        waiting.splice(waiting.indexOf(w), 1);
        w.resolve(ev);
      }
    }
    return all;
  })();
  const until = (pred: (e: SessionEvent) => boolean) =>
    new Promise<SessionEvent>((resolve, reject) => {
      waiting.push({ pred, resolve });
      // FINISH came first: the event never will
      void events.then(() => reject(new Error('the session finished before the event arrived')), reject);
    });
  return { events, until };
}

const usageOf = (events: SessionEvent[]) => events.at(-1)?.data.usage as SessionUsage;

/** How many rounds of stats readings the server took so far (its own counter, read in-process). */
async function readings(): Promise<number> {
  const text = await p.server.metrics.render();
  return Number(/^mgx_usage_sample_duration_seconds_count (\S+)$/m.exec(text)?.[1] ?? 0);
}

async function untilReadings(n: number): Promise<void> {
  while ((await readings()) < n) await new Promise((r) => setTimeout(r, 100));
}

describe('resource usage of a session', () => {
  it('a session holding 200 MiB under a 512m limit: RESOURCE while it runs, `mgx top` shows it, FINISH reports the peak', async () => {
    const s = await gatedSession(alpha, gated('const held = Buffer.alloc(200 * 1024 * 1024, 1)'), { memory: '512m' });
    const f = follow(alpha, s.id);
    const big = await f.until((e) => e.type === 'RESOURCE' && (e.data.memoryBytes as number) >= 200 * MiB);
    expect(big.data).toMatchObject({ memoryLimitBytes: 512 * MiB, pids: expect.any(Number), cpuSeconds: expect.any(Number) });

    // the live table, printed once (what a script gets), as an operator sees it
    const top = await promisify(execFile)(process.execPath, [MGX, 'top', '--once'], {
      env: { ...process.env, MGX_URL: p.server.url, MGX_TOKEN: TOKENS.ops },
      timeout: 60_000,
    });
    const row = top.stdout.split('\n').find((l) => l.startsWith(s.id));
    expect(top.stdout.split('\n')[0]).toMatch(/^SESSION\s+TENANT\s+FRAMEWORK\s+CPU %.*MEM USAGE \/ LIMIT\s+MEM %\s+PIDS/);
    expect(row).toMatch(new RegExp(`^${s.id}\\s+alpha\\s+exec\\s+.*\\d+(\\.\\d)?MiB / 512MiB`));
    // a tenant's table has no tenant column and none of another tenant's sessions
    expect((await beta.sessions.top.query()).items).toEqual([]);

    s.open();
    const events = await f.events;
    expect(events.at(-1)?.data).toMatchObject({ status: 'succeeded', reason: 'finished' });
    const usage = usageOf(events);
    expect(usage.memoryPeakBytes).toBeGreaterThanOrEqual(200 * MiB);
    expect(usage.memoryPeakBytes).toBeLessThanOrEqual(512 * MiB);
    expect(usage.pidsPeak).toBeGreaterThan(0);
    expect(usage.wallMs).toBeGreaterThan(0);
    expect(usage.memoryGiBSeconds).toBeGreaterThan(0);
    // samples are stored as the session runs, never after FINISH
    const types = events.map((e) => e.type);
    expect(types.indexOf('RESOURCE')).toBeLessThan(types.indexOf('CONTAINER_EXITED'));
    expect(types.filter((t) => t === 'WARNING')).toEqual([]);
    // the session carries the same usage as its FINISH
    expect((await alpha.sessions.get.query({ sessionId: s.id })).usage).toEqual(usage);
  });

  it('a session burning 2 CPU-seconds under a 0.5-CPU quota reports them within 25 %, over 4 s at least', async () => {
    const cpuOf = async (code: string) => {
      const s = await alpha.sessions.create.mutate({
        framework: 'exec',
        prompt: 'cpu',
        cpus: 0.5,
        options: { command: [NODE, '-e', code] },
      });
      const events = await collect(alpha, s.id);
      expect(events.at(-1)?.data).toMatchObject({ status: 'succeeded' });
      return { usage: usageOf(events), samples: events.filter((e) => e.type === 'RESOURCE') };
    };
    // what the runner and node's start cost: every session pays it, the measurement includes it
    const idle = await cpuOf('');
    // burns by its own CPU clock, so a busy machine makes it slower, not shorter
    const burn = await cpuOf(
      'const t0 = process.cpuUsage(); for (;;) { const u = process.cpuUsage(t0); if (u.user + u.system >= 2e6) break; }',
    );
    // within 25 % of the 2 CPU-seconds burnt: not less (the start's cost only adds), and not more
    // once an idle session's start is taken off (that cost varies with the machine's load, so it
    // loosens only the upper bound)
    expect(burn.usage.cpuSeconds).toBeGreaterThanOrEqual(2 * 0.75);
    expect(burn.usage.cpuSeconds - idle.usage.cpuSeconds).toBeLessThanOrEqual(2 * 1.25);
    // the quota held: 2 CPU-seconds at 0.5 CPU take 4 s at least
    expect(burn.usage.wallMs).toBeGreaterThanOrEqual(4000);
    expect(burn.samples.length).toBeGreaterThan(0);
    expect(Math.max(...burn.samples.map((e) => e.data.cpuPercent as number))).toBeGreaterThan(0);
  });

  it('memory at 90 % of the limit raises one WARNING, however long it stays there', async () => {
    // allocates until its cgroup (v2 or v1) shows 94 % of the limit in use, as the engine counts it
    const fill = `
      const fs = require('fs');
      const read = (f) => { try { return fs.readFileSync(f, 'utf8'); } catch { return null; } };
      const stat = (text, key) => Number((new RegExp('^' + key + ' (\\\\d+)$', 'm').exec(text ?? '') ?? [])[1] ?? 0);
      const used = () => {
        const v2 = read('/sys/fs/cgroup/memory.current');
        if (v2 !== null) return Number(v2) - stat(read('/sys/fs/cgroup/memory.stat'), 'inactive_file');
        return Number(read('/sys/fs/cgroup/memory/memory.usage_in_bytes')) - stat(read('/sys/fs/cgroup/memory/memory.stat'), 'total_inactive_file');
      };
      const held = [];
      while (used() < 0.94 * 512 * 1024 * 1024) held.push(Buffer.alloc(4 * 1024 * 1024, 1))`;
    const s = await gatedSession(alpha, gated(fill), { memory: '512m' });
    const f = follow(alpha, s.id);
    const warning = await f.until((e) => e.type === 'WARNING');
    expect(warning.data).toMatchObject({
      kind: 'memory_near_limit',
      memoryLimitBytes: 512 * MiB,
      message: expect.stringContaining('limit'),
    });
    // three more rounds of readings while it stays above 90 %: no second warning
    await untilReadings((await readings()) + 3);
    s.open();
    const events = await f.events;
    expect(events.filter((e) => e.type === 'WARNING')).toHaveLength(1);
    expect(usageOf(events).memoryPeakBytes).toBeGreaterThanOrEqual(0.9 * 512 * MiB);
  });

  it('a session killed for its memory reports its peak at the limit', async () => {
    const s = await alpha.sessions.create.mutate({ framework: 'script', prompt: script({ alloc_mb: 600 }), memory: '64m' });
    const events = await collect(alpha, s.id);
    expect(events.at(-1)?.data).toMatchObject({ reason: 'oom_killed' });
    expect(usageOf(events).memoryPeakBytes).toBeGreaterThanOrEqual(64 * MiB);
  });
});

describe('usage per tenant', () => {
  it('tenants.usage adds up the sessions of each tenant over a range, and is scoped per tenant', async () => {
    const from = Date.now();
    const run = async (client: MgxClient, prompt: string) => {
      const s = await client.sessions.create.mutate({ framework: 'script', prompt });
      return collect(client, s.id);
    };
    const runs = await Promise.all([
      run(alpha, script({ say: 'a1' })),
      run(alpha, script({ fail: 'a2 fails' })),
      run(beta, script({ say: 'b1' })),
    ]);
    const [a1, a2, b1] = runs.map((events) => ({ status: events.at(-1)?.data.status as string, usage: usageOf(events) }));
    const to = Date.now() + 1;
    const sum = (xs: Array<{ usage: SessionUsage }>, pick: (u: SessionUsage) => number) => xs.reduce((n, x) => n + pick(x.usage), 0);

    const mine = await alpha.tenants.usage.query({ from, to });
    expect(mine.tenants.map((t) => t.tenant)).toEqual(['alpha']);
    const a = mine.tenants[0]!;
    expect(a.sessions).toBe(2);
    expect(a.cpuSeconds).toBeCloseTo(
      sum([a1!, a2!], (u) => u.cpuSeconds),
      2,
    );
    expect(a.memoryGiBSeconds).toBeCloseTo(
      sum([a1!, a2!], (u) => u.memoryGiBSeconds),
      2,
    );
    expect(a.wallSeconds).toBeCloseTo(sum([a1!, a2!], (u) => u.wallMs) / 1000, 2);
    expect(a.cpuSeconds).toBeGreaterThan(0);
    expect(a.byStatus).toEqual({
      succeeded: expect.objectContaining({ sessions: 1, cpuSeconds: a1!.usage.cpuSeconds }),
      failed: expect.objectContaining({ sessions: 1, cpuSeconds: a2!.usage.cpuSeconds }),
    });
    expect([a1!.status, a2!.status]).toEqual(['succeeded', 'failed']);

    const theirs = await beta.tenants.usage.query({ from, to });
    expect(theirs.tenants).toEqual([expect.objectContaining({ tenant: 'beta', sessions: 1, cpuSeconds: b1!.usage.cpuSeconds })]);
    await expect(alpha.tenants.usage.query({ from, to, tenant: 'beta' })).rejects.toMatchObject({ data: { code: 'FORBIDDEN' } });

    const everyone = await ops.tenants.usage.query({ from, to });
    expect(everyone.tenants.map((t) => [t.tenant, t.sessions])).toEqual([
      ['alpha', 2],
      ['beta', 1],
    ]);
    expect((await ops.tenants.usage.query({ from, to, tenant: 'beta' })).tenants).toEqual(theirs.tenants);

    // the per-tenant counters: the configured tenants, each under its own label
    const text = await p.server.metrics.render();
    expect(Number(/^mgx_tenant_cpu_seconds_total\{tenant="beta"\} (\S+)$/m.exec(text)?.[1])).toBeCloseTo(b1!.usage.cpuSeconds, 2);
    expect(text).toMatch(/^mgx_session_cpu_seconds_count \d+$/m);
  });
});
