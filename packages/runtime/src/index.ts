export type {
  ContainerRuntime,
  ContainerSpec,
  ContainerState,
  ContainerStats,
  ContainerSummary,
  EngineIdentity,
  EngineInfo,
  ExecResult,
  ExitInfo,
  LogLine,
  Mount,
} from './container-runtime.js';
export { exitOf, LABELS } from './container-runtime.js';
export { DockerRuntime, demuxLogs, identityOf, libpodStatsOf, statsOf } from './docker-runtime.js';
export type { DockerRuntimeOptions } from './docker-runtime.js';
export { discoverSocket, parseSocketUrl, describeSocket } from './discovery.js';
export type { SocketAddress, DiscoveryInput } from './discovery.js';
export { RuntimeError, RuntimeErrorCode, classifyEngineError } from './errors.js';
export { hardenedCreateOptions } from './hardening.js';
export { waitForExit, MISSING_EXIT } from './exit-wait.js';
export { ExitEvents } from './exit-events.js';
export type { EngineEvent, EventStream, ExitEventsOptions } from './exit-events.js';
export type { ExitWaitOptions } from './exit-wait.js';
