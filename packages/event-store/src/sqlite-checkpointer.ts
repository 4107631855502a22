import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { StoreError, StoreErrorCode } from './errors.js';

/**
 * The thread's code, plain CommonJS (an eval'd worker has no TypeScript loader). It holds a
 * connection of its own to the file and runs a PASSIVE checkpoint when asked, no sooner than
 * `pauseMs` after the last one: PASSIVE copies what it can from the WAL into the database file
 * without waiting for or blocking the writer. When the writer went on meanwhile, it runs again.
 */
const THREAD = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
let db;
let timer;
let again = false;
const fail = (err) => parentPort.postMessage({ t: 'error', message: String(err && err.message || err), code: err && err.code });
try {
  db = new Database(workerData.file, { timeout: workerData.busyTimeoutMs, fileMustExist: true });
} catch (err) {
  fail(err);
}
const run = () => {
  timer = undefined;
  if (!db) return;
  try {
    const [r] = db.pragma('wal_checkpoint(PASSIVE)');
    parentPort.postMessage({ t: 'checkpoint', frames: r.log, copied: r.checkpointed });
    // the writer committed more while it ran: those are copied on the next run
    again = r.log > r.checkpointed;
  } catch (err) {
    fail(err);
  }
  if (again) timer = setTimeout(run, workerData.pauseMs);
};
parentPort.on('message', (m) => {
  if (m === 'close') {
    if (timer) clearTimeout(timer);
    if (db) db.close();
    parentPort.close();
  } else if (m === 'commit' && !timer) {
    timer = setTimeout(run, workerData.pauseMs);
  }
});
`;

export interface CheckpointerOptions {
  file: string;
  busyTimeoutMs: number;
  /** At most one checkpoint this often (ms). */
  pauseMs?: number;
  /** Hears a checkpoint that failed (the writer's safety net, SQLite's own auto-checkpoint, still runs). */
  onError: (err: StoreError) => void;
  /** Hears each checkpoint: frames in the WAL, frames copied into the database file. */
  onCheckpoint?: (frames: number, copied: number) => void;
}

type ThreadMessage = { t: 'checkpoint'; frames: number; copied: number } | { t: 'error'; message: string; code?: string };

/**
 * WAL checkpoints in a thread of their own. A checkpoint copies the WAL's pages into the
 * database file and syncs it (with synchronous=NORMAL that is the only fsync): done by the
 * writer's connection (SQLite's default, every 1000 pages) it stops the event loop, ingest and
 * every request with it, for as long as the disk takes. Started on the first commit reported.
 */
export class SqliteCheckpointer {
  readonly #o: CheckpointerOptions;
  #worker: Worker | undefined;
  #exited: Promise<void> | undefined;
  #closed = false;

  constructor(options: CheckpointerOptions) {
    this.#o = options;
  }

  /** The writer committed: a checkpoint follows within `pauseMs`. Cheap enough for every commit. */
  committed(): void {
    if (this.#closed) return;
    this.#start().postMessage('commit');
  }

  /** Lets a checkpoint under way finish, then ends the thread and its connection. */
  async close(): Promise<void> {
    this.#closed = true;
    if (!this.#worker) return;
    // a process whose last work is this close waits for the thread (unref'd, it would exit with the wait unsettled)
    this.#worker.ref();
    this.#worker.postMessage('close');
    await this.#exited;
  }

  #start(): Worker {
    if (this.#worker) return this.#worker;
    const worker = new Worker(THREAD, {
      eval: true,
      workerData: {
        driver: createRequire(import.meta.url).resolve('better-sqlite3'),
        file: this.#o.file,
        busyTimeoutMs: this.#o.busyTimeoutMs,
        pauseMs: this.#o.pauseMs ?? 50,
      },
    });
    // it never keeps the process alive on its own
    worker.unref();
    worker.on('message', (m: ThreadMessage) => {
      if (m.t === 'checkpoint') this.#o.onCheckpoint?.(m.frames, m.copied);
      else this.#o.onError(this.#error(m.message, m.code));
    });
    worker.on('error', (err) => this.#o.onError(this.#error(err.message, undefined, err)));
    this.#exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    this.#worker = worker;
    return worker;
  }

  #error(message: string, code: string | undefined, cause?: Error): StoreError {
    const err = new StoreError(
      StoreErrorCode.UNAVAILABLE,
      `SQLite store ${this.#o.file}: checkpoint thread: ${message}${code ? ` (${code})` : ''}`,
      cause ? { cause } : undefined,
    );
    return err;
  }
}
