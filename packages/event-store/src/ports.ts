import type { EventType, FinishData, SessionEvent, SessionStatus, SessionUsage, TerminalReason, TerminalStatus } from '@mgx/agent-sdk';

/**
 * The two store ports. They speak in plain records: no driver types, no connections.
 * The adapter that implements them owns its connection and closes it in `close()`.
 */

/** Resource limits of one session, already checked against the server's maxima. */
export interface SessionLimits {
  memoryBytes: number;
  cpuQuota: number;
  timeoutMs: number;
  /** End the session when the agent emits nothing for this long (optional). */
  idleTimeoutMs?: number;
  /** Model tokens (prompt + completion) its calls through the gateway may use; absent: no limit. */
  maxModelTokens?: number;
  /** Model calls through the gateway; absent: no limit. */
  maxModelCalls?: number;
  /** Its MODEL_CALL events carry the calls' messages and answers (it asked; absent: counts only). */
  recordModelContent?: boolean;
  /** Domains its egress proxy lets it reach (`*.domain` too); absent: no proxy. */
  egressAllow?: string[];
}

export interface NewSession {
  id: string;
  tenant: string;
  framework: string;
  prompt: string;
  workspaceId: string;
  options: Record<string, unknown>;
  /** Environment for the agent, already checked against the allow-list; not secret. */
  env: Record<string, string>;
  limits: SessionLimits;
  network: 'none' | 'egress';
}

export interface SessionRecord extends NewSession {
  status: SessionStatus;
  createdAt: number;
  startedAt: number | null;
  endedAt: number | null;
  deadlineAt: number | null;
  workerId: string | null;
  containerId: string | null;
  reason: TerminalReason | null;
  exitCode: number | null;
  message: string | null;
  cancelRequested: boolean;
  /** seq of the last stored event. */
  lastSeq: number;
  /** seq of FINISH once stored; the stream of a session is closed from then on. */
  finishSeq: number | null;
  /** What the session used (FINISH's `usage`), once FINISH is stored with it. */
  usage?: SessionUsage | null;
}

/** An event to append. `rid` is the runner's id: re-sending the same rid stores nothing. */
export interface NewEvent {
  type: EventType;
  data: Record<string, unknown>;
  ts?: number;
  rid?: number;
}

export interface AppendResult {
  /** The events stored by this call, with their seq. */
  stored: SessionEvent[];
  /** How many were skipped because their rid was already stored. */
  duplicates: number;
  /** True when the session's FINISH was already stored, so nothing more was appended. */
  closed: boolean;
}

export interface Outcome {
  status: TerminalStatus;
  reason: TerminalReason;
  message?: string;
  exitCode?: number;
}

export interface ClaimOptions {
  /** Skip the sessions of these tenants (they are at their concurrency limit). */
  excludeTenants?: string[];
  /**
   * Fleet-wide limit of claimed (starting or running) sessions per tenant, counted in the store
   * in the same atomic step as the claim; 0 or absent: no limit.
   */
  maxPerTenant?: number;
  /** Fleet-wide cap on claimed sessions of all tenants; 0 or absent: no cap. */
  maxClaimed?: number;
  /**
   * The claiming worker's lease: the claim happens only while the worker's record in the store
   * has this epoch, state `alive` (not draining, dead or stopped) and `leaseUntil` > `now`
   * (default: the current time), checked in the same atomic step as the claim, so a worker
   * declared dead, draining or superseded by a newer registration claims nothing.
   */
  lease?: { epoch: number; now?: number };
  /**
   * Workspaces: a session whose workspace is held by another worker is not claimable here,
   * unless workspaces are shared; a session whose workspace has a claimed (starting or running)
   * session waits, and so does one with an earlier queued session on its workspace (one session
   * per workspace at a time, in queue order). The first claim of a new workspace makes this
   * worker its holder (see `SessionStore.workspaceHolder`); with shared workspaces the holder
   * is the last worker that claimed on it.
   */
  workspaces?: { shared: boolean };
}

