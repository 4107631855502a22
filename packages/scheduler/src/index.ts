export { Scheduler } from './scheduler.js';
export type { SchedulerOptions } from './scheduler.js';
export { prepareWorkspace, WorkspaceError } from './workspaces.js';
