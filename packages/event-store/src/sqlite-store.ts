import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { EventType, FinishData, SessionEvent, SessionStatus, SessionUsage, TerminalStatus } from '@mgx/agent-sdk';
import { isTerminal, TERMINAL_STATUSES } from '@mgx/agent-sdk';
import { silentLogger, type Logger } from '@mgx/config';
import { decodeCursor, toPage } from './cursor.js';
import { StoreError, StoreErrorCode } from './errors.js';
import type {
  AppendResult,
  ClaimOptions,
  ClaimRef,
  ClaimWrite,
  DecideOptions,
  DecideResult,
  EventStore,
  ListQuery,
  NewEvent,
  NewSession,
  Outcome,
  SessionPage,
  SessionRecord,
  SessionStore,
  Store,
  TailOptions,
  TenantUsage,
  UsageQuery,
  UsageTotals,
  WorkerStore,
  WorkspaceStore,
} from './ports.js';
import { tenantUsageOf } from './ports.js';
import { dropResent } from './resend.js';
import { Retention } from './retention.js';
import { SqliteCheckpointer } from './sqlite-checkpointer.js';
import { CANCELS_SCHEMA, DataVersionWatcher } from './sqlite-changes.js';
import { addColumnIfMissing } from './sqlite-columns.js';
import { migrateWorkers, SqliteWorkers, WORKERS_SCHEMA } from './sqlite-workers.js';
import { migrateWorkspaceOwners, SqliteWorkspaces } from './sqlite-workspaces.js';
import { Tails } from './tail.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS sessions (
  pos INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  tenant TEXT NOT NULL,
  status TEXT NOT NULL,
  framework TEXT NOT NULL,
  workspace_id TEXT NOT NULL,
  prompt TEXT NOT NULL,
  options TEXT NOT NULL,
  env TEXT NOT NULL DEFAULT '{}',
  limits TEXT NOT NULL,
  network TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  started_at INTEGER,
  ended_at INTEGER,
  deadline_at INTEGER,
  worker_id TEXT,
  container_id TEXT,
  reason TEXT,
  exit_code INTEGER,
  message TEXT,
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  last_seq INTEGER NOT NULL DEFAULT 0,
  last_rid INTEGER NOT NULL DEFAULT 0,
  finish_seq INTEGER,
  usage TEXT
);
CREATE INDEX IF NOT EXISTS sessions_status_pos ON sessions (status, pos);
CREATE INDEX IF NOT EXISTS sessions_tenant_pos ON sessions (tenant, pos);
CREATE INDEX IF NOT EXISTS sessions_unfinished ON sessions (pos) WHERE finish_seq IS NULL;
CREATE INDEX IF NOT EXISTS sessions_ended ON sessions (ended_at) WHERE ended_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
  session_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  rid INTEGER,
  type TEXT NOT NULL,
  ts INTEGER NOT NULL,
  data TEXT NOT NULL,
  PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS events_session_rid ON events (session_id, rid) WHERE rid IS NOT NULL;