/**
 * Who holds a claim: the worker that claimed the session and, for a worker with a lease, the
 * epoch it claimed under. A write that names it happens only while the session is still claimed
 * by that worker and (with `epoch`) the worker's record in the store still has that epoch and
 * state alive or draining, in the same atomic step: a worker declared dead, or superseded by a
 * newer registration, changes nothing (a zombie that resumes after a pause).
 */
export interface ClaimRef {
  workerId: string;
  epoch?: number | undefined;
}

/**
 * The result of a worker's write on a session it claimed. `done`: applied. `decided`: still
 * this worker's, but no longer in the state the write moves from (a cancel decided it while it
 * started). `lost`: no longer this worker's claim (settled after the worker was declared dead,
 * back in the queue, claimed by another worker, or the session is gone): the caller undoes what
 * it started (its container) and writes nothing more for the session.
 */
export type ClaimWrite = 'done' | 'decided' | 'lost';

export interface DecideOptions {
  /** Events stored with the decision, only if it wins (TIMEOUT, CANCELLED, CONTAINER_EXITED). */
  events?: NewEvent[];
  /** Win only while this claim holds the session (see ClaimRef): a worker's own decisions. */
  claimedBy?: ClaimRef;
  /** Win only from these states (default: any non-terminal state). */
  from?: SessionStatus[];
  /** When the decision was taken (ms); defaults to now. */
  at?: number;
}

export interface DecideResult {
  /** True for the one call that moved the session to its terminal state. */
  won: boolean;
  session: SessionRecord;
}

export interface ListQuery {
  /** Only this tenant's sessions; absent: every tenant's (operators). */
  tenant?: string;
  status?: SessionStatus[];
  limit: number;
  /** Opaque cursor from the previous page. */
  cursor?: string;
}

/** Sessions whose FINISH is stored and that ended (were decided) at `from` ≤ endedAt < `to`. */
export interface UsageQuery {
  from: number;
  to: number;
  /** Only this tenant's; absent: every tenant's (operators). */
  tenant?: string;
}

/** Usage summed over sessions. Sessions that never ran a container count with zeros. */
export interface UsageTotals {
  sessions: number;
  cpuSeconds: number;
  /** Memory over time (FINISH usage's memoryGiBSeconds, summed). */
  memoryGiBSeconds: number;
  /** Container run time, start to exit. */
  wallSeconds: number;
}

/** One tenant's usage over a UsageQuery's range: its totals and the same by terminal status. */
export interface TenantUsage extends UsageTotals {
  tenant: string;
  byStatus: Partial<Record<TerminalStatus, UsageTotals>>;
}

/** Rows of (tenant, status) totals into TenantUsage, tenants in name order. */
export function tenantUsageOf(rows: Array<UsageTotals & { tenant: string; status: TerminalStatus }>): TenantUsage[] {
  const byTenant = new Map<string, TenantUsage>();
  for (const r of rows) {
    const t = byTenant.get(r.tenant) ?? { tenant: r.tenant, sessions: 0, cpuSeconds: 0, memoryGiBSeconds: 0, wallSeconds: 0, byStatus: {} };
    const totals: UsageTotals = {
      sessions: r.sessions,
      cpuSeconds: round3(r.cpuSeconds),
      memoryGiBSeconds: round3(r.memoryGiBSeconds),
      wallSeconds: round3(r.wallSeconds),
    };
    t.byStatus[r.status] = totals;
    t.sessions += totals.sessions;
    t.cpuSeconds = round3(t.cpuSeconds + totals.cpuSeconds);
    t.memoryGiBSeconds = round3(t.memoryGiBSeconds + totals.memoryGiBSeconds);
    t.wallSeconds = round3(t.wallSeconds + totals.wallSeconds);
    byTenant.set(r.tenant, t);
  }
  return [...byTenant.values()].sort((a, b) => (a.tenant < b.tenant ? -1 : a.tenant > b.tenant ? 1 : 0));
}

const round3 = (n: number) => Math.round(n * 1000) / 1000;

export interface SessionPage {
  items: SessionRecord[];
  nextCursor: string | null;
}

