import type { Logger, Settings } from '@mgx/config';
import type { Store } from '@mgx/event-store';
import type { Metrics } from '@mgx/metrics';
import type { ContainerRuntime } from '@mgx/runtime';

export interface FrameworkInfo {
  name: string;
  description: string;
  optionsSchema: Record<string, unknown>;
}

/** How the API reaches the worker: in-process in the all-in-one server, a no-op when split. */
export interface WorkerBridge {
  /** A session was queued. */
  queued(): void;
  /** Cancels a running session held by this process; false when it is not here. */
  cancelRunning(sessionId: string): boolean;
}

/** Everything the router needs, built once by the server. */
export interface ApiDeps {
  settings: Settings;
  store: Store;
  runtime: ContainerRuntime;
  metrics: Metrics;
  logger: Logger;
  frameworks: FrameworkInfo[];
  worker: WorkerBridge;
  version: string;
  /** Readiness: false while starting or shutting down. */
  ready: () => boolean;
}

/** Per request: the deps plus the caller's tenant (null when the token is missing or wrong). */
export interface ApiContext {
  deps: ApiDeps;
  tenant: string | null;
}
