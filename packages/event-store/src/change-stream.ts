import type { ChangeStream, Document } from 'mongodb';
import type { Logger } from '@mgx/config';

/** How long to wait before reopening a failed change stream: exponential, capped, jittered. */
export interface Backoff {
  /** The delay after the first failure (before jitter). */
  initialMs: number;
  /** The delay never exceeds this. */
  maxMs: number;
  /** Each further failure multiplies the delay by this. */
  factor: number;
  /** The share of the delay that is random, 0 to 1: a fleet that lost its stream at once does not reopen at once. */
  jitter: number;
}

/** A stream open this long is healthy again: its next failure backs off from the start. */
const HEALTHY_MS = 10_000;

export const CHANGE_STREAM_BACKOFF: Backoff = { initialMs: 500, maxMs: 30_000, factor: 2, jitter: 0.5 };

/**
 * The delay before reopen number `attempt` (0 for the first after a failure): the exponential
 * delay capped at `maxMs`, of which the `jitter` share is drawn at random. Always within
 * [(1 - jitter) × d, d] where d = min(maxMs, initialMs × factor^attempt).
 */
export function backoffDelay(attempt: number, policy: Backoff = CHANGE_STREAM_BACKOFF, random: () => number = Math.random): number {
  const exp = Math.min(Math.max(0, attempt), 64);
  const capped = Math.min(policy.maxMs, policy.initialMs * policy.factor ** exp);
  const jitter = Math.min(1, Math.max(0, policy.jitter));
  const r = Math.min(1, Math.max(0, random()));
  return Math.round(capped * (1 - jitter * r));
}

export interface KeptChangeStreamOptions {
  /** Names the stream in logs (e.g. "events"). */
  name: string;
  /** Opens a new change stream (collection.watch(...)); may throw. */
  open: () => ChangeStream<Document>;
  /** Each change the stream delivers. */
  onChange: (change: Document) => void;
  /** Called when a stream is open again after a failure: whatever it would have woken may have changed meanwhile. */
  onReopen?: () => void;
  logger: Logger;
  backoff?: Backoff;
}

/**
 * A change stream kept open: the driver resumes it by itself after transient errors; when it
 * fails anyway (or closes without being asked to) this reopens it after a back-off that grows
 * with each failure in a row (see backoffDelay), logging every failure and the recovery. The
 * back-off starts over once a reopened stream delivers a change or has stayed open a while. Generic over what it watches, so a
 * store can keep several (events, sessions).
 */
export class KeptChangeStream {
  readonly #o: KeptChangeStreamOptions;
  #stream: ChangeStream<Document> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #failures = 0;
  #started = false;
  #closed = false;

  constructor(options: KeptChangeStreamOptions) {
    this.#o = options;
  }

  /** Opens the stream unless it is open, reopening or closed. Never throws. */
  start(): void {
    if (this.#started || this.#closed) return;
    this.#started = true;
    this.#open();
  }

  /** Whether a stream is open now (false while waiting to reopen). */
  get open(): boolean {
    return this.#stream !== undefined;
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    const stream = this.#stream;
    this.#stream = undefined;
    await stream?.close().catch(() => undefined);
  }

  #open(): void {
    if (this.#closed) return;
    let stream: ChangeStream<Document>;
    try {
      stream = this.#o.open();
    } catch (err) {
      this.#failed(err);
      return;
    }
    this.#stream = stream;
    const openedAt = Date.now();
    let answered = false;
    const answer = (change: boolean) => {
      if (this.#stream !== stream) return;
      if (!answered && this.#failures > 0) {
        this.#o.logger.info(
          { stream: this.#o.name, failures: this.#failures },
          `event store: the ${this.#o.name} change stream is open again`,
        );
        this.#o.onReopen?.();
      }
      answered = true;
      // a stream that fails right after each reopen keeps backing off; one that delivers, or
      // stays up, starts over
      if (change || Date.now() - openedAt >= HEALTHY_MS) this.#failures = 0;
    };
    stream.on('change', (change: Document) => {
      answer(true);
      this.#o.onChange(change);
    });
    stream.on('resumeTokenChanged', () => answer(false));
    stream.on('error', (err: unknown) => {
      if (this.#stream === stream) this.#failed(err);
      void stream.close().catch(() => undefined);
    });
    stream.on('close', () => {
      if (this.#stream === stream) this.#failed(new Error('the change stream closed'));
    });
  }

  /** The current stream failed (or could not open): drop it and reopen after the back-off. */
  #failed(err: unknown): void {
    this.#stream = undefined;
    if (this.#closed || this.#timer) return;
    const delay = backoffDelay(this.#failures, this.#o.backoff);
    this.#failures++;
    this.#o.logger.warn(
      { err, stream: this.#o.name, failures: this.#failures, retryInMs: delay },
      `event store: the ${this.#o.name} change stream failed; reopening it in ${delay} ms (tails poll meanwhile)`,
    );
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#open();
    }, delay);
    // a pending reopen never keeps the process alive
    this.#timer.unref();
  }
}
