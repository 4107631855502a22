export type {
  SessionStore,
  EventStore,
  Store,
  NewSession,
  SessionRecord,
  SessionLimits,
  NewEvent,
  AppendResult,
  Outcome,
  DecideResult,
  DecideOptions,
  ClaimOptions,
  ClaimRef,
  ClaimWrite,
  HeartbeatResult,
  WorkerStore,
  WorkerInfo,
  WorkerRecord,
  WorkerState,
  RegisterResult,
  ListQuery,
  SessionPage,
  TailOptions,
  WorkspaceStore,
  WorkspaceRecord,
  WorkspaceSummary,
  WorkspaceSession,
  WorkspaceQuery,
  WorkspacePage,
  UsageQuery,
  UsageTotals,
  TenantUsage,
} from './ports.js';
export { WORKER_STATES, tenantUsageOf } from './ports.js';
export { StoreError, StoreErrorCode } from './errors.js';
export { SqliteStore } from './sqlite-store.js';
export type { SqliteStoreOptions } from './sqlite-store.js';
// MongoStore itself comes from '@mgx/event-store/mongodb' (or openStore): the driver is loaded
// only by a process that uses it (~20 MB of resident memory otherwise)
export type { MongoStore, MongoStoreOptions } from './mongodb-store.js';
export { openStore } from './open-store.js';
export type { OpenStoreOptions } from './open-store.js';
