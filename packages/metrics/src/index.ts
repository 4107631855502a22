export { createMetrics, LIFECYCLE_BUCKETS, FAST_BUCKETS, RUNTIME_OPS, EXIT_REASONS, POOL_MISS_REASONS } from './metrics.js';
export type { Metrics, BuildInfo } from './metrics.js';
