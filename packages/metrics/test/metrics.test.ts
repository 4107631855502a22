import { describe, expect, it } from 'vitest';
import { TERMINAL_REASONS, TERMINAL_STATUSES, WARNING_KINDS } from '@mgx/agent-sdk';
import {
  createPrometheusMetrics,
  EXIT_REASONS,
  noopMetrics,
  POOL_MISS_REASONS,
  RUNTIME_OPS,
  timed,
  WORKER_STATES,
  type Metrics,
} from '../src/index.js';

const build = { version: '1.2.3', node: 'v20.0.0' };

/** Every instrument of the port, with the series it is exported as (dashboards and alerts use these names). */
const EXPORTED: Record<keyof Metrics, { name: string; type: 'counter' | 'gauge' | 'histogram' }> = {
  containerCreate: { name: 'mgx_container_create_duration_seconds', type: 'histogram' },
  containerStart: { name: 'mgx_container_start_duration_seconds', type: 'histogram' },
  containerRun: { name: 'mgx_container_run_duration_seconds', type: 'histogram' },
  containerTeardown: { name: 'mgx_container_teardown_duration_seconds', type: 'histogram' },
  containerExits: { name: 'mgx_container_exits_total', type: 'counter' },
  sessionTimeouts: { name: 'mgx_session_timeouts_total', type: 'counter' },
  oomKills: { name: 'mgx_container_oom_kills_total', type: 'counter' },
  runtimeErrors: { name: 'mgx_runtime_errors_total', type: 'counter' },
  sessions: { name: 'mgx_sessions_total', type: 'counter' },
  sessionReasons: { name: 'mgx_session_end_reasons_total', type: 'counter' },
  ingestEvents: { name: 'mgx_ingest_events_total', type: 'counter' },
  ingestRejected: { name: 'mgx_ingest_rejected_total', type: 'counter' },
  rejections: { name: 'mgx_session_rejections_total', type: 'counter' },
  queueDepth: { name: 'mgx_session_queue_depth', type: 'gauge' },
  queueWait: { name: 'mgx_session_queue_wait_seconds', type: 'histogram' },
  concurrencyLimit: { name: 'mgx_concurrency_limit', type: 'gauge' },
  concurrencyInUse: { name: 'mgx_concurrency_in_use', type: 'gauge' },
  containersRunning: { name: 'mgx_containers_running', type: 'gauge' },
  finishDetect: { name: 'mgx_finish_detect_seconds', type: 'histogram' },
  sseSubscribers: { name: 'mgx_sse_subscribers', type: 'gauge' },
  poolReady: { name: 'mgx_warm_pool_ready', type: 'gauge' },
  poolTarget: { name: 'mgx_warm_pool_target', type: 'gauge' },
  poolHits: { name: 'mgx_warm_pool_hits_total', type: 'counter' },
  poolMisses: { name: 'mgx_warm_pool_misses_total', type: 'counter' },
  workers: { name: 'mgx_workers', type: 'gauge' },
  fleetCapacity: { name: 'mgx_fleet_capacity', type: 'gauge' },
  fleetInUse: { name: 'mgx_fleet_in_use', type: 'gauge' },
  sessionsLost: { name: 'mgx_sessions_lost_total', type: 'counter' },
  claimDuration: { name: 'mgx_claim_duration_seconds', type: 'histogram' },
  previewConnections: { name: 'mgx_preview_connections', type: 'gauge' },
  previewConnectionsTotal: { name: 'mgx_preview_connections_total', type: 'counter' },
  previewBytes: { name: 'mgx_preview_bytes_total', type: 'counter' },
  modelTokens: { name: 'mgx_model_tokens_total', type: 'counter' },
  modelCalls: { name: 'mgx_model_calls_total', type: 'counter' },
  modelCallDuration: { name: 'mgx_model_call_duration_seconds', type: 'histogram' },
  modelRefusals: { name: 'mgx_model_refusals_total', type: 'counter' },
  egressConnections: { name: 'mgx_egress_connections_total', type: 'counter' },
  sessionCpuSeconds: { name: 'mgx_session_cpu_seconds', type: 'histogram' },
  sessionMemoryPeak: { name: 'mgx_session_memory_peak_bytes', type: 'histogram' },
  agentMemory: { name: 'mgx_agent_memory_bytes', type: 'gauge' },
  agentMemoryLimit: { name: 'mgx_agent_memory_limit_bytes', type: 'gauge' },
  sessionsNearMemoryLimit: { name: 'mgx_sessions_near_memory_limit', type: 'gauge' },
  resourceWarnings: { name: 'mgx_resource_warnings_total', type: 'counter' },
  usageSample: { name: 'mgx_usage_sample_duration_seconds', type: 'histogram' },
  usageReadings: { name: 'mgx_usage_readings_total', type: 'counter' },
  tenantCpuSeconds: { name: 'mgx_tenant_cpu_seconds_total', type: 'counter' },
  tenantMemoryGiBSeconds: { name: 'mgx_tenant_memory_gib_seconds_total', type: 'counter' },
};

