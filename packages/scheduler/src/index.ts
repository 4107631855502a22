export { Scheduler } from './scheduler.js';
export type { SchedulerOptions } from './scheduler.js';
export { prepareWorkspace } from './workspaces.js';
