import { z } from 'zod';
import type { SessionEvent } from '@mgx/agent-sdk';
import type { AuthedContext } from '../trpc.js';

import { sessionId } from '../ids.js';

export const streamInput = z.object({
  sessionId,
  lastEventId: z
    .string()
    .regex(/^\d{1,15}$/, 'lastEventId must be a seq number')
    .nullish(),
});

/**
 * Backlog then live events of a session the caller owns, in stored batches; ends after
 * FINISH. Each event's seq is its SSE id, so a client resumes with `lastEventId` (or the
 * Last-Event-ID header) and gets no gap and no duplicate.
 */
export async function* followStored(
  ctx: AuthedContext,
  input: z.infer<typeof streamInput>,
  signal: AbortSignal | undefined,
): AsyncGenerator<SessionEvent[]> {
  const { metrics, store } = ctx.deps;
  const ac = new AbortController();
  const abort = () => ac.abort();
  signal?.addEventListener('abort', abort, { once: true });
  metrics.sseSubscribers.inc();
  try {
    yield* store.events.tailBatches(input.sessionId, { afterSeq: Number(input.lastEventId ?? 0), signal: ac.signal });
  } finally {
    signal?.removeEventListener('abort', abort);
    ac.abort();
    metrics.sseSubscribers.dec();
  }
}

/** Splits events into runs of at most 500 whose data adds up to about `maxBytes`. */
export function chunkBySize(events: SessionEvent[], maxBytes: number): SessionEvent[][] {
  const chunks: SessionEvent[][] = [];
  let current: SessionEvent[] = [];
  let bytes = 0;
  for (const ev of events) {
    const size = JSON.stringify(ev.data).length + 100;
    if (current.length > 0 && (bytes + size > maxBytes || current.length >= 500)) {
      chunks.push(current);
      current = [];
      bytes = 0;
    }
    current.push(ev);
    bytes += size;
  }
  if (current.length > 0) chunks.push(current);
  return chunks;
}
