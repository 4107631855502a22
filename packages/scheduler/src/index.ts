export { Scheduler } from './scheduler.js';
export type { SchedulerOptions } from './scheduler.js';
export { WarmPool } from './warm-pool.js';
export type { WarmPoolOptions, TakeResult, ClaimTarget } from './warm-pool.js';
export { prepareWorkspace, workspacePath, WorkspaceError } from './workspaces.js';
export { WorkerLease } from './worker-lease.js';
export type { WorkerLeaseOptions } from './worker-lease.js';
export { Reaper, settleWorker, lostMessage } from './reaper.js';
export type { ReaperOptions, SettleDeps, SettleCounts } from './reaper.js';
