import {
  BSON,
  MongoClient,
  MongoError,
  MongoServerError,
  WriteConcern,
  type ChangeStream,
  type ClientSession,
  type Collection,
  type Db,
  type Document,
  type Filter,
  type TransactionOptions,
} from 'mongodb';
import type { EventType, FinishData, SessionEvent, SessionStatus } from '@mgx/agent-sdk';
import { isTerminal, SESSION_STATUSES, TERMINAL_STATUSES } from '@mgx/agent-sdk';
import { silentLogger, type Logger } from '@mgx/config';
import { decodeCursor, toPage } from './cursor.js';
import { StoreError, StoreErrorCode } from './errors.js';
import type {
  AppendResult,
  ClaimOptions,
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
  WorkerStore,
} from './ports.js';
import { watchCancelRequests } from './mongodb-cancels.js';
import { MongoWorkers, type WorkerDoc } from './mongodb-workers.js';
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
  /** Where the store reports what it cannot hand to a caller (a failed purge, expiry mark or change stream). */
  logger?: Logger;
}

/**
 * A session document. `_id` is the session id (so the id is unique by the _id index).
 * `lastSeq`/`lastRid` are the per-session counters appends reserve from; `closingSeq` is the seq
 * reserved for FINISH (the stream takes no more events from then on) and `finishSeq` is set once
 * FINISH is stored. Client and agent JSON (`options`, event `data`) is kept as JSON text: any key
 * (`$schema`, dotted names) and any depth round-trips exactly as in the SQLite store, and the
 * event size limit ingest enforces on the JSON is the size stored.
 */
interface SessionDoc extends Omit<SessionRecord, 'id' | 'options' | 'env'> {
  _id: string;
  pos: number;
  options: string;
  /** JSON text, like options; absent on documents written before it existed. */
  env?: string;
  lastRid: number;
  closingSeq: number | null;
  /** Set once FINISH and the events' own expireAt are stored; the TTL index removes the session then. */
  expireAt: Date | null;
}

interface EventDoc {
  sessionId: string;
  seq: number;
  /** Absent for platform events, so the partial unique index on (sessionId, rid) skips them. */
  rid?: number;
  type: EventType;
  ts: number;
  data: string;
  expireAt?: Date;
}

interface CounterDoc {
  _id: string;
  value: number;
}

const POS_COUNTER = 'sessions.pos';
const TERMINAL: SessionStatus[] = [...TERMINAL_STATUSES];
const NON_TERMINAL: SessionStatus[] = SESSION_STATUSES.filter((s) => !isTerminal(s));
const TX_OPTIONS: TransactionOptions = {
  readConcern: { level: 'snapshot' },
  writeConcern: new WriteConcern('majority'),
  readPreference: 'primary',
};
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
 * Where a connection string points, for messages: scheme and hosts, never the user or password.
 * Everything up to the last `@` before the options is credentials, even when not percent-encoded.
 */
function describeMongoUri(uri: string): string {
  const scheme = /^mongodb(\+srv)?:\/\//.exec(uri)?.[0];
  if (!scheme) return '(not a mongodb:// URI)';
  const rest = uri.slice(scheme.length).split('?')[0] ?? '';
  const hosts = rest.slice(rest.lastIndexOf('@') + 1).split('/')[0] ?? '';
  return `${scheme}${hosts}`;
}

/** Removes the URI's credentials from a driver message, in case the driver ever echoes them. */
function scrub(message: string, uri: string): string {
  const scheme = /^mongodb(\+srv)?:\/\//.exec(uri)?.[0];
  if (!scheme) return message;
  const authority = uri.slice(scheme.length).split('?')[0] ?? '';
  const at = authority.lastIndexOf('@');
  if (at <= 0) return message;
  const userinfo = authority.slice(0, at);
  let out = message.split(userinfo).join('***');
  const password = userinfo.slice(userinfo.indexOf(':') + 1);
  // a very short password would garble the message wherever its letters occur
  if (userinfo.includes(':') && password.length >= 3) {
    out = out.split(password).join('***');
    try {
      out = out.split(decodeURIComponent(password)).join('***');
    } catch {
      // not percent-encoded text: the raw form is already scrubbed
    }
  }
  return out;
}

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
 * never conflict with each other and become visible in seq order. (On a standalone server two
 * processes appending to one session at once could make seq n+1 visible before n, and a tail
 * could pass over n; in mgx one process at a time writes a session's events: the API while it
 * is queued, then the worker that claimed it.)
 */