export interface SessionStore {
  /** Creates a queued session and its SESSION_QUEUED event in one step. */
  createSession(session: NewSession): Promise<SessionRecord>;
  getSession(id: string): Promise<SessionRecord | null>;
  listSessions(query: ListQuery): Promise<SessionPage>;
  countByStatus(status: SessionStatus): Promise<number>;
  /** Sessions in these states, oldest first (recovery, fallback polls). */
  findByStatus(status: SessionStatus[], workerId?: string): Promise<SessionRecord[]>;
  /** Decided sessions whose FINISH is not stored yet (a crash between decision and FINISH). */
  findUnfinished(): Promise<SessionRecord[]>;
  /**
   * Atomically moves the oldest queued session to `starting` for `workerId` and returns it,
   * or null when none is queued. Two workers never claim the same session.
   */
  claimNext(workerId: string, options?: ClaimOptions): Promise<SessionRecord | null>;
  /**
   * starting → starting with its container id recorded (before start, so recovery can find it).
   * Workers pass their `claim` (see ClaimRef); without it only the status is checked.
   */
  setContainer(id: string, containerId: string, claim?: ClaimRef): Promise<ClaimWrite>;
  /** starting → running, with the deadline; `decided` when the session is no longer starting. */
  markRunning(id: string, startedAt: number, deadlineAt: number, claim?: ClaimRef): Promise<ClaimWrite>;
  /**
   * Puts a `starting` session back in the queue (recovery of a claim whose worker died; the
   * process that settles a dead worker names it with no epoch).
   */
  requeue(id: string, claim?: ClaimRef): Promise<ClaimWrite>;
  /** Records a cancel request; the worker that runs the session acts on it. */
  requestCancel(id: string): Promise<SessionRecord | null>;
  /**
   * Tells the worker `workerId` promptly of cancel requests that other processes store for its
   * undecided sessions: `onCancel` gets the session id, possibly more than once (it must ignore
   * what it already acts on). Best effort: a caller keeps a slower poll of `cancelRequested`
   * as the fallback. Returns the function that stops the watch.
   */
  watchCancels(workerId: string, onCancel: (sessionId: string) => void): () => void;
  /**
   * The terminal compare-and-set: moves a non-terminal session to `outcome` and appends
   * `events` (TIMEOUT, CANCELLED, ...) in the same step. Exactly one call wins; the rest get
   * `won: false` and change nothing. FINISH is appended later by `appendFinish`, after teardown.
   */
  decide(id: string, outcome: Outcome, options?: DecideOptions): Promise<DecideResult>;
  /**
   * Appends the FINISH event of a decided session (idempotent; FINISH is stored once). Its
   * `usage`, when given, is kept on the session too (`SessionRecord.usage`, `usageByTenant`).
   */
  appendFinish(id: string, data: FinishData, rid?: number): Promise<SessionEvent>;
  /** What each tenant's finished sessions used over a range of end times, by terminal status. */
  usageByTenant(query: UsageQuery): Promise<TenantUsage[]>;
  /**
   * The worker that holds a workspace: the one whose claim (with `ClaimOptions.workspaces`) first
   * used it, so its files live on that worker's host. Null when no such claim was ever made. Only
   * that worker claims the workspace's sessions unless workspaces are shared; when it is declared
   * dead, the sessions waiting on the workspace end `workspace_unavailable`.
   */
  workspaceHolder(workspaceId: string): Promise<string | null>;
  /**
   * Queued sessions whose workspace is held by `workerId`, oldest first: the sessions only that
   * worker may claim (when workspaces are not shared), to be ended when it is lost.
   */
  findQueuedOnWorkspacesOf(workerId: string): Promise<SessionRecord[]>;
}

export interface TailOptions {
  afterSeq: number;
  signal: AbortSignal;
}

