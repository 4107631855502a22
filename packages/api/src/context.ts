import type { Logger, Settings } from '@mgx/config';
import type { Store } from '@mgx/event-store';
import type { Metrics } from '@mgx/metrics';
import type { ContainerRuntime } from '@mgx/runtime';
import type { WorkspaceAccess } from './workspace-access.js';

export interface FrameworkInfo {
  name: string;
  description: string;
  optionsSchema: Record<string, unknown>;
  /** Sessions of this framework must ask for (and be allowed) network egress. */
  requiresEgress: boolean;
}

/**
 * Per-session secrets, held in the memory of the process that runs the session and never
 * written to the store, events, logs or labels. They reach the runner over its socket.
 */
export interface SecretKeeper {
  put(sessionId: string, secrets: Record<string, string>): void;
  get(sessionId: string): Record<string, string>;
  forget(sessionId: string): void;
}

/** How the API reaches the worker: in-process in the all-in-one server, a no-op when split. */
export interface WorkerBridge {
  /** A session was queued. */
  queued(): void;
  /** Cancels a running session held by this process; false when it is not here. */
  cancelRunning(sessionId: string): boolean;
}

/** Signed, expiring preview links (for iframes and new tabs, where no header can be set). */
export interface PreviewLinks {
  /**
   * A link to `port` of the session valid for `ttlMs` (capped by MGX_PREVIEW_LINK_MAX_SECONDS), on the
   * preview path or its own host name; `origin` is the request's.
   */
  link(sessionId: string, port: number, ttlMs: number, origin: string, form: 'path' | 'host'): { url: string; expiresAt: number };
}

/** The workspaces procedures another process of the fleet may run for a caller. */
export type HolderProcedure = 'files' | 'read' | 'delete' | 'remove' | 'sizes';

/**
 * How a process that does not hold a workspace's files (an API node, another worker) has the
 * worker that does answer a workspaces procedure, as the same caller: that worker checks the
 * token again. Its refusals come back as they were.
 */
export interface HolderCalls {
  /** `worker` null: a workspace no worker holds yet, taken by any live worker that advertises a URL. */
  call(worker: string | null, procedure: HolderProcedure, input: unknown, authorization: string | undefined): Promise<unknown>;
}

/** Everything the router needs, built once by the server. */
export interface ApiDeps {
  settings: Settings;
  store: Store;
  /** Absent on an API node without an engine: only workers need one. */
  runtime: ContainerRuntime | undefined;
  metrics: Metrics;
  logger: Logger;
  frameworks: FrameworkInfo[];
  worker: WorkerBridge;
  /** Where secrets go; absent when this process does not run sessions (API-only role). */
  secrets: SecretKeeper | undefined;
  version: string;
  /** Workspaces: who may see and change them, and their files where this process holds them. */
  workspaces: WorkspaceAccess;
  /** Readiness: false while starting or shutting down. */
  ready: () => boolean;
  /** Preview links; absent where the server offers no previews. */
  preview?: PreviewLinks;
  /** Workspaces procedures on the worker that holds the files; absent: answered here or refused. */
  holders?: HolderCalls;
}

/**
 * Per request: the deps plus the caller's tenant (null when the token is missing or wrong) and
 * whether the caller is an operator (sees every tenant's sessions and the fleet).
 */
export interface ApiContext {
  deps: ApiDeps;
  tenant: string | null;
  operator?: boolean;
  /** The origin the request was sent to (scheme and host), for links when MGX_PUBLIC_URL is unset. */
  origin?: string | undefined;
  /** The Authorization header, passed on when another worker must answer. */
  authorization?: string | undefined;
  /** The request was forwarded by another process of the fleet: it is answered here or refused, never sent on. */
  forwarded?: boolean | undefined;
}
