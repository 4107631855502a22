import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SessionEvent } from '@mgx/client';
import { startPlatform, type Platform } from '../support/platform.js';
import { collect, script } from '../support/sessions.js';

// The real Prometheus from Debian's archive: CI installs it, so a missing binary is a failure, not a skip.
const PROMETHEUS = '/usr/bin/prometheus';
const PROMTOOL = '/usr/bin/promtool';
const INFRA = resolve(process.cwd(), 'infra');
const ALERTS = join(INFRA, 'prometheus', 'alerts.yml');
const WAIT_MS = 30_000;

function requireTool(path: string): void {
  if (!existsSync(path))
    throw new Error(`${path} is missing: run \`apt-get install -y prometheus\` (CI installs it; it ships prometheus and promtool)`);
}

/** Runs a command to completion (bounded) and fails with its output unless it exits 0. */
function mustRun(cmd: string, args: string[], cwd = process.cwd()): string {
  requireTool(cmd);
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: WAIT_MS });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  if (r.error) throw new Error(`${cmd} ${args.join(' ')} failed to run: ${r.error.message}\n${out}`);
  expect(r.status, `${cmd} ${args.join(' ')} exited ${r.status}:\n${out}`).toBe(0);
  return out;
}

/** `promtool check metrics` on an exposition (stdin): its exit code and what it reported. */
function promlint(exposition: string): { status: number | null; problems: string } {
  requireTool(PROMTOOL);
  const r = spawnSync(PROMTOOL, ['check', 'metrics'], { input: exposition, encoding: 'utf8', timeout: WAIT_MS });
  if (r.error) throw new Error(`promtool check metrics failed to run: ${r.error.message}`);
  return { status: r.status, problems: `${r.stdout ?? ''}${r.stderr ?? ''}`.trim() };
}

/** Polls until `fn` returns a value, for at most `ms`; the error names what never happened. */
async function until<T>(what: string, fn: () => Promise<T | undefined>, ms = WAIT_MS): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Prometheus text exposition format, enough for prom-client's output. */
function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

/** The value of the one series with exactly these labels, or undefined. */
function valueOf(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels);
  return samples.find((s) => s.name === name && Object.keys(s.labels).length === want.length && want.every(([k, v]) => s.labels[k] === v))
    ?.value;
}

const sumOf = (samples: Sample[], name: string) => samples.filter((s) => s.name === name).reduce((a, s) => a + s.value, 0);

async function getJson<T>(url: string): Promise<T> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

function freeLoopbackPort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolvePort(port));
    });
  });
}