/** `# TYPE` lines of an exposition: metric name to type. */
function typesOf(text: string): Map<string, string> {
  const types = new Map<string, string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) types.set(m[1]!, m[2]!);
  return types;
}

/** The value of the sample line `series` (name with its labels, as printed), or undefined. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** Every call shape the packages use, through the port only. */
function useEveryInstrument(m: Metrics): void {
  m.containerCreate.observe(0.2);
  m.containerStart.observe(0.1);
  m.containerRun.observe(3);
  m.containerTeardown.observe(0.5);
  m.containerExits.inc({ reason: 'oom_killed' });
  m.sessionTimeouts.inc();
  m.oomKills.inc();
  m.runtimeErrors.inc({ op: 'create' });
  m.sessions.inc({ status: 'succeeded' });
  m.sessionReasons.inc({ reason: 'finished' });
  m.ingestEvents.inc(5);
  m.ingestEvents.inc();
  m.ingestRejected.inc(2);
  m.rejections.inc({ cause: 'queue_full' });
  m.queueDepth.set(4);
  m.queueWait.observe(1.5);
  m.concurrencyLimit.set(8);
  m.concurrencyInUse.set(3);
  m.containersRunning.inc();
  m.containersRunning.inc();
  m.containersRunning.dec();
  m.finishDetect.observe(0.004);
  m.sseSubscribers.inc();
  m.poolReady.set({ spec: 'mem=256m' }, 2);
  m.poolTarget.set(2);
  m.poolHits.inc();
  m.poolMisses.inc({ reason: 'empty' });
  m.workers.set({ state: 'alive' }, 2);
  m.workers.set({ state: 'dead' }, 1);
  m.fleetCapacity.set(8);
  m.fleetInUse.set(5);
  m.sessionsLost.inc();
  m.claimDuration.observe(0.003);
  m.previewConnections.inc();
  m.previewConnectionsTotal.inc({ result: 'opened' });
  m.previewBytes.inc({ direction: 'out' }, 10);
  m.sessionCpuSeconds.observe(2.1);
  m.sessionMemoryPeak.observe(200 * 1024 ** 2);
  m.agentMemory.inc(300);
  m.agentMemory.dec(100);
  m.agentMemoryLimit.inc(1000);
  m.sessionsNearMemoryLimit.inc();
  m.resourceWarnings.inc({ kind: 'memory_near_limit' });
  m.usageSample.observe(0.03);
  m.usageReadings.inc(12);
  m.tenantCpuSeconds.inc({ tenant: 'acme' }, 2.5);
  m.tenantMemoryGiBSeconds.inc({ tenant: 'other' }, 0.25);
}

describe('noopMetrics', () => {
  it('has every instrument of the port and takes every call shape without recording anything', () => {
    expect(Object.keys(noopMetrics).sort()).toEqual(Object.keys(EXPORTED).sort());
    expect(() => useEveryInstrument(noopMetrics)).not.toThrow();
    expect(noopMetrics.sessions.inc({ status: 'failed' }, 3)).toBeUndefined();
    expect(noopMetrics.poolReady.dec({ spec: 'x' }, 1)).toBeUndefined();
  });
});

