import {
  BSON,
  MongoClient,
  MongoBulkWriteError,
  MongoError,
  MongoServerError,
  WriteConcern,
  type ClientSession,
  type Collection,
  type Db,
  type Document,
  type Filter,
  type TransactionOptions,
  type WriteError,
} from 'mongodb';
import type { EventType, FinishData, SessionEvent, SessionStatus, SessionUsage, TerminalStatus } from '@mgx/agent-sdk';
import { isTerminal, SESSION_STATUSES, TERMINAL_STATUSES } from '@mgx/agent-sdk';
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
  WorkerStore,
  WorkspaceStore,
} from './ports.js';
import { tenantUsageOf } from './ports.js';
import { KeptChangeStream } from './change-stream.js';
import { describeMongoUri, scrubMongoUri } from './mongodb-uri.js';
import { watchCancelRequests } from './mongodb-cancels.js';
import { MongoWorkers, type WorkerDoc } from './mongodb-workers.js';
import {
  MongoWorkspaces,
  noWriteAt,
  type WorkspaceHolderDoc,
  type WorkspaceOwnerDoc,
  type WorkspaceSessionDoc,
} from './mongodb-workspaces.js';
import { dropResent } from './resend.js';
import { Retention } from './retention.js';
import { Tails } from './tail.js';

export interface MongoStoreOptions {
  /** mongodb:// or mongodb+srv:// connection string; it may carry credentials and driver options. */
  uri: string;
  dbName: string;
  /** Terminal sessions and their events are removed this many days after they ended; 0 keeps them. */
  retentionDays: number;
  /**
   * How often a tail re-reads when nothing woke it. Live tails are woken by this process's
   * own appends and, on a replica set, by a change stream; the poll is the safety net.
   * Default 1000 ms with change streams, 250 ms without.
   */
  tailPollMs?: number;
  /**
   * Set false to run without multi-document transactions even on a replica set (the ordered
   * steps a standalone server gets), so one replica set can test both paths. True cannot turn
   * transactions on where the deployment lacks them.
   */
  useTransactions?: boolean;
  /** Set false to tail by polling even where change streams are available. */
  useChangeStreams?: boolean;
  /**
   * How long a write waits for a majority of the replica set to acknowledge it (wtimeoutMS; for
   * a transaction, maxCommitTimeMS on its commit) before it fails with STORE_UNAVAILABLE. Such a
   * write may still be applied, as after any lost reply: the callers' retries are idempotent
   * (re-sent rids, decide's compare-and-set, FINISH once). Finding a primary at all is bounded
   * by the driver's serverSelectionTimeoutMS (a URI option, 30 s by default). Default 10000 ms.
   */
  writeTimeoutMs?: number;
  /** Where the store reports what it cannot hand to a caller (a failed purge or change stream). */
  logger?: Logger;
}

const DEFAULT_WRITE_TIMEOUT_MS = 10_000;

/**
 * A session document. `_id` is the session id (so the id is unique by the _id index).
 * `lastSeq`/`lastRid` are the seq and runner id of the last stored event, moved up only after
 * events are stored (they may lag behind, never run ahead; see #appendSteps); `closingSeq` is
 * set when FINISH is being stored (the stream takes no more events from then on) and
 * `finishSeq` once FINISH is stored (both then hold its seq). Client and agent JSON (`options`, event `data`) is kept as JSON text: any key
 * (`$schema`, dotted names) and any depth round-trips exactly as in the SQLite store, and the
 * event size limit ingest enforces on the JSON is the size stored.
 */
interface SessionDoc extends Omit<SessionRecord, 'id' | 'options' | 'env' | 'usage'> {
  _id: string;
  pos: number;
  options: string;
  /** JSON text, like options; absent on documents written before it existed. */
  env?: string;
  /** FINISH's usage as JSON text (an open record: any key round-trips); set with FINISH. */
  usage?: string;
  /** The numbers of `usage` that usageByTenant sums, as fields the aggregation can read. */
  usageTotals?: { cpuSeconds: number; memoryGiBSeconds: number; wallMs: number };
  lastRid: number;
  closingSeq: number | null;
}

interface EventDoc {
  sessionId: string;
  seq: number;
  /** Absent for platform events, so the partial unique index on (sessionId, rid) skips them. */
  rid?: number;
  type: EventType;
  ts: number;
  data: string;
}

interface CounterDoc {
  _id: string;
  value: number;
}

/**
 * A count of claimed (starting or running) sessions: `all` for the fleet, `tenant:<name>` per
 * tenant. A claim takes a slot with a conditional $inc (count < max) before it moves a session,
 * and gives it back when it moves none; the step that moves a session out of starting or running
 * (decide, requeue) gives its slots back.
 */
interface ClaimCountDoc {
  _id: string;
  count: number;
}

/** What a claim needs of a queued session to decide whether it may take it. */
type ClaimCandidate = Pick<SessionDoc, '_id' | 'tenant' | 'workspaceId' | 'pos'>;
type ClaimAttempt = { claimed: SessionDoc } | { skip: 'tenant' | 'fleet' | 'workspace' | 'taken' };

const POS_COUNTER = 'sessions.pos';
const ALL_CLAIMS = 'all';
const tenantClaims = (tenant: string): string => `tenant:${tenant}`;
/** Worker states under which a worker's writes on its claims stand (see ClaimRef). */
const LIVE_WORKER: WorkerDoc['state'][] = ['alive', 'draining'];
/** The session side of a claim write's condition: still claimed by that worker. */
const claimedBy = (claim: ClaimRef | undefined): Filter<SessionDoc> => (claim ? { workerId: claim.workerId } : {});
/** Queued sessions a claim reads per page while it looks for one it may take. */
const CLAIM_PAGE = 50;
/** TTL indexes of earlier versions, dropped at open (see purgeExpired). */
export const LEGACY_TTL_INDEXES: readonly (readonly [string, string])[] = [
  ['events', 'events_ttl'],
  ['sessions', 'sessions_ttl'],
];
const TERMINAL: SessionStatus[] = [...TERMINAL_STATUSES];
const NON_TERMINAL: SessionStatus[] = SESSION_STATUSES.filter((s) => !isTerminal(s));
/** MaxTimeMSExpired, and WriteConcernFailed (a wtimeout). */
const TIMEOUT_CODES = new Set<unknown>([50, 64]);

/** Whether a write failed because a majority did not acknowledge it in time (wtimeout, or maxCommitTimeMS of a commit). */
function majorityTimedOut(err: MongoError): boolean {
  if (err instanceof MongoBulkWriteError && err.err) return TIMEOUT_CODES.has(err.err.code);
  if (err instanceof MongoServerError) return TIMEOUT_CODES.has(err.code) || TIMEOUT_CODES.has(err.writeConcernError?.code);
  return false;
}
const EVENT_FIELDS = { _id: 0, sessionId: 1, seq: 1, type: 1, ts: 1, data: 1 } as const;

const toSession = (d: SessionDoc): SessionRecord => ({
  id: d._id,
  tenant: d.tenant,
  status: d.status,
  framework: d.framework,
  workspaceId: d.workspaceId,
  prompt: d.prompt,
  options: JSON.parse(d.options) as Record<string, unknown>,
  env: JSON.parse(d.env ?? '{}') as Record<string, string>,
  limits: {
    memoryBytes: d.limits.memoryBytes,
    cpuQuota: d.limits.cpuQuota,
    timeoutMs: d.limits.timeoutMs,
    ...(d.limits.idleTimeoutMs !== undefined ? { idleTimeoutMs: d.limits.idleTimeoutMs } : {}),
    ...(d.limits.maxModelTokens !== undefined ? { maxModelTokens: d.limits.maxModelTokens } : {}),
    ...(d.limits.maxModelCalls !== undefined ? { maxModelCalls: d.limits.maxModelCalls } : {}),
    ...(d.limits.recordModelContent === true ? { recordModelContent: true } : {}),
    ...(d.limits.egressAllow !== undefined ? { egressAllow: d.limits.egressAllow } : {}),
  },
  network: d.network,
  createdAt: d.createdAt,
  startedAt: d.startedAt,
  endedAt: d.endedAt,
  deadlineAt: d.deadlineAt,
  workerId: d.workerId,
  containerId: d.containerId,
  reason: d.reason,
  exitCode: d.exitCode,
  message: d.message,
  cancelRequested: d.cancelRequested,
  lastSeq: d.lastSeq,
  finishSeq: d.finishSeq,
  usage: typeof d.usage === 'string' ? (JSON.parse(d.usage) as SessionUsage) : null,
});

