import type { EventEmitter } from 'node:events';
import type { SessionEvent } from '@mgx/agent-sdk';

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

/**
 * A tail's subscription to an adapter's in-process bus: woken by appends to the session
 * (the adapter emits the session id) and by the store closing (`close`).
 */
export function busSubscription(bus: EventEmitter, sessionId: string): TailSource['subscribe'] {
  return (wake) => {
    bus.on(sessionId, wake);
    bus.on('close', wake);
    return () => {
      bus.off(sessionId, wake);
      bus.off('close', wake);
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
      if (events.length > 0) {
        const end = events.findIndex((ev) => ev.type === 'FINISH');
        const out = end >= 0 ? events.slice(0, end + 1) : events;
        cursor = out.at(-1)!.seq;
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