-- the claim's counts: sessions holding a container (claimed, FINISH not stored) per tenant and per workspace
DROP INDEX IF EXISTS sessions_claimed_tenant;
DROP INDEX IF EXISTS sessions_claimed_workspace;
CREATE INDEX IF NOT EXISTS sessions_held_tenant ON sessions (tenant) WHERE worker_id IS NOT NULL AND finish_seq IS NULL;
CREATE INDEX IF NOT EXISTS sessions_held_workspace ON sessions (workspace_id) WHERE worker_id IS NOT NULL AND finish_seq IS NULL;
-- the claim's queue order per workspace
CREATE INDEX IF NOT EXISTS sessions_queued_workspace ON sessions (workspace_id, pos) WHERE status = 'queued';
-- which worker holds a workspace (its files are on that worker's host)
CREATE TABLE IF NOT EXISTS workspaces (
  id TEXT PRIMARY KEY,
  holder TEXT NOT NULL,
  tenant TEXT,
  last_session_id TEXT,
  claimed_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS workspaces_holder ON workspaces (holder);
`;

/**
 * The claim, one statement in the claim's IMMEDIATE transaction, so the counts it checks and
 * the row it moves are one state for every process sharing the file. A session counts as
 * claimed from its claim until its FINISH (worker set, FINISH not stored): a decided session's
 * container runs on through its teardown, and FINISH is stored once it has exited. The oldest
 * queued session that is not cancel-requested, whose tenant is neither excluded nor at
 * @maxPerTenant claimed sessions, moves to starting, if the fleet has fewer than @maxClaimed claimed sessions and
 * (with @epoch set) the worker's row has that epoch, state alive and an unexpired lease. With
 * @workspaces = 1 the session's workspace must have no claimed session, no earlier queued
 * session, no write to its files under way, and no holder other than this worker unless @shared = 1. The uncorrelated
 * subqueries (full tenants, the fleet count, the lease) run once; the correlated ones use the
 * partial indexes above.
 */
const CLAIM_SQL = `
UPDATE sessions SET status = 'starting', worker_id = @worker
WHERE pos = (
  SELECT s.pos FROM sessions s
  WHERE s.status = 'queued' AND s.cancel_requested = 0
    AND s.tenant NOT IN (SELECT value FROM json_each(@exclude))
    AND (@maxPerTenant <= 0 OR s.tenant NOT IN (
      SELECT tenant FROM sessions WHERE worker_id IS NOT NULL AND finish_seq IS NULL
      GROUP BY tenant HAVING COUNT(*) >= @maxPerTenant))
    AND (@maxClaimed <= 0 OR (SELECT COUNT(*) FROM sessions WHERE worker_id IS NOT NULL AND finish_seq IS NULL) < @maxClaimed)
    AND (@epoch IS NULL OR EXISTS (
      SELECT 1 FROM workers WHERE id = @worker AND epoch = @epoch AND state = 'alive' AND lease_until > @now))
    AND (@workspaces = 0 OR (
      NOT EXISTS (SELECT 1 FROM sessions b WHERE b.workspace_id = s.workspace_id AND b.worker_id IS NOT NULL AND b.finish_seq IS NULL)
      AND NOT EXISTS (SELECT 1 FROM sessions e WHERE e.workspace_id = s.workspace_id AND e.status = 'queued'
                      AND e.pos < s.pos AND e.cancel_requested = 0)
      AND NOT EXISTS (SELECT 1 FROM workspace_writes ww WHERE ww.workspace_id = s.workspace_id AND ww.until > @now)
      AND (@shared = 1 OR NOT EXISTS (SELECT 1 FROM workspaces w WHERE w.id = s.workspace_id AND w.holder <> @worker))))
  ORDER BY s.pos LIMIT 1)
RETURNING *`;

/**
 * A write's condition that the session is still claimed by @worker and, with @epoch, that the
 * worker's record still has that epoch and is alive or draining (not dead, stopped or superseded).
 * @worker NULL: no claim named, the status alone decides.
 */
const CLAIM_HELD_SQL = `(@worker IS NULL OR (worker_id = @worker AND (@epoch IS NULL OR EXISTS (
  SELECT 1 FROM workers WHERE id = @worker AND epoch = @epoch AND state IN ('alive', 'draining')))))`;

/** The named parameters of CLAIM_HELD_SQL. */
interface ClaimHeldParams {
  worker: string | null;
  epoch: number | null;
}

const claimParams = (claim: ClaimRef | undefined): ClaimHeldParams => ({ worker: claim?.workerId ?? null, epoch: claim?.epoch ?? null });

interface SessionRow {
  pos: number;
  id: string;
  tenant: string;
  status: SessionStatus;
  framework: string;
  workspace_id: string;
  prompt: string;
  options: string;
  env: string;
  limits: string;
  network: 'none' | 'egress';
  created_at: number;
  started_at: number | null;
  ended_at: number | null;
  deadline_at: number | null;
  worker_id: string | null;
  container_id: string | null;
  reason: SessionRecord['reason'];
  exit_code: number | null;
  message: string | null;
  cancel_requested: number;
  last_seq: number;
  last_rid: number;
  finish_seq: number | null;
  /** FINISH's usage as JSON; null before FINISH and for sessions that ran no container. */
  usage: string | null;
}

interface EventRow {
  session_id: string;
  seq: number;
  type: SessionEvent['type'];
  ts: number;
  data: string;
}

/** The named parameters of CLAIM_SQL. */
interface ClaimParams {
  worker: string;
  /** JSON array of tenants to skip. */
  exclude: string;
  maxPerTenant: number;
  maxClaimed: number;
  epoch: number | null;
  now: number;
  workspaces: 0 | 1;
  shared: 0 | 1;
}

const toSession = (r: SessionRow): SessionRecord => ({
  id: r.id,
  tenant: r.tenant,
  status: r.status,
  framework: r.framework,
  workspaceId: r.workspace_id,
  prompt: r.prompt,
  options: JSON.parse(r.options) as Record<string, unknown>,
  env: JSON.parse(r.env) as Record<string, string>,
  limits: JSON.parse(r.limits) as SessionRecord['limits'],
  network: r.network,
  createdAt: r.created_at,
  startedAt: r.started_at,
  endedAt: r.ended_at,
  deadlineAt: r.deadline_at,
  workerId: r.worker_id,
  containerId: r.container_id,
  reason: r.reason,
  exitCode: r.exit_code,
  message: r.message,
  cancelRequested: r.cancel_requested === 1,
  lastSeq: r.last_seq,
  finishSeq: r.finish_seq,
  usage: r.usage === null ? null : (JSON.parse(r.usage) as SessionUsage),
});

const toEvent = (r: EventRow): SessionEvent => ({
  sessionId: r.session_id,
  seq: r.seq,
  type: r.type,
  ts: r.ts,
  data: JSON.parse(r.data) as Record<string, unknown>,
});

export interface SqliteStoreOptions {
  /** Path of the database file; created with its directory when missing. */
  file: string;
  /**
   * How often a tail re-reads when nothing woke it: a safety net, since the change check wakes
   * tails for other processes' writes. Default 2000 ms.
   */
  tailPollMs?: number;
  /**
   * How often the store checks whether another connection (another process) committed
   * (`PRAGMA data_version`), to wake tails and cancel watchers. Default 25 ms; 0 turns it off.
   */
  changeCheckMs?: number;
  /**
   * Terminal sessions and their events are removed this many days after they ended, by
   * purgeExpired on an hourly timer. Default 0: keep forever.
   */
  retentionDays?: number;
  /** How long a call waits for another connection's lock before it fails with STORE_UNAVAILABLE. Default 5000 ms. */
  busyTimeoutMs?: number;
  /** Where the store reports what it cannot hand to a caller (a failed purge on its timer). */
  logger?: Logger;
  /** WAL checkpoints in a thread of their own (SqliteCheckpointer). Default true. */
  checkpointThread?: boolean;
}

/**
 * A failed driver call as the port promises it: a StoreError whose cause is the driver's error.
 * Every SQLite failure (SQLITE_BUSY or SQLITE_LOCKED when another connection holds the file past
 * the busy timeout, I/O errors, a full disk, a read-only or corrupt file) and a call on a closed
 * handle mean the store cannot serve the call: STORE_UNAVAILABLE. A StoreError thrown inside a
 * transaction passes through; anything else is not the store's failure and passes unchanged.
 */
function toStoreError(cause: unknown, where: string, what: string, open: boolean): unknown {
  if (cause instanceof StoreError) return cause;
  const message = cause instanceof Error ? cause.message : String(cause);
  if (cause instanceof Database.SqliteError || !open) {
    return new StoreError(StoreErrorCode.UNAVAILABLE, `SQLite store ${where}: ${what}: ${message}`, { cause });
  }
  return cause;
}

/** Columns added after the first schema, for store files created before them. */
function migrate(db: Database.Database): void {
  addColumnIfMissing(db, 'sessions', 'env', "TEXT NOT NULL DEFAULT '{}'");
  addColumnIfMissing(db, 'sessions', 'usage', 'TEXT');
  // FINISH is found through sessions.finish_seq, so every event insert updates two B-trees, not three
  db.exec('DROP INDEX IF EXISTS events_session_type');
}

/**
 * Rows per INSERT statement when a batch is stored: one statement of many rows costs less than
 * a call per row (each call binds, steps and resets through the driver). 6 parameters a row,
 * far below SQLite's limit of 32766.
 */
const INSERT_ROWS = 64;

/** An append waiting for the next group commit. */
interface PendingAppend {
  sessionId: string;
  events: NewEvent[];
  resolve: (result: AppendResult) => void;
  reject: (err: unknown) => void;
}

/**
 * With the checkpoint thread, the writer's own connection checkpoints only past this many WAL
 * pages (40 MB; SQLite's default is 1000): a safety net should the thread fall behind or fail.
 */
const WRITER_CHECKPOINT_PAGES = 10_000;

/** How long a repeated background write waits for another process's lock (see #backgroundTx). */
const BACKGROUND_BUSY_MS = 200;

const TERMINAL_SQL = `(${TERMINAL_STATUSES.map((s) => `'${s}'`).join(',')})`;

/**
 * The embedded default store: one SQLite file in WAL mode holding sessions and events.
 * Writes run in IMMEDIATE transactions, so several processes sharing the file serialize
 * on the database lock and seq stays dense.
 */
export class SqliteStore implements Store, SessionStore, EventStore {
  readonly kind = 'sqlite' as const;
  readonly #db: Database.Database;
  readonly #tails: Tails;
  readonly #retention: Retention;
  readonly #workers: SqliteWorkers;
  readonly #workspaceStore: SqliteWorkspaces;
  readonly #busyTimeoutMs: number;
  readonly #changes: DataVersionWatcher;
  #tailsWatching = false;
  readonly #stmts;
  /** Multi-row INSERTs of events by their number of rows (1 to INSERT_ROWS), prepared on first use. */
  readonly #insertRows = new Map<number, Database.Statement<unknown[]>>();
  /** Appends made since the last group commit, stored together by #commitAppends. */
  #appendQueue: PendingAppend[] = [];
  #appendCommit: NodeJS.Immediate | undefined;
  readonly #checkpointer: SqliteCheckpointer | undefined;
  /** One append inside the group's transaction: a transaction inside a transaction is a savepoint. */
  readonly #appendInSavepoint: (sessionId: string, events: NewEvent[], now: number) => AppendResult;

  private constructor(
    readonly file: string,
    db: Database.Database,
    tailPollMs: number,
    changeCheckMs: number,
    retention: Retention,
    busyTimeoutMs: number,
    checkpointer: SqliteCheckpointer | undefined,
  ) {
    this.#db = db;
    this.#busyTimeoutMs = busyTimeoutMs;
    this.#checkpointer = checkpointer;
    this.#appendInSavepoint = db.transaction((sessionId: string, events: NewEvent[], now: number) =>
      this.#appendLocked(sessionId, events, now),
    );
    this.#changes = new DataVersionWatcher(db, changeCheckMs);
    // the first tail starts the change check; from then on another process's commit wakes every tail
    this.#tails = new Tails(
      (sessionId, afterSeq, limit) => this.read(sessionId, afterSeq, limit),
      tailPollMs,
      () => {
        if (this.#tailsWatching) return;
        this.#tailsWatching = true;
        this.#changes.subscribe(() => this.#tails.wakeAll());
      },
    );
    this.#retention = retention;
    this.#workers = new SqliteWorkers({
      db,
      call: (what, fn) => this.#call(what, fn),
      tx: (what, fn) => this.#tx(what, fn),
      backgroundTx: (what, fn) => this.#backgroundTx(what, fn),
    });
    this.#workspaceStore = new SqliteWorkspaces({
      db,
      call: (what, fn) => this.#call(what, fn),
      tx: (what, fn) => this.#tx(what, fn),
    });
    this.#stmts = {
      getSession: db.prepare<[string], SessionRow>('SELECT * FROM sessions WHERE id = ?'),
      insertSession: db.prepare(
        `INSERT INTO sessions (id, tenant, status, framework, workspace_id, prompt, options, env, limits, network, created_at)
         VALUES (@id, @tenant, 'queued', @framework, @workspaceId, @prompt, @options, @env, @limits, @network, @createdAt)`,
      ),
      seqState: db.prepare<[string], { last_seq: number; last_rid: number; finish_seq: number | null; status: SessionStatus }>(
        'SELECT last_seq, last_rid, finish_seq, status FROM sessions WHERE id = ?',
      ),
      insertEvent: db.prepare('INSERT INTO events (session_id, seq, rid, type, ts, data) VALUES (?, ?, ?, ?, ?, ?)'),
      setSeq: db.prepare('UPDATE sessions SET last_seq = ?, last_rid = ? WHERE id = ?'),
      read: db.prepare<[string, number, number], EventRow>(
        'SELECT session_id, seq, type, ts, data FROM events WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?',
      ),
      finishEvent: db.prepare<[string], EventRow>(
        'SELECT e.session_id, e.seq, e.type, e.ts, e.data FROM sessions s JOIN events e ON e.session_id = s.id AND e.seq = s.finish_seq WHERE s.id = ?',
      ),
      claim: db.prepare<[ClaimParams], SessionRow>(CLAIM_SQL),
      holdWorkspace: db.prepare(
        `INSERT INTO workspaces (id, holder, tenant, last_session_id, claimed_at) VALUES (@id, @holder, @tenant, @sessionId, @now)
         ON CONFLICT (id) DO UPDATE SET holder = @holder, last_session_id = @sessionId, claimed_at = @now`,
      ),
      workspaceHolder: db.prepare<[string], { holder: string }>('SELECT holder FROM workspaces WHERE id = ?'),
      queuedOnWorkspacesOf: db.prepare<[string], SessionRow>(
        `SELECT s.* FROM sessions s JOIN workspaces w ON w.id = s.workspace_id
         WHERE w.holder = ? AND s.status = 'queued' ORDER BY s.pos`,
      ),
      setContainer: db.prepare<[ClaimHeldParams & { id: string; containerId: string }]>(
        `UPDATE sessions SET container_id = @containerId WHERE id = @id AND status = 'starting' AND ${CLAIM_HELD_SQL}`,
      ),
      markRunning: db.prepare<[ClaimHeldParams & { id: string; startedAt: number; deadlineAt: number }]>(
        `UPDATE sessions SET status = 'running', started_at = @startedAt, deadline_at = @deadlineAt
         WHERE id = @id AND status = 'starting' AND ${CLAIM_HELD_SQL}`,
      ),
      requeue: db.prepare<[ClaimHeldParams & { id: string }]>(
        `UPDATE sessions SET status = 'queued', worker_id = NULL, container_id = NULL
         WHERE id = @id AND status = 'starting' AND ${CLAIM_HELD_SQL}`,
      ),
      claimHeld: db.prepare<[ClaimHeldParams & { id: string }], { held: number }>(
        `SELECT 1 AS held FROM sessions WHERE id = @id AND ${CLAIM_HELD_SQL}`,
      ),
      // a workspace no session ever ran on is given up with the claim that made its holder
      releaseNewWorkspace: db.prepare(
        `DELETE FROM workspaces WHERE id = (SELECT workspace_id FROM sessions WHERE id = @id) AND last_session_id = @id
         AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.workspace_id = workspaces.id AND s.id != @id AND s.worker_id IS NOT NULL)`,
      ),
      requestCancel: db.prepare<[string], SessionRow>(
        `UPDATE sessions SET cancel_requested = 1 WHERE id = ? AND status NOT IN ${TERMINAL_SQL} RETURNING *`,
      ),
      decide: db.prepare(
        `UPDATE sessions SET status = @status, reason = @reason, message = @message, exit_code = @exitCode, ended_at = @at
         WHERE id = @id AND status NOT IN ${TERMINAL_SQL}`,
      ),
      setFinish: db.prepare<[number, string | null, string]>('UPDATE sessions SET finish_seq = ?, usage = ? WHERE id = ?'),
      lastOfType: db.prepare<[string, string], EventRow>(
        'SELECT session_id, seq, type, ts, data FROM events WHERE session_id = ? AND type = ? ORDER BY seq DESC LIMIT 1',
      ),
      // over the ended_at index; json_extract reads the usage of the few rows in range
      usage: db.prepare<[{ from: number; to: number; tenant: string | null }], UsageTotals & { tenant: string; status: TerminalStatus }>(
        `SELECT tenant, status, COUNT(*) AS sessions,
           TOTAL(json_extract(usage, '$.cpuSeconds')) AS cpuSeconds,
           TOTAL(json_extract(usage, '$.memoryGiBSeconds')) AS memoryGiBSeconds,
           TOTAL(json_extract(usage, '$.wallMs')) / 1000.0 AS wallSeconds
         FROM sessions
         WHERE ended_at >= @from AND ended_at < @to AND finish_seq IS NOT NULL AND (@tenant IS NULL OR tenant = @tenant)
         GROUP BY tenant, status`,
      ),
      cancelsOf: db.prepare<[string], { id: string }>(
        `SELECT id FROM sessions WHERE worker_id = ? AND cancel_requested = 1 AND status NOT IN ${TERMINAL_SQL}`,
      ),
      countStatus: db.prepare<[string], { n: number }>('SELECT COUNT(*) AS n FROM sessions WHERE status = ?'),
      expired: db.prepare<[number, number], { id: string }>(
        `SELECT id FROM sessions WHERE ended_at < ? AND status IN ${TERMINAL_SQL} LIMIT ?`,
      ),
      deleteEvents: db.prepare('DELETE FROM events WHERE session_id = ?'),
      deleteSession: db.prepare('DELETE FROM sessions WHERE id = ?'),
    };
  }

  /** Opens (and creates or migrates) the store file. */
  static open(options: SqliteStoreOptions): SqliteStore {
    const retention = new Retention(options.retentionDays ?? 0, `SQLite store ${options.file}`);
    const logger = options.logger ?? silentLogger;
    const checkpointer =
      options.checkpointThread === false
        ? undefined
        : new SqliteCheckpointer({
            file: options.file,
            busyTimeoutMs: options.busyTimeoutMs ?? 5000,
            onError: (err) => logger.error({ err }, 'WAL checkpoint failed; the writer checkpoints past a larger WAL instead'),
          });
    let db: Database.Database | undefined;
    let store: SqliteStore;
    try {
      mkdirSync(dirname(options.file), { recursive: true });
      db = new Database(options.file, { timeout: options.busyTimeoutMs ?? 5000 });
      db.pragma('journal_mode = WAL');
      // commits write the WAL without fsync: a commit survives the process's crash (the OS holds
      // the WAL), a power loss may take the last ones; checkpoints sync (see SqliteCheckpointer)
      db.pragma('synchronous = NORMAL');
      db.pragma('foreign_keys = ON');
      if (checkpointer) {
        // the thread checkpoints; this connection only when the WAL outgrows it (a stuck thread)
        db.pragma(`wal_autocheckpoint = ${WRITER_CHECKPOINT_PAGES}`);
      }
      db.exec(SCHEMA);
      db.exec(WORKERS_SCHEMA);
      migrate(db);
      migrateWorkers(db);
      db.exec(CANCELS_SCHEMA);
      migrateWorkspaceOwners(db);
      store = new SqliteStore(
        options.file,
        db,
        options.tailPollMs ?? 2000,
        options.changeCheckMs ?? 25,
        retention,
        options.busyTimeoutMs ?? 5000,
        checkpointer,
      );
    } catch (cause) {
      db?.close();
      const message = cause instanceof Error ? cause.message : String(cause);
      throw new StoreError(StoreErrorCode.UNAVAILABLE, `cannot open the SQLite store at ${options.file}: ${message}`, { cause });
    }
    retention.start(() => store.purgeExpired(), logger);
    return store;
  }

  get sessions(): SessionStore {
    return this;
  }

  get events(): EventStore {
    return this;
  }

  get workers(): WorkerStore {
    return this.#workers;
  }

  get workspaces(): WorkspaceStore {
    return this.#workspaceStore;
  }

  describe(): string {
    return `sqlite:${this.file}`;
  }

  async close(): Promise<void> {
    // appends already made are stored before the file closes
    this.#commitAppends();
    this.#retention.stop();
    this.#changes.stop();
    this.#tails.close();
    await this.#checkpointer?.close();
    this.#call('close', () => this.#db.close());
  }

  // ---- plumbing ----------------------------------------------------------------------

  /** Every call into the driver goes through here: its failures become StoreError (see toStoreError). */
  #call<T>(what: string, fn: () => T): T {
    try {
      return fn();
    } catch (cause) {
      throw toStoreError(cause, this.file, what, this.#db.open);
    }
  }

  /** A write: one IMMEDIATE transaction, so writers in several processes serialize on the file's lock. */
  #tx<T>(what: string, fn: () => T): T {
    return this.#call(what, () => this.#db.transaction(fn).immediate());
  }

  /**
   * A write that a timer repeats (claims, heartbeats, declarations of death): it waits for a lock
   * held by another process only briefly, because better-sqlite3 waits synchronously and a full
   * busy timeout on every tick would keep the event loop, and every request, waiting.
   */
  #backgroundTx<T>(what: string, fn: () => T): T {
    this.#db.pragma(`busy_timeout = ${BACKGROUND_BUSY_MS}`);
    try {
      return this.#tx(what, fn);
    } finally {
      this.#db.pragma(`busy_timeout = ${this.#busyTimeoutMs}`);
    }
  }

  /** The session's row, read inside a transaction that needs it. */
  #sessionRow(id: string): SessionRow {
    const row = this.#stmts.getSession.get(id);
    if (!row) throw new StoreError(StoreErrorCode.SESSION_NOT_FOUND, `session ${id} does not exist`);
    return row;
  }

  // ---- writes ------------------------------------------------------------------------

  #appendLocked(sessionId: string, events: NewEvent[], now: number): AppendResult {
    const state = this.#stmts.seqState.get(sessionId);
    if (!state) throw new StoreError(StoreErrorCode.SESSION_NOT_FOUND, `session ${sessionId} does not exist`);
    if (state.finish_seq !== null) return { stored: [], duplicates: 0, closed: true };
    const { fresh, duplicates, lastRid } = dropResent(events, state.last_rid);
    const stored = this.#insertEventsLocked(sessionId, state.last_seq + 1, fresh, now);
    if (stored.length > 0) this.#stmts.setSeq.run(state.last_seq + stored.length, lastRid, sessionId);
    return { stored, duplicates, closed: false };
  }

  /** Inserts `events` with seq from `firstSeq` on, INSERT_ROWS rows per statement. */
  #insertEventsLocked(sessionId: string, firstSeq: number, events: NewEvent[], now: number): SessionEvent[] {
    const stored: SessionEvent[] = new Array<SessionEvent>(events.length);
    for (let from = 0; from < events.length; from += INSERT_ROWS) {
      const n = Math.min(INSERT_ROWS, events.length - from);
      const params: unknown[] = new Array<unknown>(n * 6);
      for (let i = 0; i < n; i++) {
        const ev = events[from + i] as NewEvent;
        const seq = firstSeq + from + i;
        const ts = ev.ts ?? now;
        const p = i * 6;
        params[p] = sessionId;
        params[p + 1] = seq;
        params[p + 2] = ev.rid ?? null;
        params[p + 3] = ev.type;
        params[p + 4] = ts;
        params[p + 5] = JSON.stringify(ev.data);
        stored[from + i] = { sessionId, seq, type: ev.type, ts, data: ev.data };
      }
      this.#insertRowsStatement(n).run(params);
    }
    return stored;
  }

  #insertRowsStatement(rows: number): Database.Statement<unknown[]> {
    let stmt = this.#insertRows.get(rows);
    if (!stmt) {
      const values = Array.from({ length: rows }, () => '(?, ?, ?, ?, ?, ?)').join(', ');
      stmt = this.#db.prepare<unknown[]>(`INSERT INTO events (session_id, seq, rid, type, ts, data) VALUES ${values}`);
      this.#insertRows.set(rows, stmt);
    }
    return stmt;
  }

  #insertEventLocked(sessionId: string, seq: number, ev: NewEvent, ts: number): SessionEvent {
    this.#stmts.insertEvent.run(sessionId, seq, ev.rid ?? null, ev.type, ts, JSON.stringify(ev.data));
    return { sessionId, seq, type: ev.type, ts, data: ev.data };
  }

  async createSession(s: NewSession): Promise<SessionRecord> {
    const now = Date.now();
    const row = this.#tx('createSession', () => {
      if (this.#stmts.getSession.get(s.id)) {
        throw new StoreError(StoreErrorCode.SESSION_EXISTS, `session ${s.id} already exists`);
      }
      this.#stmts.insertSession.run({
        id: s.id,
        tenant: s.tenant,
        framework: s.framework,
        workspaceId: s.workspaceId,
        prompt: s.prompt,
        options: JSON.stringify(s.options),
        env: JSON.stringify(s.env),
        limits: JSON.stringify(s.limits),
        network: s.network,
        createdAt: now,
      });
      this.#appendLocked(s.id, [{ type: 'SESSION_QUEUED', data: { framework: s.framework, workspaceId: s.workspaceId } }], now);
      return this.#sessionRow(s.id);
    });
    this.#tails.wake(s.id);
    return toSession(row);
  }

  /**
   * Group commit: appends made in the same turn of the event loop (the batches of every session
   * that sent something) are stored in one transaction on the next turn, each in a savepoint of
   * its own, and each resolves once that transaction is committed. A commit costs far more than
   * a row (the WAL frames of every page it touched), so ten sessions' batches in one commit
   * store several times as many rows per second as ten commits.
   */
  async append(sessionId: string, events: NewEvent[]): Promise<AppendResult> {
    if (events.length === 0) return { stored: [], duplicates: 0, closed: false };
    return new Promise<AppendResult>((resolve, reject) => {
      this.#appendQueue.push({ sessionId, events, resolve, reject });
      this.#appendCommit ??= setImmediate(() => this.#commitAppends());
    });
  }

  /**
   * Stores the queued appends in one IMMEDIATE transaction. An append that fails on its own
   * (its session does not exist) is rolled back to its savepoint and rejected; the others
   * commit. A failure of the transaction itself (the file busy past the timeout, I/O, a full
   * disk, which end the transaction) rejects every one of them: nothing of theirs is stored.
   */
  #commitAppends(): void {
    if (this.#appendCommit) clearImmediate(this.#appendCommit);
    this.#appendCommit = undefined;
    const queue = this.#appendQueue;
    if (queue.length === 0) return;
    this.#appendQueue = [];
    const now = Date.now();
    type Outcome = { result: AppendResult } | { error: unknown };
    let outcomes: Outcome[];
    try {
      outcomes = this.#tx('append', () =>
        queue.map((a): Outcome => {
          try {
            return { result: this.#appendInSavepoint(a.sessionId, a.events, now) };
          } catch (cause) {
            // an error that ended the transaction fails the whole group (it is not one append's)
            if (!this.#db.inTransaction) throw cause;
            return { error: toStoreError(cause, this.file, 'append', this.#db.open) };
          }
        }),
      );
    } catch (err) {
      for (const a of queue) a.reject(err);
      return;
    }
    this.#checkpointer?.committed();
    for (const [i, a] of queue.entries()) {
      const outcome = outcomes[i] as Outcome;
      if ('error' in outcome) {
        a.reject(outcome.error);
        continue;
      }
      this.#tails.notify(a.sessionId, outcome.result.stored);
      a.resolve(outcome.result);
    }
  }

  async claimNext(workerId: string, options: ClaimOptions = {}): Promise<SessionRecord | null> {
    const now = options.lease?.now ?? Date.now();
    const params: ClaimParams = {
      worker: workerId,
      exclude: JSON.stringify(options.excludeTenants ?? []),
      maxPerTenant: options.maxPerTenant ?? 0,
      maxClaimed: options.maxClaimed ?? 0,
      epoch: options.lease?.epoch ?? null,
      now,
      workspaces: options.workspaces ? 1 : 0,
      shared: options.workspaces?.shared ? 1 : 0,
    };
    const row = this.#backgroundTx('claimNext', () => {
      const claimed = this.#stmts.claim.get(params);
      if (claimed && options.workspaces) {
        this.#stmts.holdWorkspace.run({ id: claimed.workspace_id, holder: workerId, tenant: claimed.tenant, sessionId: claimed.id, now });
      }
      return claimed;
    });
    return row ? toSession(row) : null;
  }

  async workspaceHolder(workspaceId: string): Promise<string | null> {
    return this.#call('workspaceHolder', () => this.#stmts.workspaceHolder.get(workspaceId)?.holder ?? null);
  }

  async findQueuedOnWorkspacesOf(workerId: string): Promise<SessionRecord[]> {
    return this.#call('findQueuedOnWorkspacesOf', () => this.#stmts.queuedOnWorkspacesOf.all(workerId)).map(toSession);
  }

  /** Inside a write's transaction: why a claim write changed nothing (see ClaimWrite). */
  #unapplied(id: string, held: ClaimHeldParams): ClaimWrite {
    return this.#stmts.claimHeld.get({ id, ...held }) ? 'decided' : 'lost';
  }

  async setContainer(id: string, containerId: string, claim?: ClaimRef): Promise<ClaimWrite> {
    const held = claimParams(claim);
    return this.#tx('setContainer', () =>
      this.#stmts.setContainer.run({ id, containerId, ...held }).changes === 1 ? 'done' : this.#unapplied(id, held),
    );
  }

  async markRunning(id: string, startedAt: number, deadlineAt: number, claim?: ClaimRef): Promise<ClaimWrite> {
    const held = claimParams(claim);
    return this.#tx('markRunning', () =>
      this.#stmts.markRunning.run({ id, startedAt, deadlineAt, ...held }).changes === 1 ? 'done' : this.#unapplied(id, held),
    );
  }

  async requeue(id: string, claim?: ClaimRef): Promise<ClaimWrite> {
    const held = claimParams(claim);
    return this.#tx('requeue', () => {
      if (this.#stmts.requeue.run({ id, ...held }).changes !== 1) return this.#unapplied(id, held);
      this.#stmts.releaseNewWorkspace.run({ id });
      return 'done';
    });
  }

  async requestCancel(id: string): Promise<SessionRecord | null> {
    const row = this.#tx('requestCancel', () => this.#stmts.requestCancel.get(id));
    return row ? toSession(row) : null;
  }

  /**
   * After each commit by another process (the change check), one indexed query for this
   * worker's undecided sessions with a cancel request; `onCancel` hears each of them, again at
   * later commits until the session is decided (the caller ignores what it already acts on).
   * This process's own requestCancel is not reported: its caller acts on it directly.
   */
  watchCancels(workerId: string, onCancel: (sessionId: string) => void): () => void {
    return this.#changes.subscribe(() => {
      if (!this.#db.open) return;
      let rows: { id: string }[];
      try {
        rows = this.#stmts.cancelsOf.all(workerId);
      } catch {
        // busy or closing: the next commit, or the monitor's own poll, catches it
        return;
      }
      for (const { id } of rows) onCancel(id);
    });
  }

  /** How many commits by other connections the change check has noticed. */
  get changesSeen(): number {
    return this.#changes.changes;
  }

  async decide(id: string, outcome: Outcome, options: DecideOptions = {}): Promise<DecideResult> {
    const { events = [], from, at = Date.now(), claimedBy } = options;
    let stored: SessionEvent[] = [];
    const result = this.#tx('decide', () => {
      const current = this.#sessionRow(id);
      const allowed =
        (from ? from.includes(current.status) : !isTerminal(current.status)) &&
        (!claimedBy || this.#stmts.claimHeld.get({ id, ...claimParams(claimedBy) }) !== undefined);
      const changed = !allowed
        ? 0
        : this.#stmts.decide.run({
            id,
            status: outcome.status,
            reason: outcome.reason,
            message: outcome.message ?? null,
            exitCode: outcome.exitCode ?? null,
            at,
          }).changes;
      if (changed === 1 && events.length > 0) stored = this.#appendLocked(id, events, at).stored;
      return { won: changed === 1, session: toSession(this.#sessionRow(id)) };
    });
    this.#tails.notify(id, stored);
    return result;
  }

  async appendFinish(id: string, data: FinishData, rid?: number): Promise<SessionEvent> {
    const result = this.#tx('appendFinish', () => {
      const row = this.#sessionRow(id);
      if (!isTerminal(row.status)) {
        throw new StoreError(StoreErrorCode.NOT_DECIDED, `session ${id} is ${row.status}; decide it before FINISH`);
      }
      if (row.finish_seq !== null) {
        const stored = this.#stmts.finishEvent.get(id);
        if (!stored) throw new StoreError(StoreErrorCode.UNAVAILABLE, `SQLite store ${this.file}: session ${id} lacks its FINISH event`);
        return { event: toEvent(stored), fresh: false };
      }
      // the stream is open (finish_seq is null), so FINISH takes the next seq
      const ev: NewEvent = { type: 'FINISH', data: { ...data } };
      if (rid !== undefined && rid > row.last_rid) ev.rid = rid;
      const finish = this.#insertEventLocked(id, row.last_seq + 1, ev, Date.now());
      this.#stmts.setSeq.run(finish.seq, ev.rid ?? row.last_rid, id);
      this.#stmts.setFinish.run(finish.seq, data.usage !== undefined ? JSON.stringify(data.usage) : null, id);
      return { event: finish, fresh: true };
    });
    if (result.fresh) this.#tails.wake(id);
    return result.event;
  }

  /**
   * Deletes terminal sessions that ended before `now` minus the retention, with their events,
   * in batches of short transactions so writers are not held up by a large purge.
   */
  async purgeExpired(now: number = Date.now()): Promise<number> {
    return this.#retention.purge(now, async (cutoff, limit) =>
      this.#tx('purgeExpired', () => {
        const ids = this.#stmts.expired.all(cutoff, limit);
        let removed = 0;
        for (const { id } of ids) {
          this.#stmts.deleteEvents.run(id);
          removed += this.#stmts.deleteSession.run(id).changes;
        }
        return { found: ids.length, removed };
      }),
    );
  }

  // ---- reads -------------------------------------------------------------------------

  async getSession(id: string): Promise<SessionRecord | null> {
    const row = this.#call('getSession', () => this.#stmts.getSession.get(id));
    return row ? toSession(row) : null;
  }

  async listSessions(q: ListQuery): Promise<SessionPage> {
    const params: unknown[] = [decodeCursor(q.cursor)];
    let where = 'pos < ?';
    if (q.tenant !== undefined) {
      where += ' AND tenant = ?';
      params.push(q.tenant);
    }
    if (q.status && q.status.length > 0) {
      where += ` AND status IN (${q.status.map(() => '?').join(',')})`;
      params.push(...q.status);
    }
    params.push(q.limit + 1);
    const rows = this.#call('listSessions', () =>
      this.#db.prepare<unknown[], SessionRow>(`SELECT * FROM sessions WHERE ${where} ORDER BY pos DESC LIMIT ?`).all(...params),
    );
    return toPage(rows, q.limit, toSession);
  }

  async countByStatus(status: SessionStatus): Promise<number> {
    // COUNT(*) always returns its one row
    return this.#call('countByStatus', () => this.#stmts.countStatus.get(status)?.n ?? 0);
  }

  async findByStatus(status: SessionStatus[], workerId?: string): Promise<SessionRecord[]> {
    const params: unknown[] = [...status];
    let sql = `SELECT * FROM sessions WHERE status IN (${status.map(() => '?').join(',')})`;
    if (workerId !== undefined) {
      sql += ' AND worker_id = ?';
      params.push(workerId);
    }
    const rows = this.#call('findByStatus', () => this.#db.prepare<unknown[], SessionRow>(`${sql} ORDER BY pos`).all(...params));
    return rows.map(toSession);
  }

  async findUnfinished(): Promise<SessionRecord[]> {
    const rows = this.#call('findUnfinished', () =>
      this.#db.prepare<[], SessionRow>(`SELECT * FROM sessions WHERE status IN ${TERMINAL_SQL} AND finish_seq IS NULL ORDER BY pos`).all(),
    );
    return rows.map(toSession);
  }

  async read(sessionId: string, afterSeq: number, limit: number): Promise<SessionEvent[]> {
    return this.#call('read', () => this.#stmts.read.all(sessionId, afterSeq, limit)).map(toEvent);
  }

  async getFinishEvent(sessionId: string): Promise<SessionEvent | null> {
    const row = this.#call('getFinishEvent', () => this.#stmts.finishEvent.get(sessionId));
    return row ? toEvent(row) : null;
  }

  async lastOfType(sessionId: string, type: EventType): Promise<SessionEvent | null> {
    // backwards over the primary key: as far back as the last event of the type
    const row = this.#call('lastOfType', () => this.#stmts.lastOfType.get(sessionId, type));
    return row ? toEvent(row) : null;
  }

  async usageByTenant(q: UsageQuery): Promise<TenantUsage[]> {
    const rows = this.#call('usageByTenant', () => this.#stmts.usage.all({ from: q.from, to: q.to, tenant: q.tenant ?? null }));
    return tenantUsageOf(rows);
  }

  async lastRid(sessionId: string): Promise<number> {
    return this.#call('lastRid', () => this.#stmts.seqState.get(sessionId)?.last_rid ?? 0);
  }

  tail(sessionId: string, options: TailOptions): AsyncIterable<SessionEvent> {
    return this.#tails.events(sessionId, options);
  }

  tailBatches(sessionId: string, options: TailOptions): AsyncIterable<SessionEvent[]> {
    return this.#tails.batches(sessionId, options);
  }
}