export class MongoStore implements Store, SessionStore, EventStore {
  readonly kind = 'mongodb' as const;
  readonly #client: MongoClient;
  readonly #where: string;
  readonly #description: string;
  readonly #sessions: Collection<SessionDoc>;
  readonly #events: Collection<EventDoc>;
  readonly #counters: Collection<CounterDoc>;
  readonly #workers: MongoWorkers;
  readonly #transactions: boolean;
  readonly #changeStreams: boolean;
  readonly #retention: Retention;
  readonly #tails: Tails;
  readonly #logger: Logger;
  readonly #queues = new Map<string, Promise<unknown>>();
  #stream: ChangeStream | undefined;
  #closed = false;

  private constructor(
    client: MongoClient,
    db: Db,
    where: string,
    description: string,
    features: { transactions: boolean; changeStreams: boolean },
    retention: Retention,
    tailPollMs: number,
    logger: Logger,
  ) {
    this.#client = client;
    this.#where = where;
    this.#description = description;
    this.#sessions = db.collection<SessionDoc>('sessions');
    this.#events = db.collection<EventDoc>('events');
    this.#counters = db.collection<CounterDoc>('counters');
    this.#workers = new MongoWorkers(db.collection<WorkerDoc>('workers'), (what, fn) => this.#guard(what, fn));
    this.#transactions = features.transactions;
    this.#changeStreams = features.changeStreams;
    this.#retention = retention;
    this.#logger = logger;
    // the change stream opens with the first tail: it wakes the tails for other processes' writes
    this.#tails = new Tails(
      (sessionId, afterSeq, limit) => this.read(sessionId, afterSeq, limit),
      tailPollMs,
      () => this.#ensureChangeStream(),
    );
  }

  /** Connects, learns what the deployment supports, creates the indexes, and returns the store. */
  static async open(options: MongoStoreOptions): Promise<MongoStore> {
    const where = `${describeMongoUri(options.uri)} (database ${options.dbName})`;
    const retention = new Retention(options.retentionDays, `MongoDB store ${where}`);
    const logger = options.logger ?? silentLogger;
    let client: MongoClient | undefined;
    try {
      client = new MongoClient(options.uri, {
        appName: 'mgx',
        writeConcern: { w: 'majority' },
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
        { transactions: replicated && options.useTransactions !== false, changeStreams: replicated && options.useChangeStreams !== false },
        retention,
        options.tailPollMs ?? (replicated && options.useChangeStreams !== false ? 1000 : 250),
        logger,
      );
      // TTL removes what expired normally; the sweep catches sessions whose expireAt was never set
      retention.start(() => store.purgeExpired(), logger);
      return store;
    } catch (cause) {
      await client?.close().catch(() => undefined);
      const message = cause instanceof Error ? cause.message : String(cause);
      throw new StoreError(StoreErrorCode.UNAVAILABLE, `cannot open the MongoDB store at ${where}: ${scrub(message, options.uri)}`, {
        cause,
      });
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
    const stream = this.#stream;
    this.#stream = undefined;
    await stream?.close().catch(() => undefined);
    await this.#client.close();
  }

  // ---- plumbing ---------------------------------------------------------------------

  /** Runs `fn`, turning driver failures into StoreError so callers see one error type. */
  async #guard<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (cause) {
      if (cause instanceof StoreError) throw cause;
      if (cause instanceof MongoError || BSON.BSONError.isBSONError(cause)) {
        throw new StoreError(StoreErrorCode.UNAVAILABLE, `MongoDB store ${this.#where}: ${what}: ${cause.message}`, { cause });
      }
      throw cause;
    }
  }

  /** The steps in one transaction where the deployment has them, else one after the other. */
  async #atomically<T>(fn: (session: ClientSession | undefined) => Promise<T>): Promise<T> {
    if (!this.#transactions) return fn(undefined);
    // withTransaction retries `fn` on transient errors (write conflicts), so `fn` keeps no state outside its result
    return this.#client.withSession((session) => session.withTransaction(() => fn(session), TX_OPTIONS));
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
   * Reserves seqs for `events` and inserts them. One findOneAndUpdate, guarded by the stream
   * being open, moves lastSeq past the new events and lastRid to the highest rid; the new
   * events are those whose rid is above the stored lastRid (runner rids increase), so the
   * reservation and the de-duplication are one atomic step on the session document.
   *
   * Without a transaction, a crash between the reservation and the insert leaves those seqs
   * unused (readers go by seq and pass over the gap; nothing is stored twice) and their rids
   * counted as stored, so the runner does not re-send them: those events are lost. That window
   * exists only on a standalone server; a replica set runs both steps in one transaction.
   */
  async #appendSteps(sessionId: string, events: NewEvent[], now: number, session: ClientSession | undefined): Promise<AppendResult> {
    // a rid not above every earlier rid of the batch is a duplicate whatever is stored
    const batch = dropResent(events, 0);
    const rids = batch.fresh.flatMap((ev) => (ev.rid !== undefined ? [ev.rid] : []));
    const withoutRid = batch.fresh.length - rids.length;
    const before = await this.#sessions.findOneAndUpdate(
      { _id: sessionId, closingSeq: null },
      [
        {
          $set: {
            lastSeq: { $add: ['$lastSeq', withoutRid, { $size: { $filter: { input: rids, cond: { $gt: ['$$this', '$lastRid'] } } } }] },
            lastRid: { $max: ['$lastRid', batch.lastRid] },
          },
        },
      ],
      { returnDocument: 'before', projection: { lastSeq: 1, lastRid: 1 }, ...(session ? { session } : {}) },
    );
    if (!before) {
      const exists = await this.#sessions.findOne({ _id: sessionId }, { projection: { _id: 1 }, ...(session ? { session } : {}) });
      if (!exists) throw new StoreError(StoreErrorCode.SESSION_NOT_FOUND, `session ${sessionId} does not exist`);
      return { stored: [], duplicates: 0, closed: true };
    }
    // the batch's rids increase, so those above the stored lastRid are the ones the reservation counted
    const { fresh, duplicates } = dropResent(batch.fresh, before.lastRid);
    const docs: EventDoc[] = [];
    const stored: SessionEvent[] = [];
    for (const [i, ev] of fresh.entries()) {
      const seq = before.lastSeq + 1 + i;
      const ts = ev.ts ?? now;
      docs.push(eventDoc(sessionId, seq, ev, ts, ev.rid));
      stored.push({ sessionId, seq, type: ev.type, ts, data: ev.data });
    }
    if (docs.length > 0) await this.#events.insertMany(docs, { ordered: true, ...(session ? { session } : {}) });
    return { stored, duplicates: batch.duplicates + duplicates, closed: false };
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
        expireAt: null,
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
    const result = await this.#guard('append', () =>
      this.#serial(sessionId, () => this.#atomically((session) => this.#appendSteps(sessionId, events, Date.now(), session))),
    );
    this.#tails.notify(sessionId, result.stored);
    return result;
  }

  async claimNext(workerId: string, options: ClaimOptions = {}): Promise<SessionRecord | null> {
    const exclude = options.excludeTenants ?? [];
    return this.#guard('claimNext', async () => {
      const doc = await this.#sessions.findOneAndUpdate(
        { status: 'queued', cancelRequested: false, ...(exclude.length > 0 ? { tenant: { $nin: exclude } } : {}) },
        { $set: { status: 'starting', workerId } },
        { sort: { pos: 1 }, returnDocument: 'after' },
      );
      return doc ? toSession(doc) : null;
    });
  }

  async setContainer(id: string, containerId: string): Promise<void> {
    await this.#guard('setContainer', () => this.#sessions.updateOne({ _id: id, status: 'starting' }, { $set: { containerId } }));
  }

  async markRunning(id: string, startedAt: number, deadlineAt: number): Promise<boolean> {
    return this.#guard('markRunning', async () => {
      const r = await this.#sessions.updateOne({ _id: id, status: 'starting' }, { $set: { status: 'running', startedAt, deadlineAt } });
      return r.matchedCount === 1;
    });
  }

  async requeue(id: string): Promise<boolean> {
    return this.#guard('requeue', async () => {
      const r = await this.#sessions.updateOne(
        { _id: id, status: 'starting' },
        { $set: { status: 'queued', workerId: null, containerId: null } },
      );
      return r.matchedCount === 1;
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
    const { events = [], from, at = Date.now() } = options;
    const allowed = (from ?? NON_TERMINAL).filter((s) => !isTerminal(s));
    const result = await this.#guard('decide', () =>
      this.#serial(id, () =>
        this.#atomically(async (session) => {
          const opt = session ? { session } : {};
          const won = await this.#sessions.findOneAndUpdate(
            { _id: id, status: { $in: allowed } },
            {
              $set: {
                status: outcome.status,
                reason: outcome.reason,
                message: outcome.message ?? null,
                exitCode: outcome.exitCode ?? null,
                endedAt: at,
              },
            },
            { returnDocument: 'after', ...opt },
          );
          if (!won) {
            const current = await this.#sessions.findOne({ _id: id }, opt);
            if (!current) throw new StoreError(StoreErrorCode.SESSION_NOT_FOUND, `session ${id} does not exist`);
            return { won: false, session: toSession(current), stored: [] as SessionEvent[] };
          }
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
   * Stores FINISH once. Steps: (1) one findOneAndUpdate on a decided session whose stream is
   * open reserves FINISH's seq and closes the stream (closingSeq), so no event can follow it;
   * (2) FINISH is inserted at that seq; (3) finishSeq is set. Every step is idempotent and a
   * later call resumes where an earlier one stopped: without a transaction, a crash after (1)
   * leaves finishSeq null, so recovery (findUnfinished) calls this again, which finds the
   * reserved seq and writes FINISH there. A unique index allows one FINISH per session.
   */
  async appendFinish(id: string, data: FinishData, rid?: number): Promise<SessionEvent> {
    const result = await this.#guard('appendFinish', () =>
      this.#serial(id, () => this.#atomically((session) => this.#finishSteps(id, data, rid, session))),
    );
    if (result.fresh) this.#tails.wake(id);
    if (result.endedAt !== null) await this.#markExpiry(id, result.endedAt);
    return result.event;
  }

  /** The steps of appendFinish; `endedAt` is set when this call completed the finish (for expiry). */
  async #finishSteps(
    id: string,
    data: FinishData,
    rid: number | undefined,
    session: ClientSession | undefined,
  ): Promise<{ event: SessionEvent; fresh: boolean; endedAt: number | null }> {
    const opt = session ? { session } : {};
    const now = Date.now();
    let seq: number | undefined;
    let eventRid: number | undefined;
    let endedAt = now;
    // at most a second pass: without a transaction the session may be decided between the two reads below
    for (let attempt = 0; seq === undefined; attempt++) {
      const before = await this.#sessions.findOneAndUpdate(
        { _id: id, status: { $in: TERMINAL }, closingSeq: null },
        [
          {
            $set: {
              lastSeq: { $add: ['$lastSeq', 1] },
              closingSeq: { $add: ['$lastSeq', 1] },
              lastRid: { $max: ['$lastRid', rid ?? 0] },
            },
          },
        ],
        { returnDocument: 'before', ...opt },
      );
      if (before) {
        seq = before.lastSeq + 1;
        eventRid = rid !== undefined && rid > before.lastRid ? rid : undefined;
        endedAt = before.endedAt ?? now;
        break;
      }
      const current = await this.#sessions.findOne({ _id: id }, opt);
      if (!current) throw new StoreError(StoreErrorCode.SESSION_NOT_FOUND, `session ${id} does not exist`);
      if (!isTerminal(current.status)) {
        throw new StoreError(StoreErrorCode.NOT_DECIDED, `session ${id} is ${current.status}; decide it before FINISH`);
      }
      if (current.closingSeq === null) {
        if (attempt > 0)
          throw new StoreError(StoreErrorCode.UNAVAILABLE, `MongoDB store ${this.#where}: session ${id} kept changing during appendFinish`);
        continue;
      }
      // the stream is closed: FINISH is stored, or an earlier call stopped after reserving its seq
      const existing = await this.#events.findOne({ sessionId: id, type: 'FINISH' }, { projection: EVENT_FIELDS, ...opt });
      if (!existing && current.finishSeq !== null) {
        // FINISH was stored and has since expired: the session is being removed by retention
        throw new StoreError(StoreErrorCode.SESSION_NOT_FOUND, `session ${id} has expired`);
      }
      if (existing) {
        if (current.finishSeq !== null) return { event: toEvent(existing), fresh: false, endedAt: null };
        await this.#sessions.updateOne({ _id: id, finishSeq: null }, { $set: { finishSeq: existing.seq } }, opt);
        return { event: toEvent(existing), fresh: false, endedAt: current.endedAt ?? now };
      }
      seq = current.closingSeq;
      endedAt = current.endedAt ?? now;
    }
    const doc = eventDoc(id, seq, { type: 'FINISH', data: { ...data } }, now, eventRid);
    let event = toEvent(doc);
    let fresh = true;
    try {
      await this.#events.insertOne(doc, opt);
    } catch (err) {
      // Without a transaction another process may have written FINISH at this seq first; theirs
      // stands. In a transaction an error must propagate (the server has aborted it).
      if (session || !isDuplicateKey(err)) throw err;
      const theirs = await this.#events.findOne({ sessionId: id, type: 'FINISH' }, { projection: EVENT_FIELDS });
      if (!theirs) throw err;
      event = toEvent(theirs);
      fresh = false;
    }
    await this.#sessions.updateOne({ _id: id, finishSeq: null }, { $set: { finishSeq: event.seq } }, opt);
    return { event, fresh, endedAt };
  }

  /**
   * Gives a finished session and its events their expiry time, for the TTL indexes. Outside
   * the transaction (a session may hold many events) and in this order: the session document
   * expires only once its events are marked, so a crash in between leaves the session to the
   * purge sweep, which removes its events first. No event is left without its session.
   * Best effort for the same reason: FINISH is stored, so a failure here is not the caller's.
   */
  async #markExpiry(id: string, endedAt: number): Promise<void> {
    if (this.#retention.ms <= 0) return;
    const expireAt = new Date(endedAt + this.#retention.ms);
    try {
      await this.#events.updateMany({ sessionId: id }, { $set: { expireAt } });
      await this.#sessions.updateOne({ _id: id }, { $set: { expireAt } });
    } catch (err) {
      // the hourly purge removes the session by its end time instead
      this.#logger.warn({ err, sessionId: id }, 'event store: could not mark a finished session for expiry; the purge removes it');
    }
  }

  /**
   * Removes terminal sessions that ended before `now` minus the retention, and their events;
   * returns how many sessions it removed. The TTL indexes do the same on the server (within
   * a minute of expireAt, for sessions with FINISH); this removes eagerly what TTL would, and
   * also sessions that ended without FINISH. Events go first, so an interrupted purge leaves
   * sessions that the next one finds again, never orphaned events.
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
      const filter: Filter<SessionDoc> = { tenant: q.tenant, pos: { $lt: before } };
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
        await this.#events
          .find({ sessionId, seq: { $gt: afterSeq } }, { projection: EVENT_FIELDS })
          .sort({ seq: 1 })
          .limit(limit)
          .toArray()
      ).map(toEvent),
    );
  }

  async getFinishEvent(sessionId: string): Promise<SessionEvent | null> {
    return this.#guard('getFinishEvent', async () => {
      const doc = await this.#events.findOne({ sessionId, type: 'FINISH' }, { projection: EVENT_FIELDS });
      return doc ? toEvent(doc) : null;
    });
  }

  async lastRid(sessionId: string): Promise<number> {
    return this.#guard('lastRid', async () => {
      const doc = await this.#sessions.findOne({ _id: sessionId }, { projection: { lastRid: 1 } });
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
   * It opens with the first tail and stays open until close(); if it fails, tails keep
   * polling and the next tail opens a new one. Never throws: a tail subscribes through it.
   */
  #ensureChangeStream(): void {
    if (!this.#changeStreams || this.#stream || this.#closed) return;
    let stream: ChangeStream;
    try {
      stream = this.#events.watch<Document>([{ $match: { operationType: 'insert' } }, { $project: { 'fullDocument.sessionId': 1 } }]);
    } catch (err) {
      // no live wake-ups from other processes: the tails poll
      this.#logger.warn({ err }, 'event store: cannot open the change stream; tails poll');
      return;
    }
    this.#stream = stream;
    stream.on('change', (change) => {
      const sessionId: unknown = (change as { fullDocument?: { sessionId?: unknown } }).fullDocument?.sessionId;
      if (typeof sessionId === 'string') this.#tails.wake(sessionId);
    });
    const drop = () => {
      if (this.#stream === stream) this.#stream = undefined;
      void stream.close().catch(() => undefined);
    };
    stream.on('error', (err) => {
      if (!this.#closed) this.#logger.warn({ err }, 'event store: the change stream failed; tails poll until the next tail reopens it');
      drop();
    });
    stream.on('close', drop);
  }
}

async function createIndexes(db: Db): Promise<void> {
  await db.collection('events').createIndexes([
    { key: { sessionId: 1, seq: 1 }, name: 'events_session_seq', unique: true },
    // idempotent re-sends: one event per runner id per session
    { key: { sessionId: 1, rid: 1 }, name: 'events_session_rid', unique: true, partialFilterExpression: { rid: { $exists: true } } },
    // the FINISH lookup, and the guarantee of one FINISH per session
    { key: { sessionId: 1, type: 1 }, name: 'events_session_finish', unique: true, partialFilterExpression: { type: 'FINISH' } },
    { key: { expireAt: 1 }, name: 'events_ttl', expireAfterSeconds: 0 },
  ]);
  await db.collection('sessions').createIndexes([
    { key: { status: 1, pos: 1 }, name: 'sessions_status_pos' },
    { key: { tenant: 1, pos: 1 }, name: 'sessions_tenant_pos' },
    // recovery: decided sessions still lacking FINISH
    { key: { finishSeq: 1, pos: 1 }, name: 'sessions_unfinished' },
    // the retention sweep
    { key: { endedAt: 1 }, name: 'sessions_ended' },
    { key: { expireAt: 1 }, name: 'sessions_ttl', expireAfterSeconds: 0 },
  ]);
  await db
    .collection<CounterDoc>('counters')
    .updateOne({ _id: POS_COUNTER }, { $setOnInsert: { value: 0 } }, { upsert: true })
    .catch((err: unknown) => {
      // two processes opening at once: the other one created it
      if (!isDuplicateKey(err)) throw err;
    });
}
