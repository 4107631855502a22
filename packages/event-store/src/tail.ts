import { EventEmitter } from 'node:events';
import type { SessionEvent } from '@mgx/agent-sdk';
import type { TailOptions } from './ports.js';

export interface TailSource {
  read(afterSeq: number, limit: number): Promise<SessionEvent[]>;
  /** Calls `wake` whenever new events may be stored; returns the unsubscribe function. */
  subscribe(wake: () => void): () => void;
  /** Re-read at least this often, for writers the subscription cannot see. */
  pollMs: number;
  afterSeq: number;
  signal: AbortSignal;
  batch?: number;
}

/** The bus event that wakes every tail (a symbol, so no session id can collide with it). */
const WAKE_ALL = Symbol('wake all tails');

/**
 * A tail's subscription to an adapter's in-process bus: woken by appends to the session
 * (the adapter emits the session id), by the store closing (`close`) and by a wake of all.
 */
export function busSubscription(bus: EventEmitter, sessionId: string): TailSource['subscribe'] {
  return (wake) => {
    bus.on(sessionId, wake);
    bus.on('close', wake);
    bus.on(WAKE_ALL, wake);
    return () => {
      bus.off(sessionId, wake);
      bus.off('close', wake);
      bus.off(WAKE_ALL, wake);
    };
  };
}

/**
 * Backlog then live tail, shared by the adapters, in the batches the store returned: one
 * array per read, so a burst of events travels on as one unit. It listens before it reads,
 * and reads by seq after the last event it yielded, so an append between the two is neither
 * missed nor delivered twice. Ends after FINISH (the last batch ends with it) or on abort.
 */
export async function* tailBatches(src: TailSource): AsyncGenerator<SessionEvent[]> {
  const batch = src.batch ?? 500;
  let cursor = src.afterSeq;
  let dirty = true;
  let wakeUp: (() => void) | undefined;
  const wake = () => {
    dirty = true;
    wakeUp?.();
  };
  const unsubscribe = src.subscribe(wake);
  src.signal.addEventListener('abort', wake, { once: true });
  try {
    while (!src.signal.aborted) {
      dirty = false;
      const events = await src.read(cursor, batch);
      const end = events.findIndex((ev) => ev.type === 'FINISH');
      const out = end >= 0 ? events.slice(0, end + 1) : events;
      const last = out.at(-1);
      if (last) {
        cursor = last.seq;
        yield out;
        if (end >= 0) return;
      }
      if (events.length === batch || dirty) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, src.pollMs);
        wakeUp = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wakeUp = undefined;
    }
  } finally {
    unsubscribe();
    src.signal.removeEventListener('abort', wake);
  }
}

/** The same tail, one event at a time. */
export async function* tailEvents(src: TailSource): AsyncGenerator<SessionEvent> {
  for await (const events of tailBatches(src)) yield* events;
}

/**
 * The tails of one store, for both adapters: an in-process bus that the adapter wakes after it
 * stores events (and that closing the store wakes, so tails see the store end), and `tail` /
 * `tailBatches` over the adapter's own read.
 */
export class Tails {
  readonly #bus = new EventEmitter();
  readonly #read: (sessionId: string, afterSeq: number, limit: number) => Promise<SessionEvent[]>;
  readonly #pollMs: number;
  readonly #beforeSubscribe: (() => void) | undefined;

  /**
   * `pollMs`: how often a tail re-reads when nothing woke it (writers this process cannot see).
   * `beforeSubscribe`: runs as each tail subscribes, before its first read (e.g. to open a
   * change stream that wakes the bus for other processes' writes); it must not throw.
   */
  constructor(
    read: (sessionId: string, afterSeq: number, limit: number) => Promise<SessionEvent[]>,
    pollMs: number,
    beforeSubscribe?: () => void,
  ) {
    this.#read = read;
    this.#pollMs = pollMs;
    this.#beforeSubscribe = beforeSubscribe;
    this.#bus.setMaxListeners(0);
  }

  /** Wakes the tails of a session: events may have been stored. */
  wake(sessionId: string): void {
    this.#bus.emit(sessionId);
  }

  /** Wakes the tails of a session when `stored` holds events. */
  notify(sessionId: string, stored: readonly SessionEvent[]): void {
    if (stored.length > 0) this.wake(sessionId);
  }

  /** Wakes every tail to re-read (e.g. after a gap in the wake-ups from other processes). */
  wakeAll(): void {
    this.#bus.emit(WAKE_ALL);
  }

  /** Wakes every tail: the store is closing. */
  close(): void {
    this.wakeAll();
  }

  events(sessionId: string, options: TailOptions): AsyncIterable<SessionEvent> {
    return tailEvents(this.#source(sessionId, options));
  }

  batches(sessionId: string, options: TailOptions): AsyncIterable<SessionEvent[]> {
    return tailBatches(this.#source(sessionId, options));
  }

  #source(sessionId: string, options: TailOptions): TailSource {
    const subscribe = busSubscription(this.#bus, sessionId);
    return {
      read: (afterSeq, limit) => this.#read(sessionId, afterSeq, limit),
      subscribe: (wake) => {
        this.#beforeSubscribe?.();
        return subscribe(wake);
      },
      pollMs: this.#pollMs,
      ...options,
    };
  }
}
