import type Database from 'better-sqlite3';

/**
 * Notices commits made by other connections to the store's file (other processes on the host)
 * by reading `PRAGMA data_version` every `intervalMs`. The value changes only when another
 * connection committed, and reading it touches no table: a few microseconds, so the check can
 * run often enough to wake tails and cancel watchers within tens of milliseconds, where polling
 * the tables would cost a query per tail.
 *
 * Why not `fs.watch` on the `-wal` file: inotify sees this process's own writes too (every
 * append would wake every tail), several events per commit, none at all on network file
 * systems, and the WAL file is replaced or truncated at checkpoints and removed when the last
 * connection closes, which silently ends a watch on it. data_version has none of these cases.
 *
 * One timer per store, started with the first listener, unref'd so it never keeps a process
 * alive, stopped by `stop()` (the store closing).
 */
export class DataVersionWatcher {
  readonly #db: Database.Database;
  /** Prepared once: `db.pragma()` prepares on every call, which costs more than the read itself. */
  readonly #dataVersion: Database.Statement<[], number>;
  readonly #intervalMs: number;
  readonly #listeners = new Set<() => void>();
  #timer: NodeJS.Timeout | undefined;
  #version: number | undefined;
  #stopped = false;
  /** How many times another connection's commit was noticed (for tests and diagnostics). */
  changes = 0;

  constructor(db: Database.Database, intervalMs: number) {
    this.#db = db;
    this.#dataVersion = db.prepare<[], number>('PRAGMA data_version').pluck();
    this.#intervalMs = intervalMs;
  }

  /** Calls `listener` after another connection committed; returns the unsubscribe function. */
  subscribe(listener: () => void): () => void {
    this.#listeners.add(listener);
    this.#start();
    return () => {
      this.#listeners.delete(listener);
    };
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #start(): void {
    if (this.#timer || this.#stopped || this.#intervalMs <= 0) return;
    this.#version = this.#read();
    this.#timer = setInterval(() => this.#check(), this.#intervalMs);
    this.#timer.unref();
  }

  #read(): number | undefined {
    try {
      return this.#dataVersion.get();
    } catch {
      // a busy or closing file: the next tick tries again, and the slow polls stay as a net
      return undefined;
    }
  }

  #check(): void {
    if (!this.#db.open) return;
    const version = this.#read();
    if (version === undefined || version === this.#version) return;
    this.#version = version;
    this.changes++;
    for (const listener of [...this.#listeners]) {
      try {
        listener();
      } catch {
        // a listener's failure is its own; the others still hear of the change
      }
    }
  }
}

/** The index the cancel watch reads: only sessions with a cancel request are in it. */
export const CANCELS_SCHEMA = `
CREATE INDEX IF NOT EXISTS sessions_cancel_requested ON sessions (worker_id, status) WHERE cancel_requested = 1;
`;
