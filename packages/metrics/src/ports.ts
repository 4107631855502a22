/**
 * The metrics port every package takes, like the Logger port: instruments by what they do
 * (count, set, observe), never by the library behind them. The Prometheus adapter
 * (prometheus-metrics.ts) satisfies it and is wired in by the apps; tests and tools that do
 * not look at metrics pass `noopMetrics`. No prom-client type reaches a consumer of this file.
 */

/** One value per label name; every label of an instrument is given on every call. */
export type LabelValues<L extends string> = Record<L, string>;

/** A monotonically increasing count. */
export interface CounterPort<L extends string = never> {
  inc(value?: number): void;
  inc(labels: LabelValues<L>, value?: number): void;
}

/** A value that goes up and down. */
export interface GaugePort<L extends string = never> {
  set(value: number): void;
  set(labels: LabelValues<L>, value: number): void;
  inc(value?: number): void;
  inc(labels: LabelValues<L>, value?: number): void;
  dec(value?: number): void;
  dec(labels: LabelValues<L>, value?: number): void;
}

/** A distribution of observed values (durations in seconds). */
export interface HistogramPort<L extends string = never> {
  observe(value: number): void;
  observe(labels: LabelValues<L>, value: number): void;
}

/** Every instrument of the platform, under the names its packages use. */
export interface Metrics {
  containerCreate: HistogramPort;
  containerStart: HistogramPort;
  containerRun: HistogramPort;
  containerTeardown: HistogramPort;
  containerExits: CounterPort<'reason'>;
  sessionTimeouts: CounterPort;
  oomKills: CounterPort;
  runtimeErrors: CounterPort<'op'>;
  sessions: CounterPort<'status'>;
  sessionReasons: CounterPort<'reason'>;
  ingestEvents: CounterPort;
  ingestRejected: CounterPort;
  rejections: CounterPort<'cause'>;
  queueDepth: GaugePort;
  queueWait: HistogramPort;
  concurrencyLimit: GaugePort;
  concurrencyInUse: GaugePort;
  containersRunning: GaugePort;
  finishDetect: HistogramPort;
  sseSubscribers: GaugePort;
  poolReady: GaugePort<'spec'>;
  poolTarget: GaugePort;
  poolHits: CounterPort;
  poolMisses: CounterPort<'reason'>;
  /** Workers of the fleet by state, as the shared store has them (fleet-wide: every process reports the same). */
  workers: GaugePort<'state'>;
  /** Slots of the workers that hold a lease (alive or draining), fleet-wide. */
  fleetCapacity: GaugePort;
  /** Slots those workers use, as of their last heartbeat, fleet-wide. */
  fleetInUse: GaugePort;
  /** Sessions that ended `lost` (their worker died), counted by the process that settled them. */
  sessionsLost: CounterPort;
  /** Time one claim of the queue took in the store. */
  claimDuration: HistogramPort;
  /** Preview connections open to apps in agent containers. */
  previewConnections: GaugePort;
  /** Preview connections by result: opened, refused (port), limited, unreachable. */
  previewConnectionsTotal: CounterPort<'result'>;
  /** Preview bytes: in (client to app) and out (app to client). */
  previewBytes: CounterPort<'direction'>;
  /** Tokens of model calls through the gateway, by provider, model and kind (prompt, completion). */
  modelTokens: CounterPort<'provider' | 'model' | 'kind'>;
  /** Model calls through the gateway, by provider and status (ok, error, refused). */
  modelCalls: CounterPort<'provider' | 'status'>;
  /** Time a model call took, request to the end of its response. */
  modelCallDuration: HistogramPort<'provider' | 'model'>;
  /** Model calls the gateway refused, by reason (budget, model). */
  modelRefusals: CounterPort<'reason'>;
  /** CONNECTs through the egress proxy, by outcome (allowed, denied, failed). */
  egressConnections: CounterPort<'outcome'>;
  /** CPU seconds one session's container used, observed at its end. */
  sessionCpuSeconds: HistogramPort;
  /** Peak memory of one session's container in bytes, observed at its end. */
  sessionMemoryPeak: HistogramPort;
  /** Memory used by this worker's running agent containers, as last sampled. */
  agentMemory: GaugePort;
  /** The memory limits of those containers, summed. */
  agentMemoryLimit: GaugePort;
  /** Running sessions of this worker at 90 % of their memory limit or more, as last sampled. */
  sessionsNearMemoryLimit: GaugePort;
  /** WARNING events raised, by kind. */
  resourceWarnings: CounterPort<'kind'>;
  /** Time one round of stats readings took from the engine (every running session of this worker). */
  usageSample: HistogramPort;
  /** Container stats readings taken (the rounds' sessions that answered). */
  usageReadings: CounterPort;
  /**
   * Per tenant, counted at each session's end: only where the tenant set is bounded (the tenants
   * of the configured tokens); any other tenant is counted under `other`.
   */
  tenantCpuSeconds: CounterPort<'tenant'>;
  tenantMemoryGiBSeconds: CounterPort<'tenant'>;
}

/** Runs `work` and observes how long it took in seconds, also when it fails. */
export async function timed<T>(histogram: HistogramPort, work: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  try {
    return await work();
  } finally {
    histogram.observe((performance.now() - t0) / 1000);
  }
}

const noop = (): void => {};
const counter: CounterPort<string> = { inc: noop };
const gauge: GaugePort<string> = { set: noop, inc: noop, dec: noop };
const histogram: HistogramPort<string> = { observe: noop };

/** Metrics that record nothing: for tests and tools that do not look at them. */
export const noopMetrics: Metrics = {
  containerCreate: histogram,
  containerStart: histogram,
  containerRun: histogram,
  containerTeardown: histogram,
  containerExits: counter,
  sessionTimeouts: counter,
  oomKills: counter,
  runtimeErrors: counter,
  sessions: counter,
  sessionReasons: counter,
  ingestEvents: counter,
  ingestRejected: counter,
  rejections: counter,
  queueDepth: gauge,
  queueWait: histogram,
  concurrencyLimit: gauge,
  concurrencyInUse: gauge,
  containersRunning: gauge,
  finishDetect: histogram,
  sseSubscribers: gauge,
  poolReady: gauge,
  poolTarget: gauge,
  poolHits: counter,
  poolMisses: counter,
  workers: gauge,
  fleetCapacity: gauge,
  fleetInUse: gauge,
  sessionsLost: counter,
  claimDuration: histogram,
  previewConnections: gauge,
  previewConnectionsTotal: counter,
  previewBytes: counter,
  modelTokens: counter,
  modelCalls: counter,
  modelCallDuration: histogram,
  modelRefusals: counter,
  egressConnections: counter,
  sessionCpuSeconds: histogram,
  sessionMemoryPeak: histogram,
  agentMemory: gauge,
  agentMemoryLimit: gauge,
  sessionsNearMemoryLimit: gauge,
  resourceWarnings: counter,
  usageSample: histogram,
  usageReadings: counter,
  tenantCpuSeconds: counter,
  tenantMemoryGiBSeconds: counter,
};
