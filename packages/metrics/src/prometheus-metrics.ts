import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { TERMINAL_REASONS, TERMINAL_STATUSES, WARNING_KINDS } from '@mgx/agent-sdk';
import type { Metrics } from './ports.js';

/** Buckets for container lifecycles: 50 ms to 30 minutes, not web-request sized. */
export const LIFECYCLE_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800];
/** Buckets for fast paths measured in milliseconds (finish detection). */
export const FAST_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export const RUNTIME_OPS = [
  'ping',
  'info',
  'image_inspect',
  'create',
  'start',
  'wait',
  'inspect',
  'kill',
  'remove',
  'logs',
  'list',
  'exec',
  'rename',
  'stats',
] as const;
/** empty: none ready; no_pool: no pool for the session's limits; workspace_exists: a pooled container can only take a new workspace. */
export const POOL_MISS_REASONS = ['empty', 'no_pool', 'workspace_exists'] as const;
export const EXIT_REASONS = ['exited', 'oom_killed', 'killed'] as const;
/** The states of a fleet's workers (WorkerState of the store), each exported from 0. */
export const WORKER_STATES = ['alive', 'draining', 'dead', 'stopped'] as const;
/** How a preview connection attempt ended. */
export const PREVIEW_RESULTS = ['opened', 'refused', 'limited', 'unreachable'] as const;
/** Buckets for one store call (a claim): 1 ms to 10 s. */
export const STORE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Buckets for a session's CPU seconds: 0.1 s to 4 hours of one CPU. */
export const CPU_SECONDS_BUCKETS = [0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 14400];
/** Buckets for a session's peak memory: 16 MiB to 32 GiB, doubling. */
export const MEMORY_BUCKETS = Array.from({ length: 12 }, (_, i) => 16 * 1024 ** 2 * 2 ** i);

export interface BuildInfo {
  version: string;
  node: string;
}

export interface PrometheusOptions {
  /** Node's process metrics (CPU, memory, event loop, GC, handles) under mgx_; on by default. */
  defaultMetrics?: boolean;
  /**
   * The tenants whose usage is counted under their own label (the tenants of the configured
   * tokens: a bounded set), each exported from 0; any other tenant is counted as `other`, so a
   * caller cannot grow the number of series.
   */
  tenants?: readonly string[];
}

/**
 * Node's default metrics, on `registry`, without the gauges whose names end in `_total`.
 * prom-client exports `nodejs_active_{handles,requests,resources}_total` as gauges, and
 * Prometheus reserves `_total` for counters (`promtool check metrics` rejects them).
 * collectDefaultMetrics has no option to rename or leave out a metric, so they are removed from
 * the registry right after it registers them (a rename would need a second registry and a
 * rewrite of prom-client's text output). Nothing is lost: each is the sum of its sibling gauge
 * by type, which stays: `sum(mgx_nodejs_active_handles)`.
 */
function collectLintCleanDefaults(registry: Registry, prefix: string): void {
  collectDefaultMetrics({ register: registry, prefix });
  for (const metric of registry.getMetricsAsArray()) {
    if (metric instanceof Gauge && metric.name.endsWith('_total')) registry.removeSingleMetric(metric.name);
  }
}

/**
 * The Prometheus adapter of the Metrics port: every metric of the platform on its own Registry
 * (no global state), so tests and several servers in one process never share counters. Known
 * label values start at 0. The apps serve `render()` with `contentType` at /metrics.
 */