const toEvent = (d: Pick<EventDoc, 'sessionId' | 'seq' | 'type' | 'ts' | 'data'>): SessionEvent => ({
  sessionId: d.sessionId,
  seq: d.seq,
  type: d.type,
  ts: d.ts,
  data: JSON.parse(d.data) as Record<string, unknown>,
});

const eventDoc = (sessionId: string, seq: number, ev: NewEvent, ts: number, rid: number | undefined): EventDoc => {
  const doc: EventDoc = { sessionId, seq, type: ev.type, ts, data: JSON.stringify(ev.data) };
  if (rid !== undefined) doc.rid = rid;
  return doc;
};

const isDuplicateKey = (err: unknown): boolean => err instanceof MongoServerError && err.code === 11000;

/**
 * An ordered insert that stopped at a duplicate key, every write acknowledged: another writer
 * took the seq (look again and retry) or stored the same runner event (a duplicate). A write
 * concern error means what was stored may roll back: that is a failure.
 */
function isConflict(err: unknown): boolean {
  if (!(err instanceof MongoBulkWriteError) || err.result.getWriteConcernError()) return false;
  const errors: WriteError[] = Array.isArray(err.writeErrors) ? (err.writeErrors as WriteError[]) : [err.writeErrors as WriteError];
  return errors.length > 0 && errors.every((e) => e.code === 11000);
}

/** Attempts of a write that keeps meeting other writers' events before it gives up (each loss means one of them progressed). */
const MAX_WRITE_ATTEMPTS = 50;

/**
 * The MongoDB store. Sessions and events live in the `sessions` and `events` collections;
 * `counters` numbers sessions for FIFO claims and listing. Every write uses write concern
 * majority.
 *
 * Each multi-document write (createSession, append, decide, appendFinish) is a sequence of
 * ordered, idempotent steps. On a replica set or sharded cluster the sequence runs in one
 * transaction, so it is all-or-nothing and concurrent writers to one session serialize on its
 * document (a write conflict retries the whole transaction). On a standalone server the same
 * steps run without one; each method says why the order keeps it correct, and what a crash
 * between two steps leaves. Within this process, writes to one session are queued, so they
 * never conflict with each other and become visible in seq order. Across processes, without
 * transactions, the unique indexes on (sessionId, seq) and (sessionId, rid) keep seq dense and
 * each event once, and no event is lost (see #appendSteps for what holds and why).
 */
export class MongoStore implements Store, SessionStore, EventStore {
  readonly kind = 'mongodb' as const;
  readonly #client: MongoClient;
  readonly #where: string;
  readonly #description: string;
  readonly #sessions: Collection<SessionDoc>;
  readonly #events: Collection<EventDoc>;
  /** `events` for what callers read (read, getFinishEvent, tails): majority read concern on a replica set. */
  readonly #eventReads: Collection<EventDoc>;
  /** `sessions` read with majority read concern (lastRid: a runner resumes after what it returns). */
  readonly #sessionReads: Collection<SessionDoc>;
  readonly #counters: Collection<CounterDoc>;
  readonly #claims: Collection<ClaimCountDoc>;
  readonly #workspaces: Collection<WorkspaceHolderDoc>;
  readonly #workerDocs: Collection<WorkerDoc>;
  readonly #workers: MongoWorkers;
  readonly #workspaceStore: MongoWorkspaces;
  readonly #transactions: boolean;
  readonly #changeStreams: boolean;
  readonly #retention: Retention;
  readonly #tails: Tails;
  readonly #logger: Logger;
  readonly #writeTimeoutMs: number;
  readonly #txOptions: TransactionOptions;
  readonly #queues = new Map<string, Promise<unknown>>();
  readonly #stream: KeptChangeStream | undefined;
  #closed = false;

