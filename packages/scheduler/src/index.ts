export { Scheduler } from './scheduler.js';
export type { SchedulerOptions } from './scheduler.js';
export { WarmPool } from './warm-pool.js';
export type { WarmPoolOptions, TakeResult, ClaimTarget } from './warm-pool.js';
export { prepareWorkspace, workspacePath, WorkspaceError } from './workspaces.js';
