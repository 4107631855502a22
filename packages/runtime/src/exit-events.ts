import { silentLogger, type Logger } from '@mgx/config';
import { exitOf, type ContainerState, type ExitInfo } from './container-runtime.js';
import { RuntimeError, RuntimeErrorCode } from './errors.js';

/** One container event from the engine's /events stream, as far as exits go. */
export interface EngineEvent {
  id: string;
  /** `die` on Docker, `died` on Podman. */
  action: string;
}

/** An open events stream; `close` ends it without it counting as lost. */
export interface EventStream {
  close(): void;
}

export interface ExitEventsOptions {
  /**
   * Opens the engine's event stream. Resolves once the engine streams; `onEnd` is called once
   * when the stream ends or fails after that.
   */
  subscribe(onEvent: (e: EngineEvent) => void, onEnd: (err?: unknown) => void, signal?: AbortSignal): Promise<EventStream>;
  inspect(id: string): Promise<ContainerState | null>;
  logger?: Logger;
  /** First pause before reconnecting; doubled on each failure up to `maxBackoffMs`. */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** How long the stream stays open with nothing to watch. */
  idleMs?: number;
  /** How long opening the stream may take before the attempt is given up and retried. */
  openTimeoutMs?: number;
  /**
   * How often every watched container is inspected anyway, in case its event was lost with the
   * stream still open; default 10 s. One timer for all of them, not a request held per container.
   */
  sweepMs?: number;
}

const EXIT_ACTIONS = new Set(['die', 'died']);

interface Waiter {
  resolve: (exit: ExitInfo) => void;
  reject: (err: Error) => void;
}

/**
 * A container's exit as the engine announces it: one /events subscription for the whole
 * runtime (not one per container), its `die` taken as a hint and confirmed by inspect. Podman's
 * wait answers only after its `cleanup` (~300 ms after the exit); its `died` event comes at the
 * exit. Events can be lost (the engine restarts, the stream drops): the stream is reopened with
 * back-off, every watched container is inspected once each time it opens and once a sweep
 * (`sweepMs`), and callers may race this with a poll of their own, so a lost event costs time,
 * never an exit.
 */
