export { createMgxClient, followSession } from './client.js';
export type { MgxClient, MgxClientOptions, FollowOptions } from './client.js';
export type { AppRouter, SessionView, FrameworkInfo, WorkerView, TopRow } from '@mgx/api';
export type {
  SessionEvent,
  EventType,
  SessionStatus,
  TerminalStatus,
  TerminalReason,
  FinishData,
  SessionUsage,
  ResourceData,
  WarningData,
} from '@mgx/agent-sdk';