export interface EventStore {
  /** Appends events in order, assigning dense seq. Refuses nothing but events after FINISH. */
  append(sessionId: string, events: NewEvent[]): Promise<AppendResult>;
  /** Events with seq > afterSeq, oldest first, at most `limit`. */
  read(sessionId: string, afterSeq: number, limit: number): Promise<SessionEvent[]>;
  getFinishEvent(sessionId: string): Promise<SessionEvent | null>;
  /** The session's most recent event of this type (the last RESOURCE sample), or null. */
  lastOfType(sessionId: string, type: EventType): Promise<SessionEvent | null>;
  /** The highest runner id stored for the session (0 when none): where a runner resumes. */
  lastRid(sessionId: string): Promise<number>;
  /**
   * The backlog after `afterSeq`, then live events as they are stored, in order with no gap
   * and no duplicate; ends after FINISH or when the signal aborts.
   */
  tail(sessionId: string, options: TailOptions): AsyncIterable<SessionEvent>;
  /** The same tail in the batches the store read (never empty), for senders that pay per message. */
  tailBatches(sessionId: string, options: TailOptions): AsyncIterable<SessionEvent[]>;
}

export type WorkerState = 'alive' | 'draining' | 'dead' | 'stopped';
export const WORKER_STATES: readonly WorkerState[] = ['alive', 'draining', 'dead', 'stopped'];

/** What a worker says of itself when it registers. `id` is stable per host (MGX_OWNER). */
export interface WorkerInfo {
  id: string;
  hostname: string;
  /** The engine it drives (e.g. "podman 4.3.1 unix:///run/podman/podman.sock"). */
  engine: string;
  /** AGENT_MAX_CONCURRENT_CONTAINERS of this worker. */
  capacity: number;
  version: string;
  /**
   * Where other processes of the fleet reach this worker's HTTP server (MGX_WORKER_URL), for
   * requests only it can answer (its workspaces' files, its sessions' previews); absent when it advertises none.
   */
  url?: string;
}

export interface WorkerRecord extends WorkerInfo {
  state: WorkerState;
  /** Sessions it holds a slot for, as of its last heartbeat. */
  inUse: number;
  startedAt: number;
  heartbeatAt: number;
  /** The lease is valid until this time (ms); after it any process may declare the worker dead. */
  leaseUntil: number;
  /** Bumped at every registration: a heartbeat or claim of an older epoch is refused. */
  epoch: number;
  /** An operator asked it to drain (`requestDrain`); cleared when it registers again. */
  drainRequested: boolean;
}

/** What a heartbeat tells the worker. */
export interface HeartbeatResult {
  /** False when the lease is lost (declared dead, or a newer epoch registered): stop claiming. */
  kept: boolean;
  /** An operator asked this worker to drain: claim nothing more, finish, deregister, exit. */
  drainRequested: boolean;
}

export interface RegisterResult {
  worker: WorkerRecord;
  /**
   * The record as it was before this registration. A previous lease still valid (state alive or
   * draining, leaseUntil in the future) means the worker restarted within its lease and adopts
   * its sessions; a dead one means they were settled and it resurrects nothing.
   */
  previous: WorkerRecord | null;
}

/** Workers and their leases, shared by every process of a fleet. */
export interface WorkerStore {
  /** Registers the worker with a new epoch and a lease of `leaseMs` from `now`. */
  register(info: WorkerInfo, leaseMs: number, now?: number): Promise<RegisterResult>;
  /**
   * Renews the lease of `id` at `epoch` and records its state and use. `kept` is false when the
   * lease is lost (declared dead, or a newer epoch registered): the worker must stop claiming.
   * `drainRequested` carries an operator's `requestDrain` to the worker with no extra query.
   */
  heartbeat(
    id: string,
    epoch: number,
    update: { inUse: number; state: 'alive' | 'draining' },
    leaseMs: number,
    now?: number,
  ): Promise<HeartbeatResult>;
  get(id: string): Promise<WorkerRecord | null>;
  list(): Promise<WorkerRecord[]>;
  /**
   * The compare-and-set that declares a worker dead: alive or draining with leaseUntil < now
   * becomes dead. Exactly one caller wins and then settles the worker's sessions.
   */
  markDead(id: string, now?: number): Promise<boolean>;
  /**
   * An operator's request that the worker drain; it learns it at its next heartbeat. Returns
   * the record with `drainRequested` set. Throws StoreError WORKER_NOT_FOUND for an unknown id,
   * WORKER_NOT_LIVE for a worker that is dead or stopped (nothing runs there to drain).
   */
  requestDrain(id: string): Promise<WorkerRecord>;
  /** A graceful stop: state stopped, lease released. Only for the current epoch. */
  deregister(id: string, epoch: number): Promise<void>;
}