  private constructor(
    client: MongoClient,
    db: Db,
    where: string,
    description: string,
    features: { transactions: boolean; changeStreams: boolean; replicated: boolean },
    retention: Retention,
    tailPollMs: number,
    logger: Logger,
    writeTimeoutMs: number,
  ) {
    this.#client = client;
    this.#where = where;
    this.#description = description;
    this.#sessions = db.collection<SessionDoc>('sessions');
    this.#events = db.collection<EventDoc>('events');
    // Reads that callers see must not show what a failover rolls back (a write applied on the
    // primary but not yet on a majority): majority read concern. The write path's own reads stay
    // local (fresher): what they find only decides where a write goes, and the unique indexes
    // settle a stale view. A standalone server has no rollback and no majority to wait for.
    const majority = features.replicated ? { readConcern: { level: 'majority' as const } } : {};
    this.#eventReads = db.collection<EventDoc>('events', majority);
    this.#sessionReads = db.collection<SessionDoc>('sessions', majority);
    this.#counters = db.collection<CounterDoc>('counters');
    this.#claims = db.collection<ClaimCountDoc>('claims');
    this.#workspaces = db.collection<WorkspaceHolderDoc>('workspaces');
    this.#workerDocs = db.collection<WorkerDoc>('workers');
    this.#workers = new MongoWorkers(this.#workerDocs, (what, fn) => this.#guard(what, fn));
    this.#workspaceStore = new MongoWorkspaces({
      owners: db.collection<WorkspaceOwnerDoc>('workspace_owners'),
      sessions: db.collection<WorkspaceSessionDoc>('sessions'),
      holders: this.#workspaces,
      guard: (what, fn) => this.#guard(what, fn),
      atomically: (fn) => this.#atomically(fn),
      nextPos: () => this.#nextPos(),
    });
    this.#transactions = features.transactions;
    this.#changeStreams = features.changeStreams;
    this.#retention = retention;
    this.#logger = logger;
    this.#writeTimeoutMs = writeTimeoutMs;
    // no wtimeout on the commit: maxCommitTimeMS bounds it and, unlike a wtimeout, is not retried by withTransaction
    this.#txOptions = {
      readConcern: { level: 'snapshot' },
      writeConcern: new WriteConcern('majority'),
      readPreference: 'primary',
      maxCommitTimeMS: writeTimeoutMs,
    };
    // the change stream opens with the first tail: it wakes the tails for other processes' writes
    this.#tails = new Tails(
      (sessionId, afterSeq, limit) => this.read(sessionId, afterSeq, limit),
      tailPollMs,
      () => this.#stream?.start(),
    );
    this.#stream = features.changeStreams ? this.#eventsStream() : undefined;
  }

  /** Connects, learns what the deployment supports, creates the indexes, and returns the store. */
  static async open(options: MongoStoreOptions): Promise<MongoStore> {
    const where = `${describeMongoUri(options.uri)} (database ${options.dbName})`;
    const retention = new Retention(options.retentionDays, `MongoDB store ${where}`);
    const logger = options.logger ?? silentLogger;
    const writeTimeoutMs = options.writeTimeoutMs ?? DEFAULT_WRITE_TIMEOUT_MS;
    if (!Number.isInteger(writeTimeoutMs) || writeTimeoutMs <= 0) {
      throw new StoreError(StoreErrorCode.UNAVAILABLE, `MongoDB store ${where}: writeTimeoutMs must be a whole number > 0`);
    }
    let client: MongoClient | undefined;
    try {
      client = new MongoClient(options.uri, {
        appName: 'mgx',
        writeConcern: { w: 'majority', wtimeoutMS: writeTimeoutMs },
        // an optional field left undefined is absent, as in JSON, not stored as null
        ignoreUndefined: true,
      });
      await client.connect();
      const db = client.db(options.dbName);
      const admin = client.db('admin');
      const hello = await admin.command({ hello: 1 }).catch(() => admin.command({ isMaster: 1 }));
      // transactions and change streams need a replica set (setName) or a mongos (isdbgrid)
      const replicated = typeof hello.setName === 'string' || hello.msg === 'isdbgrid';
      await createIndexes(db);
      const store = new MongoStore(
        client,
        db,
        where,
        `${describeMongoUri(options.uri)}/${options.dbName}`,
        {
          transactions: replicated && options.useTransactions !== false,
          changeStreams: replicated && options.useChangeStreams !== false,
          replicated,
        },
        retention,
        options.tailPollMs ?? (replicated && options.useChangeStreams !== false ? 1000 : 250),
        logger,
        writeTimeoutMs,
      );
      // the sweep applies this process's current retention (see purgeExpired)
      retention.start(() => store.purgeExpired(), logger);
      return store;
    } catch (cause) {
      await client?.close().catch(() => undefined);
      const message = cause instanceof Error ? cause.message : String(cause);
      throw new StoreError(
        StoreErrorCode.UNAVAILABLE,
        `cannot open the MongoDB store at ${where}: ${scrubMongoUri(message, options.uri)}`,
        {
          cause,
        },
      );
    }
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

  /** Which code paths this deployment gets (health output, tests). */
  get features(): { transactions: boolean; changeStreams: boolean } {
    return { transactions: this.#transactions, changeStreams: this.#changeStreams };
  }

  describe(): string {
    return this.#description;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#retention.stop();
    this.#tails.close();
    await this.#stream?.close();
    await this.#client.close();
  }

  // ---- plumbing ---------------------------------------------------------------------

  /** Runs `fn`, turning driver failures into StoreError so callers see one error type. */
  async #guard<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (cause) {
      if (cause instanceof StoreError) throw cause;
      if (cause instanceof MongoError && majorityTimedOut(cause)) {
        throw new StoreError(
          StoreErrorCode.UNAVAILABLE,
          `MongoDB store ${this.#where}: ${what}: no majority of the replica set acknowledged the write within ${this.#writeTimeoutMs} ms (it may still be applied): ${cause.message}`,
          { cause },
        );
      }
      if (cause instanceof MongoError || BSON.BSONError.isBSONError(cause)) {
        throw new StoreError(StoreErrorCode.UNAVAILABLE, `MongoDB store ${this.#where}: ${what}: ${cause.message}`, { cause });
      }
      throw cause;
    }
  }

  /** The steps in one transaction where the deployment has them, else one after the other. */
  async #atomically<T>(fn: (session: ClientSession | undefined) => Promise<T>): Promise<T> {
    if (!this.#transactions) return fn(undefined);
    // withTransaction retries `fn` on transient errors (write conflicts, a lost primary) for up
    // to two minutes; past the write timeout a retry is not started, so a write is bounded
    const giveUpAt = Date.now() + this.#writeTimeoutMs;
    let attempts = 0;
    // `fn` keeps no state outside its result: a retry starts over
    return this.#client.withSession((session) =>
      session.withTransaction(() => {
        if (attempts++ > 0 && Date.now() > giveUpAt) {
          throw new StoreError(
            StoreErrorCode.UNAVAILABLE,
            `MongoDB store ${this.#where}: a transaction kept failing for ${this.#writeTimeoutMs} ms (write conflicts or no primary)`,
          );
        }
        return fn(session);
      }, this.#txOptions),
    );
  }

  /** Queues writes to one session in this process: no self-inflicted write conflicts, and seq order is insert order. */
  async #serial<T>(sessionId: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.#queues.get(sessionId) ?? Promise.resolve();
    const run = previous.then(() => fn());
    const settled = run.then(
      () => undefined,
      () => undefined,
    );
    this.#queues.set(sessionId, settled);
    try {
      return await run;
    } finally {
      if (this.#queues.get(sessionId) === settled) this.#queues.delete(sessionId);
    }
  }

  async #nextPos(): Promise<number> {
    // outside any transaction: one hot document would make every concurrent create conflict;
    // a number lost to an aborted create only leaves a gap in the order
    const doc = await this.#counters.findOneAndUpdate(
      { _id: POS_COUNTER },
      { $inc: { value: 1 } },
      { upsert: true, returnDocument: 'after' },
    );
    if (!doc) throw new StoreError(StoreErrorCode.UNAVAILABLE, `MongoDB store ${this.#where}: the session counter was not returned`);
    return doc.value;
  }

  /**
   * Where a session's stream stands. From the session document alone (`verify` false) its
   * counters, which move only after events are stored, so they never claim more than is stored;
   * with `verify`, from the events themselves (the highest seq, and the highest rid through the
   * rid index), for when the counters may lag behind what another writer stored. `closed` once
   * FINISH is being stored (closingSeq) or is stored.
   */
  async #streamState(
    sessionId: string,
    verify: boolean,
    session: ClientSession | undefined,
  ): Promise<{ lastSeq: number; lastRid: number; closed: boolean }> {
    const opt = session ? { session } : {};
    const doc = await this.#sessions.findOne({ _id: sessionId }, { projection: { lastSeq: 1, lastRid: 1, closingSeq: 1 }, ...opt });
    if (!doc) throw new StoreError(StoreErrorCode.SESSION_NOT_FOUND, `session ${sessionId} does not exist`);
    if (doc.closingSeq !== null || !verify) return { lastSeq: doc.lastSeq, lastRid: doc.lastRid, closed: doc.closingSeq !== null };
    const tip = await this.#storedTip(sessionId, session);
    return { lastSeq: Math.max(doc.lastSeq, tip.lastSeq), lastRid: Math.max(doc.lastRid, tip.lastRid), closed: tip.finished };
  }

  /** The highest seq and rid stored in `events` for a session, and whether its last event is FINISH. */
  async #storedTip(
    sessionId: string,
    session: ClientSession | undefined,
  ): Promise<{ lastSeq: number; lastRid: number; finished: boolean }> {
    const opt = session ? { session } : {};
    const last = await this.#events.findOne({ sessionId }, { sort: { seq: -1 }, projection: { _id: 0, seq: 1, type: 1 }, ...opt });
    const rid = await this.#events.findOne(
      { sessionId, rid: { $exists: true } },
      { sort: { rid: -1 }, projection: { _id: 0, rid: 1 }, ...opt },
    );
    return { lastSeq: last?.seq ?? 0, lastRid: rid?.rid ?? 0, finished: last?.type === 'FINISH' };
  }

  /**
   * Stores the new events of `events` after the last stored one, then moves the session's
   * counters (lastSeq, lastRid) up to them: the counters never run ahead of what is stored.
   *
   * The seq of each event is the one after the last stored seq, and the insert is ordered, so a
   * failure stores a prefix of the batch and nothing after it: the unique (sessionId, seq) index
   * makes each seq one event's, and the unique (sessionId, rid) index each runner event one
   * seq's. In a transaction (replica set) all of it commits or none, and concurrent writers to
   * a session conflict on its document and are retried by withTransaction. Without one (a
   * standalone server), what holds with writers in several processes:
   * - Dense seq, no gap: seq n+1 is inserted only by a writer that saw n stored (as the last
   *   event, or just stored by itself in the same ordered insert). A writer that read stale
   *   counters tries a seq that is taken, gets a duplicate key, and looks again at the events
   *   themselves (`verify`); so does one that raced another writer for the same seq.
   * - Nothing lost: an event is dropped only when its rid is not above a rid already stored
   *   (runner rids increase; dropResent), and the counters move only after the insert, so a
   *   failed insert leaves the rest of its batch unstored and unclaimed and a re-send stores it.
   *   A duplicate key on the rid index means another writer stored that event: it is counted
   *   as a duplicate on the next look.
   * - Nothing after FINISH: FINISH goes through the same seq index (see #finishSteps), and a
   *   writer stops once it sees closingSeq or FINISH as the last event; one that had already
   *   passed that check collides with FINISH's seq, or FINISH with its seq and FINISH moves on.
   * - Readers never see seq n+1 without n: n is stored before n+1 is attempted.
   * A crash between the insert and the counters leaves them behind the events, never ahead: the
   * next append collides and re-reads (above), and lastRid makes the runner re-send a little
   * more than needed, which is dropped.
   */
  async #appendSteps(
    sessionId: string,
    events: NewEvent[],
    now: number,
    session: ClientSession | undefined,
    verifyFirst = false,
  ): Promise<AppendResult> {
    const opt = session ? { session } : {};
    // a rid not above every earlier rid of the batch is a duplicate whatever is stored
    const batch = dropResent(events, 0);
    let pending = batch.fresh;
    let duplicates = batch.duplicates;
    const stored: SessionEvent[] = [];
    let verify = verifyFirst;
    for (let attempt = 0; pending.length > 0; attempt++) {
      if (attempt >= MAX_WRITE_ATTEMPTS) {
        throw new StoreError(StoreErrorCode.UNAVAILABLE, `MongoDB store ${this.#where}: session ${sessionId} kept changing during append`);
      }
      const state = await this.#streamState(sessionId, verify, session);
      if (state.closed) return { stored, duplicates, closed: true };
      const { fresh, duplicates: resent } = dropResent(pending, state.lastRid);
      duplicates += resent;
      if (fresh.length === 0) break;
      const docs = fresh.map((ev, i) => eventDoc(sessionId, state.lastSeq + 1 + i, ev, ev.ts ?? now, ev.rid));
      let inserted = docs.length;
      let failure: MongoBulkWriteError | undefined;
      try {
        await this.#events.insertMany(docs, { ordered: true, ...opt });
      } catch (err) {
        // in a transaction the server has aborted it and nothing is stored: the error goes up
        if (session || !(err instanceof MongoBulkWriteError)) throw err;
        // ordered: the first `insertedCount` are stored, none after the failed one
        inserted = Math.min(err.result.insertedCount, docs.length);
        failure = err;
      }
      const mine = fresh.slice(0, inserted);
      for (const [i, ev] of mine.entries()) {
        stored.push({ sessionId, seq: state.lastSeq + 1 + i, type: ev.type, ts: ev.ts ?? now, data: ev.data });
      }
      const last = stored.at(-1);
      if (inserted > 0 && last) {
        const highestRid = mine.reduce((max, ev) => Math.max(max, ev.rid ?? 0), 0);
        const advance = this.#sessions.updateOne({ _id: sessionId }, { $max: { lastSeq: last.seq, lastRid: highestRid } }, opt);
        // after a failure, best effort: the counters may lag (see above), the failure is what the caller gets
        if (failure) await advance.catch(() => undefined);
        else await advance;
      }
      if (failure) {
        if (!isConflict(failure)) throw failure;
        verify = true;
      }
      pending = fresh.slice(inserted);
    }
    return { stored, duplicates, closed: false };
  }

  // ---- writes ------------------------------------------------------------------------

  async createSession(s: NewSession): Promise<SessionRecord> {
    return this.#guard('createSession', async () => {
      const now = Date.now();
      const pos = await this.#nextPos();
      const doc: SessionDoc = {
        _id: s.id,
        pos,
        tenant: s.tenant,
        status: 'queued',
        framework: s.framework,
        workspaceId: s.workspaceId,
        prompt: s.prompt,
        options: JSON.stringify(s.options),
        env: JSON.stringify(s.env),
        limits: {
          memoryBytes: s.limits.memoryBytes,
          cpuQuota: s.limits.cpuQuota,
          timeoutMs: s.limits.timeoutMs,
          ...(s.limits.idleTimeoutMs !== undefined ? { idleTimeoutMs: s.limits.idleTimeoutMs } : {}),
          ...(s.limits.maxModelTokens !== undefined ? { maxModelTokens: s.limits.maxModelTokens } : {}),
          ...(s.limits.maxModelCalls !== undefined ? { maxModelCalls: s.limits.maxModelCalls } : {}),
          ...(s.limits.recordModelContent === true ? { recordModelContent: true } : {}),
          ...(s.limits.egressAllow !== undefined ? { egressAllow: s.limits.egressAllow } : {}),
        },
        network: s.network,
        createdAt: now,
        startedAt: null,
        endedAt: null,
        deadlineAt: null,
        workerId: null,
        containerId: null,
        reason: null,
        exitCode: null,
        message: null,
        cancelRequested: false,
        // SESSION_QUEUED is seq 1
        lastSeq: 1,
        lastRid: 0,
        closingSeq: null,
        finishSeq: null,
      };
      const queued = eventDoc(
        s.id,
        1,
        { type: 'SESSION_QUEUED', data: { framework: s.framework, workspaceId: s.workspaceId } },
        now,
        undefined,
      );
      try {
        await this.#atomically(async (session) => {
          // The event first, then the session: nobody reads a session's events before its
          // document exists, so without a transaction a crash in between leaves only an
          // unreachable event, never a session without its SESSION_QUEUED. The upsert keeps an
          // existing seq 1 (of a session that already has this id) untouched.
          await this.#events.updateOne(
            { sessionId: s.id, seq: 1 },
            { $setOnInsert: { type: queued.type, ts: queued.ts, data: queued.data } },
            { upsert: true, ...(session ? { session } : {}) },
          );
          await this.#sessions.insertOne(doc, session ? { session } : {});
        });
      } catch (err) {
        if (isDuplicateKey(err)) throw new StoreError(StoreErrorCode.SESSION_EXISTS, `session ${s.id} already exists`, { cause: err });
        throw err;
      }
      this.#tails.wake(s.id);
      return toSession(doc);
    });
  }

  async append(sessionId: string, events: NewEvent[]): Promise<AppendResult> {
    if (events.length === 0) return { stored: [], duplicates: 0, closed: false };
    const now = Date.now();
    const attempt = (verify: boolean) => this.#atomically((session) => this.#appendSteps(sessionId, events, now, session, verify));
    const result = await this.#guard('append', () =>
      this.#serial(sessionId, () =>
        attempt(false).catch((err: unknown) => {
          // A duplicate key aborts a transaction (a writer without transactions, e.g. a process
          // opened with useTransactions false, left the counters behind): once more, from the events.
          if (this.#transactions && isDuplicateKey(err)) return attempt(true);
          throw err;
        }),
      ),
    );
    this.#tails.notify(sessionId, result.stored);
    return result;
  }

  /**
   * Claims the oldest queued session this worker may take. The steps, each a single-document
   * compare-and-set: (1) with a lease, a write to the worker's document filtered on its epoch,
   * state alive and unexpired lease; (2) for the oldest queued candidate (pages in queue order,
   * skipping excluded and full tenants), a slot of its tenant and one of the fleet, by $inc
   * filtered on count < max; (3) with workspace rules, the workspace's lock (activeSessionId),
   * taken only from its holder (or anyone, shared) and only when no earlier queued session waits
   * on it; (4) the session itself, queued → starting. A step that fails gives back what the
   * earlier ones took, and the claim moves on to the next candidate.
   *
   * On a replica set all of it is one transaction: it commits whole or not at all, and the write
   * in (1) conflicts with a concurrent markDead or registration, so a claim never lands under a
   * lost lease. On a standalone server a crash between steps can leave a slot taken (the fleet
   * then runs below its limits until the counts are repaired, never above them), and the lease
   * is checked again after the claim: lost by then, the session goes back to the queue.
   */
  async claimNext(workerId: string, options: ClaimOptions = {}): Promise<SessionRecord | null> {
    const now = options.lease?.now ?? Date.now();
    return this.#guard('claimNext', async () => {
      const doc = await this.#atomically((session) => this.#claimSteps(workerId, options, now, session));
      if (!doc) return null;
      if (!this.#transactions && options.lease && !(await this.#holdsLease(workerId, options.lease.epoch, now, undefined, false))) {
        await this.#unclaim(doc);
        return null;
      }
      return toSession(doc);
    });
  }

  async workspaceHolder(workspaceId: string): Promise<string | null> {
    return this.#guard('workspaceHolder', async () => (await this.#workspaces.findOne({ _id: workspaceId }))?.holder ?? null);
  }

  async findQueuedOnWorkspacesOf(workerId: string): Promise<SessionRecord[]> {
    return this.#guard('findQueuedOnWorkspacesOf', async () => {
      const held = await this.#workspaces.find({ holder: workerId }, { projection: { _id: 1 } }).toArray();
      if (held.length === 0) return [];
      const docs = await this.#sessions
        .find({ status: 'queued', workspaceId: { $in: held.map((w) => w._id) } })
        .sort({ pos: 1 })
        .toArray();
      return docs.map(toSession);
    });
  }

  async #claimSteps(workerId: string, options: ClaimOptions, now: number, session: ClientSession | undefined): Promise<SessionDoc | null> {
    const opt = session ? { session } : {};
    if (options.lease && !(await this.#holdsLease(workerId, options.lease.epoch, now, session, true))) return null;
    const skipTenants = new Set(options.excludeTenants ?? []);
    // a workspace seen once in this claim: later sessions on it never jump the first
    const seenWorkspaces = new Set<string>();
    let afterPos: number | undefined;
    for (;;) {
      const filter: Filter<SessionDoc> = { status: 'queued', cancelRequested: false };
      if (afterPos !== undefined) filter.pos = { $gt: afterPos };
      if (skipTenants.size > 0) filter.tenant = { $nin: [...skipTenants] };
      const page = await this.#sessions
        .find(filter, { projection: { _id: 1, tenant: 1, workspaceId: 1, pos: 1 }, ...opt })
        .sort({ pos: 1 })
        .limit(CLAIM_PAGE)
        .toArray();
      for (const candidate of page) {
        afterPos = candidate.pos;
        if (skipTenants.has(candidate.tenant)) continue;
        if (options.workspaces) {
          if (seenWorkspaces.has(candidate.workspaceId)) continue;
          seenWorkspaces.add(candidate.workspaceId);
          const earlier = await this.#sessions.findOne(
            { workspaceId: candidate.workspaceId, status: 'queued', cancelRequested: false, pos: { $lt: candidate.pos } },
            { projection: { _id: 1 }, ...opt },
          );
          if (earlier) continue;
        }
        const attempt = await this.#tryClaim(candidate, workerId, options, now, session);
        if ('claimed' in attempt) return attempt.claimed;
        if (attempt.skip === 'fleet') return null;
        if (attempt.skip === 'tenant') skipTenants.add(candidate.tenant);
      }
      if (page.length < CLAIM_PAGE) return null;
    }
  }

  /**
   * The lease check of a claim. As a write (`bump`) it changes the worker's document, so inside a
   * transaction it conflicts with a markDead or registration racing the claim; as a read it is
   * the re-check a standalone server gets after the claim.
   */
  async #holdsLease(workerId: string, epoch: number, now: number, session: ClientSession | undefined, bump: boolean): Promise<boolean> {
    const filter: Filter<WorkerDoc> = { _id: workerId, epoch, state: 'alive', leaseUntil: { $gt: now } };
    if (!bump) return (await this.#workerDocs.countDocuments(filter, { limit: 1 })) === 1;
    const r = await this.#workerDocs.updateOne(filter, { $inc: { claims: 1 } }, session ? { session } : {});
    return r.matchedCount === 1;
  }

  async #tryClaim(
    candidate: ClaimCandidate,
    workerId: string,
    options: ClaimOptions,
    now: number,
    session: ClientSession | undefined,
  ): Promise<ClaimAttempt> {
    const opt = session ? { session } : {};
    const tenantKey = tenantClaims(candidate.tenant);
    if (!(await this.#takeSlot(tenantKey, options.maxPerTenant ?? 0, session))) return { skip: 'tenant' };
    if (!(await this.#takeSlot(ALL_CLAIMS, options.maxClaimed ?? 0, session))) {
      await this.#giveSlot(tenantKey, session);
      return { skip: 'fleet' };
    }
    if (options.workspaces && !(await this.#holdWorkspace(candidate, workerId, options.workspaces.shared, now, session))) {
      await this.#giveSlot(tenantKey, session);
      await this.#giveSlot(ALL_CLAIMS, session);
      return { skip: 'workspace' };
    }
    const claimed = await this.#sessions.findOneAndUpdate(
      { _id: candidate._id, status: 'queued', cancelRequested: false },
      { $set: { status: 'starting', workerId } },
      { returnDocument: 'after', ...opt },
    );
    if (claimed) return { claimed };
    // another worker took it, or it was cancelled, since the page was read
    await this.#releaseClaim(candidate, session);
    return { skip: 'taken' };
  }

  /** Takes one claimed-session slot of `key` if fewer than `max` are taken (0: no limit, but counted). */
  async #takeSlot(key: string, max: number, session: ClientSession | undefined): Promise<boolean> {
    const opt = session ? { session } : {};
    if (max <= 0) {
      await this.#claims.updateOne({ _id: key }, { $inc: { count: 1 } }, { upsert: true, ...opt });
      return true;
    }
    const filter: Filter<ClaimCountDoc> = { _id: key, count: { $lt: max } };
    if ((await this.#claims.updateOne(filter, { $inc: { count: 1 } }, opt)).matchedCount === 1) return true;
    // the first claim of this key creates its count; a full one is left as it is
    try {
      await this.#claims.updateOne({ _id: key }, { $setOnInsert: { count: 0 } }, { upsert: true, ...opt });
    } catch (err) {
      // two processes creating it at once: the other one did (in a transaction it conflicts and retries)
      if (session || !isDuplicateKey(err)) throw err;
    }
    return (await this.#claims.updateOne(filter, { $inc: { count: 1 } }, opt)).matchedCount === 1;
  }

  /** Gives back a slot; never below 0 (counts that started after sessions were already claimed). */
  async #giveSlot(key: string, session: ClientSession | undefined): Promise<void> {
    await this.#claims.updateOne({ _id: key, count: { $gt: 0 } }, { $inc: { count: -1 } }, session ? { session } : {});
  }

  /**
   * Takes the workspace's lock for `candidate`: the workspace is new (this worker becomes its
   * holder), or held by this worker (any worker, shared) with no claimed session on it. A lock
   * whose session has left starting or running without giving it back (a crash between two steps
   * on a standalone server) is taken over.
   */
  async #holdWorkspace(
    candidate: ClaimCandidate,
    workerId: string,
    shared: boolean,
    now: number,
    session: ClientSession | undefined,
  ): Promise<boolean> {
    const opt = session ? { session } : {};
    const fields = {
      holder: workerId,
      tenant: candidate.tenant,
      lastSessionId: candidate._id,
      activeSessionId: candidate._id,
      claimedAt: now,
    };
    const current = await this.#workspaces.findOne({ _id: candidate.workspaceId }, opt);
    if (!current) {
      try {
        await this.#workspaces.insertOne({ _id: candidate.workspaceId, ...fields }, opt);
        return true;
      } catch (err) {
        // another worker's first claim of it came first (in a transaction it conflicts and retries)
        if (session || !isDuplicateKey(err)) throw err;
        return false;
      }
    }
    if (!shared && current.holder !== workerId) return false;
    // files being written (an upload): the session waits for the write to end or expire
    if (current.writes?.some((w) => w.until > now)) return false;
    if (current.activeSessionId !== null) {
      // held from its claim until its FINISH (a stale lock, e.g. after a crash, is taken over)
      const active = await this.#sessions.findOne(
        { _id: current.activeSessionId, workerId: { $ne: null }, finishSeq: null },
        { projection: { _id: 1 }, ...opt },
      );
      if (active) return false;
    }
    const r = await this.#workspaces.updateOne(
      { _id: candidate.workspaceId, holder: current.holder, activeSessionId: current.activeSessionId, ...noWriteAt(now) },
      { $set: fields },
      opt,
    );
    return r.matchedCount === 1;
  }

  /**
   * Gives back what a claim of this session took (its slots, its workspace's lock), in the same
   * step as the change that ends the claim (a requeue, or FINISH stored), by the one caller
   * whose compare-and-set made that change: so exactly once.
   */
  async #releaseClaim(doc: Pick<SessionDoc, '_id' | 'tenant' | 'workspaceId'>, session: ClientSession | undefined): Promise<void> {
    await this.#giveSlot(tenantClaims(doc.tenant), session);
    await this.#giveSlot(ALL_CLAIMS, session);
    await this.#workspaces.updateOne(
      { _id: doc.workspaceId, activeSessionId: doc._id },
      { $set: { activeSessionId: null } },
      session ? { session } : {},
    );
  }

  /** Puts back a claim made under a lease found lost right after it (standalone server only). */
  async #unclaim(doc: SessionDoc): Promise<void> {
    const back = await this.#sessions.findOneAndUpdate(
      { _id: doc._id, status: 'starting', workerId: doc.workerId, containerId: null },
      { $set: { status: 'queued', workerId: null } },
      { projection: { _id: 1, tenant: 1, workspaceId: 1 } },
    );
    // null: the worker's settlement already requeued or ended it, and released it then
    if (back) await this.#releaseClaim(back, undefined);
  }

  /**
   * The worker side of a claim write's condition: with an epoch, the worker's record still has it
   * and is alive or draining. In a transaction it is a write, so it conflicts with a markDead or
   * registration racing the claim write; without one (a standalone server) it is a read, made
   * before and again after the write, and a write whose lease was lost in between reports `lost`
   * (the caller undoes its container; the worker's settlement settles the session).
   */
  async #leaseHeld(claim: ClaimRef | undefined, session: ClientSession | undefined): Promise<boolean> {
    if (claim?.epoch === undefined) return true;
    const filter: Filter<WorkerDoc> = { _id: claim.workerId, epoch: claim.epoch, state: { $in: LIVE_WORKER } };
    if (!session) return (await this.#workerDocs.countDocuments(filter, { limit: 1 })) === 1;
    return (await this.#workerDocs.updateOne(filter, { $inc: { claims: 1 } }, { session })).matchedCount === 1;
  }

  /** Why a claim write matched nothing, its lease being held (see ClaimWrite). */
  async #unapplied(id: string, claim: ClaimRef | undefined, session: ClientSession | undefined): Promise<ClaimWrite> {
    const doc = await this.#sessions.findOne({ _id: id }, { projection: { workerId: 1 }, ...(session ? { session } : {}) });
    return !doc || (claim && doc.workerId !== claim.workerId) ? 'lost' : 'decided';
  }

  /** A claim write: `step` applies it under the claim's condition and says whether it matched. */
  async #claimWrite(
    what: string,
    id: string,
    claim: ClaimRef | undefined,
    step: (session: ClientSession | undefined) => Promise<boolean>,
  ): Promise<ClaimWrite> {
    return this.#guard(what, () =>
      this.#serial(id, () =>
        this.#atomically(async (session): Promise<ClaimWrite> => {
          if (!(await this.#leaseHeld(claim, session))) return 'lost';
          if (!(await step(session))) return this.#unapplied(id, claim, session);
          if (!session && !(await this.#leaseHeld(claim, undefined))) return 'lost';
          return 'done';
        }),
      ),
    );
  }

  async setContainer(id: string, containerId: string, claim?: ClaimRef): Promise<ClaimWrite> {
    return this.#claimWrite('setContainer', id, claim, async (session) => {
      const r = await this.#sessions.updateOne(
        { _id: id, status: 'starting', ...claimedBy(claim) },
        { $set: { containerId } },
        session ? { session } : {},
      );
      return r.matchedCount === 1;
    });
  }

  async markRunning(id: string, startedAt: number, deadlineAt: number, claim?: ClaimRef): Promise<ClaimWrite> {
    return this.#claimWrite('markRunning', id, claim, async (session) => {
      const r = await this.#sessions.updateOne(
        { _id: id, status: 'starting', ...claimedBy(claim) },
        { $set: { status: 'running', startedAt, deadlineAt } },
        session ? { session } : {},
      );
      return r.matchedCount === 1;
    });
  }

  /** starting → queued; the caller whose compare-and-set wins gives back the claim's slots in the same step. */
  async requeue(id: string, claim?: ClaimRef): Promise<ClaimWrite> {
    return this.#claimWrite('requeue', id, claim, async (session) => {
      const opt = session ? { session } : {};
      const before = await this.#sessions.findOneAndUpdate(
        { _id: id, status: 'starting', ...claimedBy(claim) },
        { $set: { status: 'queued', workerId: null, containerId: null } },
        { returnDocument: 'before', projection: { _id: 1, tenant: 1, workspaceId: 1 }, ...opt },
      );
      if (!before) return false;
      await this.#releaseClaim(before, session);
      // a workspace no session ever ran on is given up with the claim that made its holder
      const ranBefore = await this.#sessions.findOne(
        { workspaceId: before.workspaceId, _id: { $ne: id }, workerId: { $ne: null } },
        { projection: { _id: 1 }, ...opt },
      );
      if (!ranBefore) await this.#workspaces.deleteOne({ _id: before.workspaceId, lastSessionId: id }, opt);
      return true;
    });
  }

  async requestCancel(id: string): Promise<SessionRecord | null> {
    return this.#guard('requestCancel', async () => {
      const doc = await this.#sessions.findOneAndUpdate(
        { _id: id, status: { $in: NON_TERMINAL } },
        { $set: { cancelRequested: true } },
        { returnDocument: 'after' },
      );
      return doc ? toSession(doc) : null;
    });
  }

  /** A change stream on `sessions` (see watchCancelRequests); nothing without change streams (the poll remains). */
  watchCancels(workerId: string, onCancel: (sessionId: string) => void): () => void {
    if (!this.#changeStreams || this.#closed) return () => undefined;
    return watchCancelRequests(this.#sessions, workerId, NON_TERMINAL, onCancel, this.#logger, () => this.#closed);
  }

  /**
   * The compare-and-set is one findOneAndUpdate filtered on the states it may leave, so
   * exactly one caller wins; only the winner appends its events. Without a transaction the
   * decision is stored first and the events after it: a crash in between keeps the decision
   * (the part that must be exactly-once) and loses only the informational TIMEOUT/CANCELLED/...
   * event; FINISH, which recovery appends, still records status and reason.
   */
  async decide(id: string, outcome: Outcome, options: DecideOptions = {}): Promise<DecideResult> {
    const { events = [], from, at = Date.now(), claimedBy: claim } = options;
    const allowed = (from ?? NON_TERMINAL).filter((s) => !isTerminal(s));
    const result = await this.#guard('decide', () =>
      this.#serial(id, () =>
        this.#atomically(async (session) => {
          const opt = session ? { session } : {};
          const held = await this.#leaseHeld(claim, session);
          const decided = {
            status: outcome.status,
            reason: outcome.reason,
            message: outcome.message ?? null,
            exitCode: outcome.exitCode ?? null,
            endedAt: at,
          };
          const before = held
            ? await this.#sessions.findOneAndUpdate(
                { _id: id, status: { $in: allowed }, ...claimedBy(claim) },
                { $set: decided },
                { returnDocument: 'before', ...opt },
              )
            : null;
          if (!before) {
            const current = await this.#sessions.findOne({ _id: id }, opt);
            if (!current) throw new StoreError(StoreErrorCode.SESSION_NOT_FOUND, `session ${id} does not exist`);
            return { won: false, session: toSession(current), stored: [] as SessionEvent[] };
          }
          // a claimed session keeps its slots and workspace until its FINISH (#markFinished): its
          // container runs on through teardown, and the next one must not start beside it
          const won: SessionDoc = { ...before, ...decided };
          const stored = events.length > 0 ? (await this.#appendSteps(id, events, at, session)).stored : [];
          const record = toSession(won);
          const last = stored.at(-1);
          if (last) record.lastSeq = last.seq;
          return { won: true, session: record, stored };
        }),
      ),
    );
    this.#tails.notify(id, result.stored);
    return { won: result.won, session: result.session };
  }

  /**
   * Stores FINISH once, as the session's last event. Steps: (1) on a decided session, closingSeq
   * is set, so appends that start from then on store nothing; (2) FINISH is inserted after the
   * last stored event, through the same unique seq index as appends, so an append that had
   * passed its check before (1) either lands before FINISH or collides and stops, and FINISH
   * moves on past an event that took its seq; (3) finishSeq (and closingSeq) become FINISH's seq.
   * Every step is idempotent and a later call resumes where an earlier one stopped: without a
   * transaction, a crash after (1) or (2) leaves finishSeq null, so recovery (findUnfinished)
   * calls this again, which stores FINISH or finds it. A unique index allows one FINISH per
   * session, so two processes finishing at once store one; the other returns it.
   */
  async appendFinish(id: string, data: FinishData, rid?: number): Promise<SessionEvent> {
    const result = await this.#guard('appendFinish', () =>
      this.#serial(id, () => this.#atomically((session) => this.#finishSteps(id, data, rid, session))),
    );
    if (result.fresh) this.#tails.wake(id);
    return result.event;
  }

  /** The steps of appendFinish; `fresh` when this call stored FINISH. */
  async #finishSteps(
    id: string,
    data: FinishData,
    rid: number | undefined,
    session: ClientSession | undefined,
  ): Promise<{ event: SessionEvent; fresh: boolean }> {
    const opt = session ? { session } : {};
    const now = Date.now();
    for (let attempt = 0; ; attempt++) {
      if (attempt >= MAX_WRITE_ATTEMPTS) {
        throw new StoreError(StoreErrorCode.UNAVAILABLE, `MongoDB store ${this.#where}: session ${id} kept changing during appendFinish`);
      }
      const current = await this.#sessions.findOne({ _id: id }, opt);
      if (!current) throw new StoreError(StoreErrorCode.SESSION_NOT_FOUND, `session ${id} does not exist`);
      if (!isTerminal(current.status)) {
        throw new StoreError(StoreErrorCode.NOT_DECIDED, `session ${id} is ${current.status}; decide it before FINISH`);
      }
      if (current.closingSeq !== null) {
        // closing or closed: FINISH is stored, or an earlier call stopped before storing it
        const existing = await this.#events.findOne({ sessionId: id, type: 'FINISH' }, { projection: EVENT_FIELDS, ...opt });
        if (existing) {
          if (current.finishSeq === null) {
            const stored = (JSON.parse(existing.data) as FinishData).usage;
            await this.#markFinished(current, existing.seq, undefined, session, stored);
          }
          return { event: toEvent(existing), fresh: false };
        }
        // FINISH was stored and has since been removed: the session is being purged
        if (current.finishSeq !== null) throw new StoreError(StoreErrorCode.SESSION_NOT_FOUND, `session ${id} has expired`);
      } else {
        // (1) close the stream; the value is where FINISH is expected, corrected in (3)
        const closed = await this.#sessions.updateOne({ _id: id, closingSeq: null }, { $set: { closingSeq: current.lastSeq + 1 } }, opt);
        // another call closed it first: look again
        if (closed.matchedCount === 0) continue;
      }
      // (2) after the last stored event (the counters may lag behind it)
      const tip = await this.#storedTip(id, session);
      const seq = Math.max(current.lastSeq, tip.lastSeq) + 1;
      const eventRid = rid !== undefined && rid > Math.max(current.lastRid, tip.lastRid) ? rid : undefined;
      const doc = eventDoc(id, seq, { type: 'FINISH', data: { ...data } }, now, eventRid);
      try {
        await this.#events.insertOne(doc, opt);
      } catch (err) {
        // Without a transaction: an append still in flight took this seq, or another process
        // stored FINISH first; look again. In a transaction the server has aborted it: it goes up.
        if (session || !isDuplicateKey(err)) throw err;
        continue;
      }
      // (3)
      await this.#markFinished(current, seq, eventRid, session, data.usage);
      return { event: toEvent(doc), fresh: true };
    }
  }

  /**
   * Step (3) of appendFinish: records FINISH's seq. The one caller whose update finds finishSeq
   * still null gives back what the session's claim took (a session some worker claimed and that
   * was not requeued since: its workerId is set), so exactly once, and only now that its
   * container has exited. A crash between the two leaks a slot: the fleet then runs below its
   * limits, never above.
   */
  async #markFinished(
    current: SessionDoc,
    seq: number,
    rid: number | undefined,
    session: ClientSession | undefined,
    usage?: SessionUsage,
  ): Promise<void> {
    // the usage beside FINISH's seq: usageByTenant sums it without reading events
    const kept: Partial<SessionDoc> =
      usage !== undefined
        ? {
            usage: JSON.stringify(usage),
            usageTotals: { cpuSeconds: usage.cpuSeconds, memoryGiBSeconds: usage.memoryGiBSeconds, wallMs: usage.wallMs },
          }
        : {};
    const r = await this.#sessions.updateOne(
      { _id: current._id, finishSeq: null },
      { $set: { finishSeq: seq, closingSeq: seq, ...kept }, $max: { lastSeq: seq, lastRid: rid ?? 0 } },
      session ? { session } : {},
    );
    if (r.matchedCount === 1 && current.workerId !== null) await this.#releaseClaim(current, session);
  }

  /**
   * Removes terminal sessions that ended before `now` minus the retention, and their events;
   * returns how many sessions it removed. It runs a minute after open and hourly (Retention),
   * in every process, with the retention this process was opened with, so a change of
   * MGX_EVENT_RETENTION_DAYS (0 included: keep) applies to every session already ended, as in
   * the SQLite store. Nothing is stamped on a session when it ends and no TTL index removes
   * anything on the server's own schedule (an expiry time stamped at the end would outlive a
   * change of the setting). Events go first, so an interrupted purge leaves sessions that the
   * next one finds again, never orphaned events. Removing by endedAt also covers sessions that
   * ended without FINISH.
   */
  async purgeExpired(now: number = Date.now()): Promise<number> {
    return this.#guard('purgeExpired', () =>
      this.#retention.purge(now, async (cutoff, limit) => {
        const expired: Filter<SessionDoc> = { status: { $in: TERMINAL }, endedAt: { $lt: cutoff } };
        const ids = (await this.#sessions.find(expired, { projection: { _id: 1 }, limit }).toArray()).map((d) => d._id);
        if (ids.length === 0) return { found: 0, removed: 0 };
        await this.#events.deleteMany({ sessionId: { $in: ids } });
        const { deletedCount } = await this.#sessions.deleteMany({ _id: { $in: ids }, ...expired });
        return { found: ids.length, removed: deletedCount };
      }),
    );
  }

  // ---- reads -------------------------------------------------------------------------

  async getSession(id: string): Promise<SessionRecord | null> {
    return this.#guard('getSession', async () => {
      const doc = await this.#sessions.findOne({ _id: id });
      return doc ? toSession(doc) : null;
    });
  }

  async listSessions(q: ListQuery): Promise<SessionPage> {
    const before = decodeCursor(q.cursor);
    return this.#guard('listSessions', async () => {
      const filter: Filter<SessionDoc> = { pos: { $lt: before } };
      if (q.tenant !== undefined) filter.tenant = q.tenant;
      if (q.status && q.status.length > 0) filter.status = { $in: q.status };
      const docs = await this.#sessions
        .find(filter)
        .sort({ pos: -1 })
        .limit(q.limit + 1)
        .toArray();
      return toPage(docs, q.limit, toSession);
    });
  }

  async countByStatus(status: SessionStatus): Promise<number> {
    return this.#guard('countByStatus', () => this.#sessions.countDocuments({ status }));
  }

  async findByStatus(status: SessionStatus[], workerId?: string): Promise<SessionRecord[]> {
    return this.#guard('findByStatus', async () => {
      const filter: Filter<SessionDoc> = { status: { $in: status } };
      if (workerId !== undefined) filter.workerId = workerId;
      return (await this.#sessions.find(filter).sort({ pos: 1 }).toArray()).map(toSession);
    });
  }

  async findUnfinished(): Promise<SessionRecord[]> {
    return this.#guard('findUnfinished', async () =>
      (
        await this.#sessions
          .find({ finishSeq: null, status: { $in: TERMINAL } })
          .sort({ pos: 1 })
          .toArray()
      ).map(toSession),
    );
  }

  async read(sessionId: string, afterSeq: number, limit: number): Promise<SessionEvent[]> {
    // limit 0 means "no limit" to MongoDB; here it means no events, as in SQL
    if (limit <= 0) return [];
    return this.#guard('read', async () =>
      (
        await this.#eventReads
          .find({ sessionId, seq: { $gt: afterSeq } }, { projection: EVENT_FIELDS })
          .sort({ seq: 1 })
          .limit(limit)
          .toArray()
      ).map(toEvent),
    );
  }

  async getFinishEvent(sessionId: string): Promise<SessionEvent | null> {
    return this.#guard('getFinishEvent', async () => {
      const doc = await this.#eventReads.findOne({ sessionId, type: 'FINISH' }, { projection: EVENT_FIELDS });
      return doc ? toEvent(doc) : null;
    });
  }

  async lastOfType(sessionId: string, type: EventType): Promise<SessionEvent | null> {
    return this.#guard('lastOfType', async () => {
      // backwards over events_session_seq, as far back as the last event of the type
      const [doc] = await this.#eventReads.find({ sessionId, type }, { projection: EVENT_FIELDS }).sort({ seq: -1 }).limit(1).toArray();
      return doc ? toEvent(doc) : null;
    });
  }

  async usageByTenant(q: UsageQuery): Promise<TenantUsage[]> {
    return this.#guard('usageByTenant', async () => {
      const match: Filter<SessionDoc> = { endedAt: { $gte: q.from, $lt: q.to }, finishSeq: { $ne: null } };
      if (q.tenant !== undefined) match.tenant = q.tenant;
      const sum = (field: string) => ({ $sum: { $ifNull: [`$usageTotals.${field}`, 0] } });
      // over sessions_ended; a session without usage (it never ran) counts with zeros
      const rows = await this.#sessionReads
        .aggregate<{
          _id: { tenant: string; status: TerminalStatus };
          sessions: number;
          cpuSeconds: number;
          memoryGiBSeconds: number;
          wallMs: number;
        }>([
          { $match: match },
          {
            $group: {
              _id: { tenant: '$tenant', status: '$status' },
              sessions: { $sum: 1 },
              cpuSeconds: sum('cpuSeconds'),
              memoryGiBSeconds: sum('memoryGiBSeconds'),
              wallMs: sum('wallMs'),
            },
          },
        ])
        .toArray();
      return tenantUsageOf(
        rows.map((r) => ({
          tenant: r._id.tenant,
          status: r._id.status,
          sessions: r.sessions,
          cpuSeconds: r.cpuSeconds,
          memoryGiBSeconds: r.memoryGiBSeconds,
          wallSeconds: r.wallMs / 1000,
        })),
      );
    });
  }

  async lastRid(sessionId: string): Promise<number> {
    return this.#guard('lastRid', async () => {
      const doc = await this.#sessionReads.findOne({ _id: sessionId }, { projection: { lastRid: 1 } });
      return doc?.lastRid ?? 0;
    });
  }

  tail(sessionId: string, options: TailOptions): AsyncIterable<SessionEvent> {
    return this.#tails.events(sessionId, options);
  }

  tailBatches(sessionId: string, options: TailOptions): AsyncIterable<SessionEvent[]> {
    return this.#tails.batches(sessionId, options);
  }

  /**
   * One change stream per store (not per tail) on inserts into `events`, projected to the
   * session id and fanned out to this process's tails. A stream per follower would hold a
   * pooled connection per awaiting getMore, so a few hundred followers would starve the pool.
   * It opens with the first tail and stays open until close(); when it fails it is reopened
   * with back-off (tails poll meanwhile, and all re-read once it is back).
   */
  #eventsStream(): KeptChangeStream {
    return new KeptChangeStream({
      name: 'events',
      open: () => this.#events.watch<Document>([{ $match: { operationType: 'insert' } }, { $project: { 'fullDocument.sessionId': 1 } }]),
      onChange: (change) => {
        const sessionId: unknown = (change as { fullDocument?: { sessionId?: unknown } }).fullDocument?.sessionId;
        if (typeof sessionId === 'string') this.#tails.wake(sessionId);
      },
      onReopen: () => this.#tails.wakeAll(),
      logger: this.#logger,
    });
  }
}

