export { createAppRouter, toView } from './router.js';
export type { AppRouter, SessionView, RouterOptions } from './router.js';
export type { ApiDeps, ApiContext, FrameworkInfo, WorkerBridge, SecretKeeper } from './context.js';
export { TokenAuth, DEFAULT_TENANT } from './auth.js';
export { newSessionId } from './ids.js';
export { envProblem, ENV_NAME, MAX_ENV_VARS, MAX_ENV_VALUE_BYTES } from './env-policy.js';
