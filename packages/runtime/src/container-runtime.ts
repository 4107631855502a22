/**
 * The ContainerRuntime port: what the platform needs from a container engine, in its own
 * terms. No engine client types cross it; the adapter owns its connection.
 */

export interface Mount {
  hostPath: string;
  containerPath: string;
  readOnly: boolean;
}

/** Everything needed to create one agent container. Hardening is applied by the adapter. */
export interface ContainerSpec {
  name: string;
  image: string;
  env: Record<string, string>;
  labels: Record<string, string>;
  /** uid:gid, never root. */
  user: string;
  workingDir: string;
  mounts: Mount[];
  memoryBytes: number;
  /** CPU microseconds per `cpuPeriod`. */
  cpuQuota: number;
  cpuPeriod: number;
  pidsLimit: number;
  network: 'none' | 'egress';
  tmpfsBytes: number;
}

export interface ContainerState {
  id: string;
  running: boolean;
  exitCode: number | null;
  /** As the engine reports it; Podman on cgroup v1 never sets it (see `endedBy`). */
  oomKilled: boolean;
  startedAt: number | null;
  finishedAt: number | null;
  labels: Record<string, string>;
  memoryBytes: number;
}

export interface ContainerSummary {
  id: string;
  name: string;
  state: string;
  labels: Record<string, string>;
}

export interface ExitInfo {
  exitCode: number;
  oomKilled: boolean;
}

/**
 * How the container ended, from its inspect, or null while it has not: it must have run and
 * stopped (a container created and not started yet is not running either, and has no finishedAt).
 */
export function exitOf(state: ContainerState): ExitInfo | null {
  return !state.running && state.exitCode !== null && state.finishedAt !== null
    ? { exitCode: state.exitCode, oomKilled: state.oomKilled }
    : null;
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface LogLine {
  stream: 'stdout' | 'stderr';
  text: string;
}

/** One reading of a running container's resource use, from the engine's stats API. */
export interface ContainerStats {
  /** When the engine read it (ms since the epoch). */
  at: number;
  /** CPU time used since the container started, user and system, in seconds. */
  cpuSeconds: number;
  /** Memory in use, without reclaimable page cache (what `docker stats` shows). */
  memoryBytes: number;
  /** The highest usage the kernel recorded (cgroup v1 `max_usage`); null where the engine does not report it. */
  memoryMaxBytes: number | null;
  /** The memory limit the engine applies; 0 when it reports none. */
  memoryLimitBytes: number;
  pids: number;
}

export interface EngineInfo {
  engine: 'podman' | 'docker';
  version: string;
  apiVersion: string;
  cgroupVersion: string;
  ociRuntime: string;
  socket: string;
}

/** What an engine is, as its ping's headers say it (a millisecond; `info` takes a second or two on Podman). */
export type EngineIdentity = Pick<EngineInfo, 'engine' | 'version' | 'apiVersion'>;

export interface ContainerRuntime {
  readonly socket: string;
  /** The engine in full; asked once (concurrent callers share the request) and kept. */
  info(): Promise<EngineInfo>;
  /** The engine's kind and version from its ping; kept once known. */
  identity(): Promise<EngineIdentity>;
  ping(): Promise<void>;
  imageExists(image: string): Promise<boolean>;
  /** The image's labels (those its build set, and those it inherited); null when the image is missing. */
  imageLabels(image: string): Promise<Record<string, string> | null>;
  create(spec: ContainerSpec): Promise<string>;
  start(id: string): Promise<void>;
  /** Renames a container (running or not); labels cannot change after create, names can. */
  rename(id: string, name: string): Promise<void>;
  /**
   * Resolves when the container has exited, as soon as the engine tells (its `die` event), not
   * after the engine's clean-up: the container and its logs are still there.
   */
  wait(id: string): Promise<ExitInfo>;
  inspect(id: string): Promise<ContainerState | null>;
  /** Sends a signal; no error when the container already stopped. */
  kill(id: string, signal: 'SIGTERM' | 'SIGKILL'): Promise<void>;
  /** SIGTERM, then SIGKILL after `graceMs` if still running. Resolves once it has exited. */
  stop(id: string, graceMs: number): Promise<ExitInfo>;
  /** Removes the container (force). No error when it is already gone. */
  remove(id: string): Promise<void>;
  /** The last `maxBytes` of stdout and stderr, as lines. */
  logs(id: string, maxBytes: number): Promise<LogLine[]>;
  /**
   * Runs a command inside a running container as its own user (diagnostics, tests) and
   * returns what it printed, bounded to 1 MiB per stream.
   */
  exec(id: string, cmd: string[]): Promise<ExecResult>;
  /**
   * One reading of a running container's CPU, memory and pids (no streaming: one request, one
   * answer); null when the container is gone or not running.
   */
  stats(id: string): Promise<ContainerStats | null>;
  /**
   * Readings of several containers at once, keyed by id; those not running or gone are left
   * out. An engine that can read them in one request does (Podman); the others get one request
   * per container.
   */
  statsMany(ids: readonly string[]): Promise<Map<string, ContainerStats>>;
  /** Containers whose labels match all of `labels`, running or not. */
  list(labels: Record<string, string>): Promise<ContainerSummary[]>;
  /** Which of these containers are running, in one request (a poll of many costs one call). */
  running(ids: readonly string[]): Promise<Set<string>>;
}

export const LABELS = {
  managed: 'mgx.managed',
  sessionId: 'mgx.session-id',
  tenant: 'mgx.tenant',
  owner: 'mgx.owner',
  /** Set on warm-pool containers, to their spec's key. They carry no session label: a claimed one is found through the store. */
  pool: 'mgx.pool',
} as const;
