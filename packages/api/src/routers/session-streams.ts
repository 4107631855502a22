import { z } from 'zod';
import type { SessionEvent } from '@mgx/agent-sdk';
import { sessionStreamsOf } from '../stream-hub.js';
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
 * Last-Event-ID header) and gets no gap and no duplicate. Live batches come from the session's
 * shared tail (one store read per batch for all its subscribers in this process).
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
  try {
    for await (const frame of sessionStreamsOf(store, metrics).follow(input.sessionId, Number(input.lastEventId ?? 0), ac.signal)) {
      yield frame.events;
    }
  } finally {
    signal?.removeEventListener('abort', abort);
    ac.abort();
  }
}
