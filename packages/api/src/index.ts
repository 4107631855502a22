export { createAppRouter } from './router.js';
export { SessionSse } from './session-sse.js';
export { SessionStreams, sessionStreamsOf } from './stream-hub.js';
export type { AppRouter } from './router.js';
export type { RouterOptions } from './trpc.js';
export { toView } from './views.js';
export type { SessionView, TopRow } from './views.js';
export type {
  ApiDeps,
  ApiContext,
  FrameworkInfo,
  WorkerBridge,
  SecretKeeper,
  PreviewLinks,
  HolderCalls,
  HolderProcedure,
} from './context.js';
export { TokenAuth, AuthConfigError, DEFAULT_TENANT } from './auth.js';
export type { Caller, TokenSettings } from './auth.js';
export { workerView, withoutSocket } from './routers/system.js';
export type { WorkerView } from './routers/system.js';
export { newSessionId } from './ids.js';
export { envProblem, ENV_NAME, MAX_ENV_VARS, MAX_ENV_VALUE_BYTES } from './env-policy.js';
export { admit, createSessionInput } from './admission.js';
export type { Admission, AdmissionCode, AdmissionContext, AdmissionProblem, AdmittedSpec, CreateSessionInput } from './admission.js';
export { toTRPCError, trpcCodeOf } from './errors.js';
export { WorkspaceAccess, WorkspaceAccessError, WorkspaceAccessErrorCode } from './workspace-access.js';
export type { WorkspaceAccessDeps } from './workspace-access.js';
export type { WorkspaceView, WorkspaceSize } from './routers/workspaces.js';
