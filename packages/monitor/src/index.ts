export { Monitor } from './monitor.js';
export type { MonitorOptions, Trigger } from './monitor.js';
export { systemClock } from './clock.js';
export type { Clock } from './clock.js';
export { outcomeFromAgentFinish, outcomeFromExit, outcomeOfRecord, finishDataOf, SIGKILL_EXIT } from './outcomes.js';
export { SessionLifecycle } from './lifecycle.js';
export type { Decision, DecideStep, FinishStep, EndStep, LifecycleDeps } from './lifecycle.js';
export { UsageMeter, MEMORY_WARN_RATIO, CPU_SATURATED_PERCENT } from './usage.js';
export type { UsageMeterOptions, SampleResult } from './usage.js';