export function createPrometheusMetrics(build: BuildInfo, options: PrometheusOptions = {}) {
  const registry = new Registry();
  if (options.defaultMetrics !== false) collectLintCleanDefaults(registry, 'mgx_');
  const r = [registry];
  const refreshers: Array<() => Promise<void>> = [];

  const m = {
    registry,
    contentType: registry.contentType,
    /**
     * The exposition text of every metric, for GET /metrics, after the refreshers (`onRender`)
     * have set the gauges they own. A refresher that fails leaves its gauges as they were.
     */
    render: async () => {
      await Promise.all(refreshers.map((refresh) => refresh().catch(() => undefined)));
      return registry.metrics();
    },
    /**
     * Runs `refresh` before each render: for gauges read from elsewhere at scrape time (the fleet's
     * workers from the store). It reports its own failures; render ignores them.
     */
    onRender: (refresh: () => Promise<void>) => {
      refreshers.push(refresh);
    },
    containerCreate: new Histogram({
      name: 'mgx_container_create_duration_seconds',
      help: 'Time to create an agent container.',
      buckets: LIFECYCLE_BUCKETS,
      registers: r,
    }),
    containerStart: new Histogram({
      name: 'mgx_container_start_duration_seconds',
      help: 'Time the engine took to start an agent container (the start call).',
      buckets: LIFECYCLE_BUCKETS,
      registers: r,
    }),
    containerRun: new Histogram({
      name: 'mgx_container_run_duration_seconds',
      help: 'Time a container ran, start to exit.',
      buckets: LIFECYCLE_BUCKETS,
      registers: r,
    }),
    containerTeardown: new Histogram({
      name: 'mgx_container_teardown_duration_seconds',
      help: 'Time from the terminal decision to the container removed.',
      buckets: LIFECYCLE_BUCKETS,
      registers: r,
    }),
    containerExits: new Counter({
      name: 'mgx_container_exits_total',
      help: 'Agent containers that exited, by how they ended.',
      labelNames: ['reason'] as const,
      registers: r,
    }),
    sessionTimeouts: new Counter({ name: 'mgx_session_timeouts_total', help: 'Sessions ended by their deadline.', registers: r }),
    oomKills: new Counter({
      name: 'mgx_container_oom_kills_total',
      help: 'Agent containers killed for exceeding their memory limit.',
      registers: r,
    }),
    runtimeErrors: new Counter({
      name: 'mgx_runtime_errors_total',
      help: 'Failed container engine calls, by operation.',
      labelNames: ['op'] as const,
      registers: r,
    }),
    sessions: new Counter({
      name: 'mgx_sessions_total',
      help: 'Sessions that reached a terminal state, by status.',
      labelNames: ['status'] as const,
      registers: r,
    }),
    sessionReasons: new Counter({
      name: 'mgx_session_end_reasons_total',
      help: 'Sessions that reached a terminal state, by reason.',
      labelNames: ['reason'] as const,
      registers: r,
    }),
    ingestEvents: new Counter({ name: 'mgx_ingest_events_total', help: 'Agent events received through ingest.', registers: r }),
    ingestRejected: new Counter({ name: 'mgx_ingest_rejected_total', help: 'Agent events refused (size, format, rate).', registers: r }),
    rejections: new Counter({
      name: 'mgx_session_rejections_total',
      help: 'Session requests refused, by cause.',
      labelNames: ['cause'] as const,
      registers: r,
    }),
    queueDepth: new Gauge({ name: 'mgx_session_queue_depth', help: 'Sessions waiting in the queue.', registers: r }),
    queueWait: new Histogram({
      name: 'mgx_session_queue_wait_seconds',
      help: 'Time from sessions.create to claimed by a worker.',
      buckets: LIFECYCLE_BUCKETS,
      registers: r,
    }),
    concurrencyLimit: new Gauge({ name: 'mgx_concurrency_limit', help: 'AGENT_MAX_CONCURRENT_CONTAINERS of this worker.', registers: r }),
    concurrencyInUse: new Gauge({
      name: 'mgx_concurrency_in_use',
      help: 'Sessions this worker holds a slot for (starting or running).',
      registers: r,
    }),
    containersRunning: new Gauge({
      name: 'mgx_containers_running',
      help: 'Agent containers of this worker that are running.',
      registers: r,
    }),
    finishDetect: new Histogram({
      name: 'mgx_finish_detect_seconds',
      help: 'Time from the FINISH event received to the session terminal.',
      buckets: FAST_BUCKETS,
      registers: r,
    }),
    sseSubscribers: new Gauge({ name: 'mgx_sse_subscribers', help: 'Open event-stream subscriptions.', registers: r }),
    poolReady: new Gauge({
      name: 'mgx_warm_pool_ready',
      help: 'Started, idle containers in the warm pool, by spec.',
      labelNames: ['spec'] as const,
      registers: r,
    }),
    poolTarget: new Gauge({
      name: 'mgx_warm_pool_target',
      help: 'Containers the warm pool keeps ready per spec (MGX_WARM_POOL_SIZE).',
      registers: r,
    }),
    poolHits: new Counter({ name: 'mgx_warm_pool_hits_total', help: 'Sessions that started on a warm-pool container.', registers: r }),
    poolMisses: new Counter({
      name: 'mgx_warm_pool_misses_total',
      help: 'Sessions that needed a new container, by why the pool could not serve them.',
      labelNames: ['reason'] as const,
      registers: r,
    }),
    workers: new Gauge({
      name: 'mgx_workers',
      help: 'Workers of the fleet by state, as the shared store has them (the same on every process).',
      labelNames: ['state'] as const,
      registers: r,
    }),
    fleetCapacity: new Gauge({
      name: 'mgx_fleet_capacity',
      help: 'Session slots of the workers that hold a lease (alive or draining), fleet-wide.',
      registers: r,
    }),
    fleetInUse: new Gauge({
      name: 'mgx_fleet_in_use',
      help: 'Session slots in use on the workers that hold a lease, as of their last heartbeat, fleet-wide.',
      registers: r,
    }),
    sessionsLost: new Counter({
      name: 'mgx_sessions_lost_total',
      help: 'Sessions that ended lost because their worker died, counted by the process that settled them.',
      registers: r,
    }),
    claimDuration: new Histogram({
      name: 'mgx_claim_duration_seconds',
      help: 'Time one claim of the queue took in the store.',
      buckets: STORE_BUCKETS,
      registers: r,
    }),
    previewConnections: new Gauge({
      name: 'mgx_preview_connections',
      help: 'Preview connections (HTTP requests in flight and WebSockets) open to apps in agent containers.',
      registers: r,
    }),
    previewConnectionsTotal: new Counter({
      name: 'mgx_preview_connections_total',
      help: 'Preview connections by result: opened, refused (port outside the range), limited (session allowance), unreachable.',
      labelNames: ['result'] as const,
      registers: r,
    }),
    previewBytes: new Counter({
      name: 'mgx_preview_bytes_total',
      help: 'Bytes carried by previews: in (client to app), out (app to client).',
      labelNames: ['direction'] as const,
      registers: r,
    }),
    modelTokens: new Counter({
      name: 'mgx_model_tokens_total',
      help: 'Tokens of model calls through the gateway, by provider, model and kind (prompt, completion).',
      labelNames: ['provider', 'model', 'kind'] as const,
      registers: r,
    }),
    modelCalls: new Counter({
      name: 'mgx_model_calls_total',
      help: 'Model calls through the gateway, by provider and status (ok, error, refused).',
      labelNames: ['provider', 'status'] as const,
      registers: r,
    }),
    modelCallDuration: new Histogram({
      name: 'mgx_model_call_duration_seconds',
      help: 'Time a model call through the gateway took, request to the end of its response.',
      labelNames: ['provider', 'model'] as const,
      buckets: LIFECYCLE_BUCKETS,
      registers: r,
    }),
    modelRefusals: new Counter({
      name: 'mgx_model_refusals_total',
      help: 'Model calls the gateway refused, by reason (budget, model).',
      labelNames: ['reason'] as const,
      registers: r,
    }),
    egressConnections: new Counter({
      name: 'mgx_egress_connections_total',
      help: 'Connections through the egress proxy, by outcome (allowed, denied, failed).',
      labelNames: ['outcome'] as const,
      registers: r,
    }),
    sessionCpuSeconds: new Histogram({
      name: 'mgx_session_cpu_seconds',
      help: "CPU seconds one session's container used (user and system), observed at its end.",
      buckets: CPU_SECONDS_BUCKETS,
      registers: r,
    }),
    sessionMemoryPeak: new Histogram({
      name: 'mgx_session_memory_peak_bytes',
      help: "Peak memory of one session's container, observed at its end (its limit when OOM-killed).",
      buckets: MEMORY_BUCKETS,
      registers: r,
    }),
    agentMemory: new Gauge({
      name: 'mgx_agent_memory_bytes',
      help: "Memory used by this worker's running agent containers, as last sampled.",
      registers: r,
    }),
    agentMemoryLimit: new Gauge({
      name: 'mgx_agent_memory_limit_bytes',
      help: "The memory limits of this worker's running agent containers, summed.",
      registers: r,
    }),
    sessionsNearMemoryLimit: new Gauge({
      name: 'mgx_sessions_near_memory_limit',
      help: 'Running sessions of this worker using 90 % of their memory limit or more, as last sampled.',
      registers: r,
    }),
    resourceWarnings: new Counter({
      name: 'mgx_resource_warnings_total',
      help: 'WARNING events raised for running sessions, by kind.',
      labelNames: ['kind'] as const,
      registers: r,
    }),
    usageSample: new Histogram({
      name: 'mgx_usage_sample_duration_seconds',
      help: 'Time one round of stats readings of the running agent containers took from the engine.',
      buckets: FAST_BUCKETS,
      registers: r,
    }),
    usageReadings: new Counter({
      name: 'mgx_usage_readings_total',
      help: 'Stats readings of agent containers taken (MGX_USAGE_INTERVAL_SECONDS).',
      registers: r,
    }),
    tenantCpuSeconds: new Counter({
      name: 'mgx_tenant_cpu_seconds_total',
      help: 'CPU seconds used by the sessions of a configured tenant (others: "other"), counted at each end.',
      labelNames: ['tenant'] as const,
      registers: r,
    }),
    tenantMemoryGiBSeconds: new Counter({
      name: 'mgx_tenant_memory_gib_seconds_total',
      help: 'Memory over time (GiB-seconds) used by the sessions of a configured tenant (others: "other").',
      labelNames: ['tenant'] as const,
      registers: r,
    }),
    buildInfo: new Gauge({
      name: 'mgx_build_info',
      help: 'Version of this mgx build.',
      labelNames: ['version', 'node'] as const,
      registers: r,
    }),
  } satisfies Metrics & Record<string, unknown>;

  m.buildInfo.set({ version: build.version, node: build.node }, 1);
  for (const status of TERMINAL_STATUSES) m.sessions.inc({ status }, 0);
  for (const reason of TERMINAL_REASONS) m.sessionReasons.inc({ reason }, 0);
  for (const reason of EXIT_REASONS) m.containerExits.inc({ reason }, 0);
  for (const op of RUNTIME_OPS) m.runtimeErrors.inc({ op }, 0);
  for (const reason of POOL_MISS_REASONS) m.poolMisses.inc({ reason }, 0);
  for (const cause of ['queue_full', 'invalid_input', 'unauthorized']) m.rejections.inc({ cause }, 0);
  for (const state of WORKER_STATES) m.workers.set({ state }, 0);
  for (const result of PREVIEW_RESULTS) m.previewConnectionsTotal.inc({ result }, 0);
  for (const direction of ['in', 'out']) m.previewBytes.inc({ direction }, 0);
  for (const reason of ['budget', 'model']) m.modelRefusals.inc({ reason }, 0);
  for (const outcome of ['allowed', 'denied', 'failed']) m.egressConnections.inc({ outcome }, 0);
  for (const kind of WARNING_KINDS) m.resourceWarnings.inc({ kind }, 0);
  for (const tenant of [...new Set([...(options.tenants ?? []), 'other'])]) {
    m.tenantCpuSeconds.inc({ tenant }, 0);
    m.tenantMemoryGiBSeconds.inc({ tenant }, 0);
  }
  return m;
}

/** The adapter: the Metrics port plus what the apps serve and tests read (prom-client types). */
export type PrometheusMetrics = ReturnType<typeof createPrometheusMetrics>;

/** The name this adapter had before the port existed; the same function. */
export const createMetrics = createPrometheusMetrics;