describe('createPrometheusMetrics', () => {
  it('registers every instrument of the port under its exported name and type', async () => {
    const m = createPrometheusMetrics(build, { defaultMetrics: false });
    const types = typesOf(await m.render());
    for (const [key, { name, type }] of Object.entries(EXPORTED)) {
      expect(types.get(name), `${key} as ${name}`).toBe(type);
      expect(m[key as keyof Metrics], key).toBe(m.registry.getSingleMetric(name));
    }
    // the instruments above and build info, nothing else when the defaults are off
    expect([...types.keys()].sort()).toEqual([...Object.values(EXPORTED).map((e) => e.name), 'mgx_build_info'].sort());
  });

  it('renders what the port records', async () => {
    const m = createPrometheusMetrics(build, { defaultMetrics: false });
    useEveryInstrument(m);
    const text = await m.render();
    expect(sample(text, 'mgx_container_exits_total{reason="oom_killed"}')).toBe(1);
    expect(sample(text, 'mgx_session_timeouts_total')).toBe(1);
    expect(sample(text, 'mgx_runtime_errors_total{op="create"}')).toBe(1);
    expect(sample(text, 'mgx_sessions_total{status="succeeded"}')).toBe(1);
    expect(sample(text, 'mgx_ingest_events_total')).toBe(6);
    expect(sample(text, 'mgx_ingest_rejected_total')).toBe(2);
    expect(sample(text, 'mgx_session_rejections_total{cause="queue_full"}')).toBe(1);
    expect(sample(text, 'mgx_session_queue_depth')).toBe(4);
    expect(sample(text, 'mgx_concurrency_in_use')).toBe(3);
    expect(sample(text, 'mgx_containers_running')).toBe(1);
    expect(sample(text, 'mgx_warm_pool_ready{spec="mem=256m"}')).toBe(2);
    expect(sample(text, 'mgx_warm_pool_misses_total{reason="empty"}')).toBe(1);
    expect(sample(text, 'mgx_container_create_duration_seconds_count')).toBe(1);
    expect(sample(text, 'mgx_container_create_duration_seconds_sum')).toBe(0.2);
    expect(sample(text, 'mgx_finish_detect_seconds_bucket{le="0.005"}')).toBe(1);
    expect(sample(text, 'mgx_build_info{version="1.2.3",node="v20.0.0"}')).toBe(1);
    expect(sample(text, 'mgx_workers{state="alive"}')).toBe(2);
    expect(sample(text, 'mgx_workers{state="dead"}')).toBe(1);
    expect(sample(text, 'mgx_fleet_capacity')).toBe(8);
    expect(sample(text, 'mgx_fleet_in_use')).toBe(5);
    expect(sample(text, 'mgx_sessions_lost_total')).toBe(1);
    expect(sample(text, 'mgx_claim_duration_seconds_bucket{le="0.005"}')).toBe(1);
    expect(sample(text, 'mgx_session_cpu_seconds_bucket{le="5"}')).toBe(1);
    expect(sample(text, 'mgx_session_cpu_seconds_bucket{le="2"}')).toBe(0);
    expect(sample(text, `mgx_session_memory_peak_bytes_bucket{le="${256 * 1024 ** 2}"}`)).toBe(1);
    expect(sample(text, 'mgx_agent_memory_bytes')).toBe(200);
    expect(sample(text, 'mgx_sessions_near_memory_limit')).toBe(1);
    expect(sample(text, 'mgx_resource_warnings_total{kind="memory_near_limit"}')).toBe(1);
    expect(sample(text, 'mgx_usage_readings_total')).toBe(12);
    expect(sample(text, 'mgx_tenant_cpu_seconds_total{tenant="acme"}')).toBe(2.5);
    expect(sample(text, 'mgx_tenant_memory_gib_seconds_total{tenant="other"}')).toBe(0.25);
  });

  it('exports per-tenant counters only for the tenants it is given, and `other`, each from 0', async () => {
    const text = await createPrometheusMetrics(build, { defaultMetrics: false, tenants: ['acme', 'globex'] }).render();
    for (const tenant of ['acme', 'globex', 'other']) {
      expect(sample(text, `mgx_tenant_cpu_seconds_total{tenant="${tenant}"}`), tenant).toBe(0);
      expect(sample(text, `mgx_tenant_memory_gib_seconds_total{tenant="${tenant}"}`), tenant).toBe(0);
    }
    expect(text.match(/^mgx_tenant_cpu_seconds_total\{/gm)).toHaveLength(3);
  });

  it('runs the render refreshers before rendering, and renders when one fails', async () => {
    const m = createPrometheusMetrics(build, { defaultMetrics: false });
    let calls = 0;
    m.onRender(async () => {
      calls++;
      m.fleetCapacity.set(calls * 10);
    });
    m.onRender(async () => {
      throw new Error('the store is away');
    });
    expect(sample(await m.render(), 'mgx_fleet_capacity')).toBe(10);
    expect(sample(await m.render(), 'mgx_fleet_capacity')).toBe(20);
  });

  it('timed observes the duration of work, also when it fails', async () => {
    const m = createPrometheusMetrics(build, { defaultMetrics: false });
    expect(await timed(m.claimDuration, async () => 'claimed')).toBe('claimed');
    await expect(
      timed(m.claimDuration, async () => {
        throw new Error('store down');
      }),
    ).rejects.toThrow('store down');
    expect(sample(await m.render(), 'mgx_claim_duration_seconds_count')).toBe(2);
  });

  it('starts every known label value at 0', async () => {
    const text = await createPrometheusMetrics(build, { defaultMetrics: false }).render();
    for (const status of TERMINAL_STATUSES) expect(sample(text, `mgx_sessions_total{status="${status}"}`), status).toBe(0);
    for (const reason of TERMINAL_REASONS) expect(sample(text, `mgx_session_end_reasons_total{reason="${reason}"}`), reason).toBe(0);
    for (const reason of EXIT_REASONS) expect(sample(text, `mgx_container_exits_total{reason="${reason}"}`), reason).toBe(0);
    for (const op of RUNTIME_OPS) expect(sample(text, `mgx_runtime_errors_total{op="${op}"}`), op).toBe(0);
    for (const reason of POOL_MISS_REASONS) expect(sample(text, `mgx_warm_pool_misses_total{reason="${reason}"}`), reason).toBe(0);
    for (const state of WORKER_STATES) expect(sample(text, `mgx_workers{state="${state}"}`), state).toBe(0);
    for (const kind of WARNING_KINDS) expect(sample(text, `mgx_resource_warnings_total{kind="${kind}"}`), kind).toBe(0);
    for (const cause of ['queue_full', 'invalid_input', 'unauthorized'])
      expect(sample(text, `mgx_session_rejections_total{cause="${cause}"}`), cause).toBe(0);
  });

  it("keeps Node's default metrics under mgx_, named as Prometheus wants: _total only on counters", async () => {
    const text = await createPrometheusMetrics(build).render();
    const types = typesOf(text);
    expect(types.get('mgx_process_cpu_seconds_total')).toBe('counter');
    expect(types.get('mgx_nodejs_active_handles')).toBe('gauge');
    expect(types.has('mgx_nodejs_active_handles_total')).toBe(false);
    expect(types.has('mgx_nodejs_active_requests_total')).toBe(false);
    expect(types.has('mgx_nodejs_active_resources_total')).toBe(false);
    for (const [name, type] of types) {
      expect(name, name).toMatch(/^mgx_[a-z0-9_]+$/);
      expect(name.endsWith('_total'), `${name} is a ${type}`).toBe(type === 'counter');
      expect(text, `${name} has help`).toMatch(new RegExp(`^# HELP ${name} \\S`, 'm'));
    }
  });

  it('serves the exposition format of Prometheus', () => {
    expect(createPrometheusMetrics(build, { defaultMetrics: false }).contentType).toMatch(/^text\/plain; version=0\.0\.4/);
  });

  it('gives every instance its own registry', async () => {
    const a = createPrometheusMetrics(build, { defaultMetrics: false });
    const b = createPrometheusMetrics(build, { defaultMetrics: false });
    a.poolHits.inc();
    expect(sample(await a.render(), 'mgx_warm_pool_hits_total')).toBe(1);
    expect(sample(await b.render(), 'mgx_warm_pool_hits_total')).toBe(0);
  });
});
