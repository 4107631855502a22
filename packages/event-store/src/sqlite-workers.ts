import type Database from 'better-sqlite3';
import { StoreError, StoreErrorCode } from './errors.js';
import { addColumnIfMissing } from './sqlite-columns.js';
import type { HeartbeatResult, RegisterResult, WorkerInfo, WorkerRecord, WorkerState, WorkerStore } from './ports.js';

export const WORKERS_SCHEMA = `
CREATE TABLE IF NOT EXISTS workers (
  id TEXT PRIMARY KEY,
  hostname TEXT NOT NULL,
  engine TEXT NOT NULL,
  capacity INTEGER NOT NULL,
  version TEXT NOT NULL,
  state TEXT NOT NULL,
  in_use INTEGER NOT NULL DEFAULT 0,
  started_at INTEGER NOT NULL,
  heartbeat_at INTEGER NOT NULL,
  lease_until INTEGER NOT NULL,
  epoch INTEGER NOT NULL,
  drain_requested INTEGER NOT NULL DEFAULT 0,
  url TEXT
);
`;

/** Columns added to the workers table after its first schema, for store files created before them. */
export function migrateWorkers(db: Database.Database): void {
  addColumnIfMissing(db, 'workers', 'drain_requested', 'INTEGER NOT NULL DEFAULT 0');
  addColumnIfMissing(db, 'workers', 'url', 'TEXT');
}

interface WorkerRow {
  id: string;
  hostname: string;
  engine: string;
  capacity: number;
  version: string;
  state: WorkerState;
  in_use: number;
  started_at: number;
  heartbeat_at: number;
  lease_until: number;
  epoch: number;
  drain_requested: number;
  url: string | null;
}

const toWorker = (r: WorkerRow): WorkerRecord => ({
  id: r.id,
  hostname: r.hostname,
  engine: r.engine,
  capacity: r.capacity,
  version: r.version,
  state: r.state,
  inUse: r.in_use,
  startedAt: r.started_at,
  heartbeatAt: r.heartbeat_at,
  leaseUntil: r.lease_until,
  epoch: r.epoch,
  drainRequested: r.drain_requested === 1,
  ...(r.url !== null ? { url: r.url } : {}),
});

interface HeartbeatParams {
  id: string;
  epoch: number;
  now: number;
  leaseUntil: number;
  inUse: number;
  state: 'alive' | 'draining';
}

/** How the worker table reaches the store's driver: its call and transaction wrappers. */
export interface SqliteAccess {
  db: Database.Database;
  call<T>(what: string, fn: () => T): T;
  tx<T>(what: string, fn: () => T): T;
  /** A write a timer repeats: waits for another process's lock only briefly. */
  backgroundTx<T>(what: string, fn: () => T): T;
}

/** Workers and their leases in the store's SQLite file, shared by every process that opens it. */
export class SqliteWorkers implements WorkerStore {
  readonly #a: SqliteAccess;
  readonly #stmts;

  constructor(access: SqliteAccess) {
    this.#a = access;
    const { db } = access;
    this.#stmts = {
      get: db.prepare<[string], WorkerRow>('SELECT * FROM workers WHERE id = ?'),
      list: db.prepare<[], WorkerRow>('SELECT * FROM workers ORDER BY id'),
      upsert: db.prepare(
        `INSERT INTO workers (id, hostname, engine, capacity, version, state, in_use, started_at, heartbeat_at, lease_until, epoch, url)
         VALUES (@id, @hostname, @engine, @capacity, @version, 'alive', 0, @now, @now, @leaseUntil, @epoch, @url)
         ON CONFLICT (id) DO UPDATE SET hostname = @hostname, engine = @engine, capacity = @capacity, version = @version,
           state = 'alive', in_use = 0, started_at = @now, heartbeat_at = @now, lease_until = @leaseUntil, epoch = @epoch,
           drain_requested = 0, url = @url`,
      ),
      heartbeat: db.prepare<[HeartbeatParams], { drain_requested: number }>(
        `UPDATE workers SET heartbeat_at = @now, lease_until = @leaseUntil, in_use = @inUse, state = @state
         WHERE id = @id AND epoch = @epoch AND state IN ('alive', 'draining')
         RETURNING drain_requested`,
      ),
      requestDrain: db.prepare("UPDATE workers SET drain_requested = 1 WHERE id = ? AND state IN ('alive', 'draining')"),
      markDead: db.prepare("UPDATE workers SET state = 'dead' WHERE id = ? AND state IN ('alive', 'draining') AND lease_until < ?"),
      deregister: db.prepare("UPDATE workers SET state = 'stopped', lease_until = ?, in_use = 0 WHERE id = ? AND epoch = ?"),
    };
  }

  async register(info: WorkerInfo, leaseMs: number, now = Date.now()): Promise<RegisterResult> {
    return this.#a.tx('registerWorker', () => {
      const before = this.#stmts.get.get(info.id);
      this.#stmts.upsert.run({ ...info, url: info.url ?? null, now, leaseUntil: now + leaseMs, epoch: (before?.epoch ?? 0) + 1 });
      const row = this.#stmts.get.get(info.id);
      if (!row) throw new StoreError(StoreErrorCode.UNAVAILABLE, `worker ${info.id} was not stored`);
      return { worker: toWorker(row), previous: before ? toWorker(before) : null };
    });
  }

  async heartbeat(
    id: string,
    epoch: number,
    update: { inUse: number; state: 'alive' | 'draining' },
    leaseMs: number,
    now = Date.now(),
  ): Promise<HeartbeatResult> {
    const row = this.#a.backgroundTx('heartbeat', () =>
      this.#stmts.heartbeat.get({ id, epoch, now, leaseUntil: now + leaseMs, inUse: update.inUse, state: update.state }),
    );
    return { kept: row !== undefined, drainRequested: row?.drain_requested === 1 };
  }

  async requestDrain(id: string): Promise<WorkerRecord> {
    return this.#a.tx('requestDrain', () => {
      const before = this.#stmts.get.get(id);
      if (!before) throw new StoreError(StoreErrorCode.WORKER_NOT_FOUND, `worker ${id} does not exist`);
      if (this.#stmts.requestDrain.run(id).changes !== 1) {
        throw new StoreError(StoreErrorCode.WORKER_NOT_LIVE, `worker ${id} is ${before.state}: there is nothing to drain`);
      }
      return toWorker({ ...before, drain_requested: 1 });
    });
  }

  async get(id: string): Promise<WorkerRecord | null> {
    const row = this.#a.call('getWorker', () => this.#stmts.get.get(id));
    return row ? toWorker(row) : null;
  }

  async list(): Promise<WorkerRecord[]> {
    return this.#a.call('listWorkers', () => this.#stmts.list.all()).map(toWorker);
  }

  async markDead(id: string, now = Date.now()): Promise<boolean> {
    return this.#a.backgroundTx('markDead', () => this.#stmts.markDead.run(id, now).changes === 1);
  }

  async deregister(id: string, epoch: number): Promise<void> {
    this.#a.tx('deregister', () => this.#stmts.deregister.run(Date.now(), id, epoch));
  }
}
