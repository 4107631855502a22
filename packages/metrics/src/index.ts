export type { Metrics, CounterPort, GaugePort, HistogramPort, LabelValues } from './ports.js';
export { noopMetrics, timed } from './ports.js';
export {
  createPrometheusMetrics,
  createMetrics,
  LIFECYCLE_BUCKETS,
  FAST_BUCKETS,
  RUNTIME_OPS,
  EXIT_REASONS,
  POOL_MISS_REASONS,
  WORKER_STATES,
  STORE_BUCKETS,
  CPU_SECONDS_BUCKETS,
  MEMORY_BUCKETS,
} from './prometheus-metrics.js';
export type { PrometheusMetrics, PrometheusOptions, BuildInfo } from './prometheus-metrics.js';