/** Who owns a workspace and which worker's disk holds its files. */
export interface WorkspaceRecord {
  id: string;
  /** The tenant that first used or created it; other tenants do not see it. */
  tenant: string;
  createdAt: number;
  /** The worker whose host holds its files (see `SessionStore.workspaceHolder`); null before any. */
  holder: string | null;
}

/** A session on a workspace, as a listing shows it. */
export interface WorkspaceSession {
  id: string;
  status: SessionStatus;
  createdAt: number;
}

export interface WorkspaceSummary extends WorkspaceRecord {
  /** The newest session created on it. */
  lastSession: WorkspaceSession | null;
}

export interface WorkspaceQuery {
  /** Only this tenant's workspaces; absent: every tenant's (operators). */
  tenant?: string;
  limit: number;
  /** Opaque cursor from the previous page. */
  cursor?: string;
}

export interface WorkspacePage {
  items: WorkspaceSummary[];
  nextCursor: string | null;
}

/**
 * Ownership of workspaces. A workspace belongs to the tenant that first used it (a session on
 * it, or files written to it); the API hides it from every other tenant.
 */
export interface WorkspaceStore {
  /**
   * Makes `tenant` the owner of workspace `id` unless someone owns it already, in one atomic
   * step, and returns the record: the caller compares `tenant`. A workspace that sessions used
   * before ownership was recorded (or before it was removed) belongs to the tenant of its first
   * session, so a removed workspace's name cannot be taken over by another tenant.
   */
  own(id: string, tenant: string, now?: number): Promise<WorkspaceRecord>;
  get(id: string): Promise<WorkspaceRecord | null>;
  /** Newest first, with each one's last session. */
  list(query: WorkspaceQuery): Promise<WorkspacePage>;
  /**
   * A session on the workspace that is not over: queued, starting, running, or decided with its
   * container not yet torn down (FINISH not stored); the oldest, or null when there is none.
   * Files must not change under such a session.
   */
  activeSession(id: string): Promise<WorkspaceSession | null>;
  /**
   * Makes `workerId` the workspace's holder when no worker holds it yet (files written on that
   * worker's disk before any session), and returns the holder.
   */
  hold(id: string, workerId: string, now?: number): Promise<string>;
  /**
   * Starts a write to the workspace's files (an upload, a delete) under `token` until `until`
   * (ms), unless a session on it is active: then returns that session and starts nothing. In
   * one step with that check, so a session created after it stays queued, because a claim skips
   * a workspace with a write that has not ended or expired. `until` bounds a writer that died.
   */
  beginWrite(id: string, workerId: string, token: string, until: number, now?: number): Promise<WorkspaceSession | null>;
  /** Moves a write's end to `until` (a long upload); false when it ended or expired already. */
  renewWrite(id: string, token: string, until: number, now?: number): Promise<boolean>;
  /** Ends a write: the workspace's queued sessions may be claimed again. */
  endWrite(id: string, token: string): Promise<void>;
  /**
   * Forgets the workspace (owner and holder) when no session on it is active, in one step;
   * false when one is, or when it does not exist. Its sessions stay.
   */
  remove(id: string): Promise<boolean>;
}

/** One opened store: both ports over the same connection. */
export interface Store {
  readonly kind: 'sqlite' | 'mongodb';
  readonly sessions: SessionStore;
  readonly events: EventStore;
  readonly workers: WorkerStore;
  readonly workspaces: WorkspaceStore;
  /** A short description for health output (file path, database name). */
  describe(): string;
  /**
   * Removes terminal sessions that ended before `now` (default: the current time) minus the
   * store's retention, with their events, and returns how many sessions it removed; 0 when the
   * retention is 0 (keep forever). Adapters also run it on their own (a timer, TTL indexes);
   * calling it removes at once what they would remove.
   */
  purgeExpired(now?: number): Promise<number>;
  close(): Promise<void>;
}
