export { loadSettings, ID_PATTERN, poolSpecKey } from './settings.js';
export type { Settings, EventStoreKind, ServerRole, StopMode, PoolSpec } from './settings.js';
export { CodedError, ConfigError, ConfigErrorCode } from './errors.js';
export type { SettingProblem } from './errors.js';
export { parseMemory, formatMemory, MIN_MEMORY_BYTES, MIN_CPUS, minCpuQuota } from './units.js';
export { silentLogger } from './logger.js';
export { grantToAgentUser, parseUser } from './agent-user.js';
export type { Logger } from './logger.js';