describe('Prometheus config, alert rules and their unit tests (promtool)', () => {
  it('promtool check config accepts prometheus.yml with its rule file', () => {
    // a copy, so the check sees exactly the two shipped files and nothing else beside them
    const dir = mkdtempSync(join(tmpdir(), 'mgx-promtool-'));
    try {
      copyFileSync(join(INFRA, 'prometheus', 'prometheus.yml'), join(dir, 'prometheus.yml'));
      copyFileSync(ALERTS, join(dir, 'alerts.yml'));
      const out = mustRun(PROMTOOL, ['check', 'config', join(dir, 'prometheus.yml')]);
      expect(out).toMatch(/SUCCESS: 9 rules found/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('promtool check rules accepts alerts.yml', () => {
    expect(mustRun(PROMTOOL, ['check', 'rules', 'infra/prometheus/alerts.yml'])).toMatch(/SUCCESS: 9 rules found/);
  });

  it('promtool test rules passes: every alert fires on its input and stays quiet on the rest', () => {
    expect(mustRun(PROMTOOL, ['test', 'rules', 'infra/prometheus/rules.test.yml'])).toMatch(/SUCCESS/);
  });
});

describe('metrics of real sessions, served at /metrics and scraped by a real Prometheus', () => {
  let p: Platform | undefined;
  const finals: Record<'ok' | 'timeout' | 'oom', SessionEvent[]> = { ok: [], timeout: [], oom: [] };
  let exposition: Sample[] = [];
  let body = '';

  beforeAll(async () => {
    // fail before spending a minute on sessions when Prometheus is not installed
    requireTool(PROMETHEUS);
    requireTool(PROMTOOL);
    // a short heartbeat: the fleet's in-use gauge is what the worker last reported
    p = await startPlatform({ AGENT_CONTAINER_MEMORY_LIMIT: '256m', MGX_WORKER_HEARTBEAT_SECONDS: '0.2', MGX_WORKER_LEASE_SECONDS: '5' });
    const { client, server } = p;
    if (!(await server.runtime!.imageExists(server.settings.agent.image))) {
      throw new Error(`image ${server.settings.agent.image} is missing: run \`npx nx run runner:build-agent\` (npm test does this)`);
    }
    const [ok, timeout, oom] = await Promise.all([
      client.sessions.create.mutate({ framework: 'script', prompt: 'hello' }),
      client.sessions.create.mutate({ framework: 'script', prompt: script({ sleep: 60_000 }), timeoutSeconds: 1 }),
      client.sessions.create.mutate({ framework: 'script', prompt: script({ alloc_mb: 600 }), memory: '64m' }),
    ]);
    [finals.ok, finals.timeout, finals.oom] = await Promise.all([
      collect(client, ok.id),
      collect(client, timeout.id),
      collect(client, oom.id),
    ]);
    // FINISH is stored before the container is removed and the counters move, and the worker
    // reports its slots free at its next heartbeat: wait for both
    exposition = await until('/metrics to count 3 ended sessions and no slot in use', async () => {
      const res = await fetch(`${server.url}/metrics`, { signal: AbortSignal.timeout(5000) });
      const text = await res.text();
      const samples = parseExposition(text);
      if (sumOf(samples, 'mgx_sessions_total') < 3 || sumOf(samples, 'mgx_fleet_in_use') !== 0) return undefined;
      body = text;
      return samples;
    });
  });

  let prom: ChildProcess | undefined;
  let promDir: string | undefined;
  let promLog = '';
  afterAll(async () => {
    if (prom && prom.exitCode === null && prom.signalCode === null) {
      const exited = new Promise((r) => prom!.once('exit', r));
      prom.kill('SIGTERM');
      const killed = await Promise.race([exited.then(() => true), new Promise((r) => setTimeout(() => r(false), 10_000))]);
      if (!killed) {
        prom.kill('SIGKILL');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      }
    }
    if (promDir) rmSync(promDir, { recursive: true, force: true });
    await p?.close();
  });

  it('ends the three sessions succeeded, timed_out and failed/oom_killed', () => {
    expect(finals.ok.at(-1)).toMatchObject({ type: 'FINISH', data: { status: 'succeeded', reason: 'finished' } });
    expect(finals.timeout.at(-1)).toMatchObject({ type: 'FINISH', data: { status: 'timed_out', reason: 'timeout' } });
    // Podman on cgroup v1 never sets OOMKilled: this proves the exit-137 rule in outcomes.ts holds here
    expect(finals.oom.at(-1), JSON.stringify(finals.oom.slice(-4))).toMatchObject({
      type: 'FINISH',
      data: { status: 'failed', reason: 'oom_killed', exitCode: 137 },
    });
  });

  it('counts them exactly at GET /metrics, with label values that never happened at 0', () => {
    const v = (name: string, labels: Record<string, string> = {}) => valueOf(exposition, name, labels);
    expect(v('mgx_sessions_total', { status: 'succeeded' })).toBe(1);
    expect(v('mgx_sessions_total', { status: 'timed_out' })).toBe(1);
    expect(v('mgx_sessions_total', { status: 'failed' })).toBe(1);
    expect(v('mgx_sessions_total', { status: 'cancelled' })).toBe(0);
    expect(v('mgx_session_timeouts_total')).toBe(1);
    expect(v('mgx_container_oom_kills_total')).toBe(1);
    expect(v('mgx_container_exits_total', { reason: 'oom_killed' })).toBe(1);
    expect(v('mgx_container_exits_total', { reason: 'killed' })).toBe(1); // the timeout: stopped by mgx
    expect(v('mgx_container_exits_total', { reason: 'exited' })).toBe(1);
    expect(v('mgx_session_end_reasons_total', { reason: 'oom_killed' })).toBe(1);
    expect(v('mgx_session_end_reasons_total', { reason: 'cancelled' })).toBe(0);
    expect(v('mgx_runtime_errors_total', { op: 'create' })).toBe(0);
    expect(v('mgx_container_create_duration_seconds_count')).toBe(3);
    expect(v('mgx_container_start_duration_seconds_count')).toBe(3);
    expect(v('mgx_containers_running')).toBe(0);
    // the fleet, read from the store at each scrape, and the claims of this worker
    expect(v('mgx_workers', { state: 'alive' })).toBe(1);
    expect(v('mgx_workers', { state: 'dead' })).toBe(0);
    expect(v('mgx_workers', { state: 'draining' })).toBe(0);
    expect(v('mgx_workers', { state: 'stopped' })).toBe(0);
    // this all-in-one server is the fleet's one worker: it registered itself with its capacity
    expect(v('mgx_fleet_capacity')).toBe(p!.server.settings.scheduler.maxConcurrent);
    expect(v('mgx_fleet_in_use')).toBe(0);
    expect(v('mgx_sessions_lost_total')).toBe(0);
    expect(v('mgx_session_end_reasons_total', { reason: 'lost' })).toBe(0);
    expect(v('mgx_claim_duration_seconds_count')).toBeGreaterThanOrEqual(3);
    // usage, at each end: the OOM-killed session at its 64 MiB limit
    expect(v('mgx_session_cpu_seconds_count')).toBe(3);
    expect(v('mgx_session_memory_peak_bytes_count')).toBe(3);
    expect(v('mgx_session_memory_peak_bytes_sum')).toBeGreaterThanOrEqual(64 * 1024 ** 2);
    // nothing runs: the memory gauges are back at 0
    expect(v('mgx_agent_memory_bytes')).toBe(0);
    expect(v('mgx_sessions_near_memory_limit')).toBe(0);
    // no tokens: one caller, the default tenant, under its own label
    expect(v('mgx_tenant_cpu_seconds_total', { tenant: 'default' })).toBeGreaterThan(0);
    expect(v('mgx_tenant_cpu_seconds_total', { tenant: 'other' })).toBe(0);
    const build = exposition.find((s) => s.name === 'mgx_build_info');
    expect(build).toMatchObject({ value: 1, labels: { node: process.version } });
    expect(build?.labels.version).toMatch(/^\d+\.\d+\.\d+/);
  });

  it("passes Prometheus' own lint (promtool check metrics), after real sessions moved every kind of metric", () => {
    // Node's default metrics are served too: they are what promtool rejected before
    expect(body).toMatch(/^# TYPE mgx_nodejs_active_handles gauge$/m);
    const lint = promlint(body);
    expect(lint, lint.problems).toEqual({ status: 0, problems: '' });
  });

  it('is scraped by a real Prometheus, which answers PromQL with the same counts and loads the alert rules', async () => {
    const server = p!.server;
    promDir = mkdtempSync(join(tmpdir(), 'mgx-prometheus-'));
    const port = await freeLoopbackPort();
    const target = new URL(server.url).host;
    // YAML is a superset of JSON: no hand-written YAML to get wrong
    const config = {
      global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
      rule_files: [ALERTS],
      scrape_configs: [{ job_name: 'mgx', metrics_path: '/metrics', static_configs: [{ targets: [target], labels: { role: 'server' } }] }],
    };
    const configFile = join(promDir, 'prometheus.yml');
    writeFileSync(configFile, JSON.stringify(config, null, 2));
    mustRun(PROMTOOL, ['check', 'config', configFile]);

    prom = spawn(
      PROMETHEUS,
      [
        `--config.file=${configFile}`,
        `--storage.tsdb.path=${join(promDir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ],
      { cwd: promDir, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const keep = (b: Buffer) => (promLog = (promLog + b.toString()).slice(-8000));
    prom.stdout!.on('data', keep);
    prom.stderr!.on('data', keep);
    const api = `http://127.0.0.1:${port}/api/v1`;
    const alive = () => {
      if (prom!.exitCode !== null || prom!.signalCode !== null)
        throw new Error(`prometheus exited (${prom!.exitCode ?? prom!.signalCode}):\n${promLog}`);
    };

    type Targets = { data: { activeTargets: { labels: Record<string, string>; health: string; lastError: string }[] } };
    await until(`Prometheus to scrape ${target} (log: ${promLog.slice(-500)})`, async () => {
      alive();
      const t = await getJson<Targets>(`${api}/targets`);
      return t.data.activeTargets.find((x) => x.labels.job === 'mgx' && x.health === 'up');
    });

    type Query = { status: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
    const query = (expr: string) => getJson<Query>(`${api}/query?query=${encodeURIComponent(expr)}`);
    // the first scrape may land just after the target turns up: wait for a result, then assert it
    const scalar = (expr: string) =>
      until(`a result for ${expr}`, async () => {
        alive();
        const r = await query(expr);
        return r.data.result.length === 1 ? Number(r.data.result[0]!.value[1]) : undefined;
      });
    expect(await scalar('mgx_sessions_total{status="succeeded"}')).toBe(1);
    expect(await scalar('sum(mgx_sessions_total)')).toBe(3);
    expect(await scalar('mgx_container_oom_kills_total')).toBe(1);
    expect(await scalar('up{job="mgx"}')).toBe(1);
    expect(await scalar('mgx_session_timeouts_total')).toBe(1);
    expect(await scalar('mgx_workers{state="alive"}')).toBe(1);
    expect(await scalar('mgx_fleet_capacity')).toBe(p!.server.settings.scheduler.maxConcurrent);

    // every alert evaluates against real series without error
    type Rules = { data: { groups: { rules: { name: string; health: string; lastError?: string }[] }[] } };
    const rules = await until('every alert rule evaluated ok', async () => {
      const r = await getJson<Rules>(`${api}/rules?type=alert`);
      const all = r.data.groups.flatMap((g) => g.rules);
      return all.length > 0 && all.every((x) => x.health === 'ok') ? all : undefined;
    });
    expect(rules.map((r) => r.name).sort()).toEqual([
      'MgxConcurrencySaturated',
      'MgxContainerOOMKilled',
      'MgxContainerStartSlow',
      'MgxRuntimeErrors',
      'MgxSessionTimeoutRateHigh',
      'MgxSessionsNearMemoryLimit',
      'MgxTargetDown',
      'MgxWarmPoolEmpty',
      'MgxWorkerLost',
    ]);

    // every dashboard query parses and runs (Grafana's variables replaced with what they expand to)
    const dashboard = JSON.parse(readFileSync(join(INFRA, 'grafana', 'mgx-dashboard.json'), 'utf8')) as {
      panels: { title: string; datasource?: { uid: string }; targets?: { expr: string }[] }[];
      templating: { list: { name: string; type: string }[] };
    };
    expect(dashboard.templating.list).toContainEqual(expect.objectContaining({ name: 'DS_PROMETHEUS', type: 'datasource' }));
    const exprs = dashboard.panels.flatMap((panel) =>
      (panel.targets ?? []).map((t) => ({ title: panel.title, uid: panel.datasource?.uid, expr: t.expr })),
    );
    expect(exprs.length).toBeGreaterThan(15);
    for (const { title, uid, expr } of exprs) {
      expect(uid, title).toBe('${DS_PROMETHEUS}');
      const r = await query(expr.replaceAll('$__rate_interval', '1m').replaceAll('$job', '.*').replaceAll('$instance', '.*'));
      expect(r.status, `${title}: ${expr}`).toBe('success');
    }
  });
});
