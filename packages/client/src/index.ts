export { createMgxClient, followSession } from './client.js';
export type { MgxClient, MgxClientOptions, FollowOptions } from './client.js';
export type { AppRouter, SessionView, FrameworkInfo, WorkerView } from '@mgx/api';
export type { SessionEvent, EventType, SessionStatus, TerminalStatus, TerminalReason, FinishData } from '@mgx/agent-sdk';