async function createIndexes(db: Db): Promise<void> {
  await db.collection('events').createIndexes([
    { key: { sessionId: 1, seq: 1 }, name: 'events_session_seq', unique: true },
    // idempotent re-sends: one event per runner id per session
    { key: { sessionId: 1, rid: 1 }, name: 'events_session_rid', unique: true, partialFilterExpression: { rid: { $exists: true } } },
    // the FINISH lookup, and the guarantee of one FINISH per session
    { key: { sessionId: 1, type: 1 }, name: 'events_session_finish', unique: true, partialFilterExpression: { type: 'FINISH' } },
  ]);
  await db.collection('sessions').createIndexes([
    { key: { status: 1, pos: 1 }, name: 'sessions_status_pos' },
    { key: { tenant: 1, pos: 1 }, name: 'sessions_tenant_pos' },
    // recovery: decided sessions still lacking FINISH
    { key: { finishSeq: 1, pos: 1 }, name: 'sessions_unfinished' },
    // the retention sweep
    { key: { endedAt: 1 }, name: 'sessions_ended' },
    // the claim's queue order per workspace
    { key: { workspaceId: 1, status: 1, pos: 1 }, name: 'sessions_workspace_queue' },
  ]);
  await db.collection('workspaces').createIndexes([{ key: { holder: 1 }, name: 'workspaces_holder' }]);
  // a workspace's sessions, newest or oldest first (its last session, whether one is active)
  await db.collection('sessions').createIndexes([{ key: { workspaceId: 1, pos: 1 }, name: 'sessions_workspace_pos' }]);
  await db.collection('workspace_owners').createIndexes([{ key: { tenant: 1, pos: -1 }, name: 'workspace_owners_tenant' }]);
  // the fleet's claim count exists before the first claim (a server before 4.4 creates no collection in a transaction)
  await db
    .collection<ClaimCountDoc>('claims')
    .updateOne({ _id: ALL_CLAIMS }, { $setOnInsert: { count: 0 } }, { upsert: true })
    .catch((err: unknown) => {
      if (!isDuplicateKey(err)) throw err;
    });
  // Earlier versions stamped expireAt when a session ended and let these TTL indexes remove it
  // then, whatever the retention became later; without them a stamped expireAt is inert.
  for (const [collection, index] of LEGACY_TTL_INDEXES) {
    await db
      .collection(collection)
      .dropIndex(index)
      .catch((err: unknown) => {
        // already gone (another process dropped it, or it never existed)
        if (!(err instanceof MongoServerError && (err.code === 26 || err.code === 27 || err.codeName === 'IndexNotFound'))) throw err;
      });
  }
  await db
    .collection<CounterDoc>('counters')
    .updateOne({ _id: POS_COUNTER }, { $setOnInsert: { value: 0 } }, { upsert: true })
    .catch((err: unknown) => {
      // two processes opening at once: the other one created it
      if (!isDuplicateKey(err)) throw err;
    });
}