export class ExitEvents {
  readonly #o: Required<Omit<ExitEventsOptions, 'logger'>> & { logger: Logger };
  readonly #waiters = new Map<string, Set<Waiter>>();
  /** Containers with an inspect in flight, and whether another was asked for meanwhile. */
  readonly #checking = new Map<string, boolean>();
  #stream: EventStream | undefined;
  #connecting = false;
  #backoff: number;
  #retry: NodeJS.Timeout | undefined;
  #idle: NodeJS.Timeout | undefined;
  #sweep: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(options: ExitEventsOptions) {
    this.#o = {
      backoffMs: 100,
      maxBackoffMs: 5000,
      idleMs: 15_000,
      openTimeoutMs: 10_000,
      sweepMs: 10_000,
      logger: silentLogger,
      ...options,
    };
    this.#backoff = this.#o.backoffMs;
  }

  /** Whether the stream is open (tests, diagnostics). */
  get connected(): boolean {
    return this.#stream !== undefined;
  }

  /**
   * Resolves with the container's exit once the engine announces it and inspect confirms it;
   * rejects with CONTAINER_NOT_FOUND when the container is gone, or with `signal`'s reason.
   * Engine trouble never rejects it: it waits for the stream to come back.
   */
  exited(id: string, signal?: AbortSignal): Promise<ExitInfo> {
    return new Promise<ExitInfo>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason as Error);
      let set = this.#waiters.get(id);
      if (!set) this.#waiters.set(id, (set = new Set()));
      const done = () => {
        signal?.removeEventListener('abort', abort);
        const s = this.#waiters.get(id);
        s?.delete(waiter);
        if (s?.size === 0) this.#waiters.delete(id);
        if (this.#waiters.size === 0) this.#scheduleIdle();
      };
      const waiter: Waiter = {
        resolve: (exit) => {
          done();
          resolve(exit);
        },
        reject: (err) => {
          done();
          reject(err);
        },
      };
      const abort = () => waiter.reject(signal?.reason as Error);
      signal?.addEventListener('abort', abort, { once: true });
      set.add(waiter);
      clearTimeout(this.#idle);
      this.#connect();
      this.#scheduleSweep();
      // it may have exited before it was watched; the stream reports what comes after this
      this.#check(id);
    });
  }

  /** Ends the stream and stops reconnecting; pending waits are left to their other paths. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#retry);
    clearTimeout(this.#idle);
    clearTimeout(this.#sweep);
    const stream = this.#stream;
    this.#stream = undefined;
    stream?.close();
  }

  #connect(): void {
    if (this.#closed || this.#stream || this.#connecting || this.#retry) return;
    this.#connecting = true;
    let stream: EventStream | undefined;
    let ended = false;
    // an engine that accepts the request and never answers must not stop the reconnects
    const ac = new AbortController();
    let gaveUp = false;
    const timer = setTimeout(() => {
      gaveUp = true;
      this.#connecting = false;
      ac.abort(new Error(`the engine event stream did not open within ${this.#o.openTimeoutMs} ms`));
      this.#o.logger.warn({ retryInMs: this.#backoff }, 'the engine event stream did not open in time; retrying');
      this.#reconnectLater();
    }, this.#o.openTimeoutMs);
    timer.unref();
    const onEnd = (err?: unknown) => {
      if (ended || gaveUp) return;
      ended = true;
      // a stream this side closed (idle, close) is not lost
      if (this.#closed || this.#stream !== stream) return;
      this.#stream = undefined;
      this.#o.logger.info({ err }, 'the engine event stream ended; reopening it');
      this.#reconnectLater();
    };
    const opened = Date.now();
    this.#o
      .subscribe((e) => this.#onEvent(e), onEnd, ac.signal)
      .then(
        (s) => {
          clearTimeout(timer);
          if (gaveUp) return s.close();
          this.#connecting = false;
          stream = s;
          if (ended || this.#closed) return s.close();
          this.#stream = s;
          // a stream that stays up earns a quick reconnect next time
          setTimeout(() => {
            if (this.#stream === s && Date.now() - opened >= 5000) this.#backoff = this.#o.backoffMs;
          }, 5000).unref();
          // whatever exited while no stream was open is found by asking
          for (const id of this.#waiters.keys()) this.#check(id);
          if (this.#waiters.size === 0) this.#scheduleIdle();
        },
        (err: unknown) => {
          clearTimeout(timer);
          if (gaveUp) return;
          this.#connecting = false;
          this.#o.logger.warn({ err, retryInMs: this.#backoff }, 'cannot open the engine event stream; retrying');
          this.#reconnectLater();
        },
      );
  }

  #reconnectLater(): void {
    if (this.#closed || this.#retry || this.#waiters.size === 0) return;
    const delay = this.#backoff;
    this.#backoff = Math.min(this.#backoff * 2, this.#o.maxBackoffMs);
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      if (this.#waiters.size > 0) this.#connect();
    }, delay);
    this.#retry.unref();
  }

  /** Inspects every watched container once a sweep, while there are any. */
  #scheduleSweep(): void {
    if (this.#sweep !== undefined || this.#closed) return;
    this.#sweep = setTimeout(() => {
      this.#sweep = undefined;
      if (this.#waiters.size === 0) return;
      for (const id of this.#waiters.keys()) this.#check(id);
      this.#scheduleSweep();
    }, this.#o.sweepMs);
    this.#sweep.unref();
  }

  #scheduleIdle(): void {
    clearTimeout(this.#idle);
    if (!this.#stream) return;
    this.#idle = setTimeout(() => {
      if (this.#waiters.size > 0) return;
      const stream = this.#stream;
      this.#stream = undefined;
      stream?.close();
    }, this.#o.idleMs);
    this.#idle.unref();
  }

  #onEvent(e: EngineEvent): void {
    if (EXIT_ACTIONS.has(e.action) && this.#waiters.has(e.id)) this.#check(e.id);
  }

  /** Inspects a watched container and settles its waiters if it has exited or is gone. */
  #check(id: string): void {
    if (this.#checking.has(id)) {
      // the inspect in flight may predate the event: ask once more after it
      this.#checking.set(id, true);
      return;
    }
    this.#checking.set(id, false);
    void this.#o
      .inspect(id)
      .then(
        (state) => {
          const waiters = [...(this.#waiters.get(id) ?? [])];
          const exit = state && exitOf(state);
          if (state === null) {
            const err = new RuntimeError(RuntimeErrorCode.CONTAINER_NOT_FOUND, `container ${id} is gone`, 'wait');
            for (const w of waiters) w.reject(err);
          } else if (exit) {
            for (const w of waiters) w.resolve(exit);
          }
        },
        (err: unknown) => this.#o.logger.debug({ err, containerId: id }, 'inspecting a watched container failed'),
      )
      .finally(() => {
        const again = this.#checking.get(id) === true;
        this.#checking.delete(id);
        if (again && this.#waiters.has(id)) this.#check(id);
      });
  }
}
