import { isAgentEventType, type EventType } from '@mgx/agent-sdk';
import type { EventMessage } from './protocol.js';

/**
 * An event as it arrives from a runner, bound to the session its socket belongs to; or one the
 * platform writes in its stream (rid 0: a refusal, a model call), which may be a platform type.
 */
export interface IngestedEvent {
  rid: number;
  type: EventType;
  ts: number;
  data: Record<string, unknown>;
}

/**
 * The ERROR event stored in place of a refused event: refused, never silently dropped.
 * Without a runner id (`rid` undefined) it is stored as a platform event (rid 0).
 */
export function rejectedEvent(rid: number | undefined, reason: string, now: number = Date.now()): IngestedEvent {
  return { rid: rid ?? 0, type: 'ERROR', ts: now, data: { code: 'EVENT_REJECTED', message: reason, source: 'platform' } };
}

/** The LOG event stored when a session first goes over its rate limit. */
export function throttledEvent(eventsPerSecond: number, now: number = Date.now()): IngestedEvent {
  return {
    rid: 0,
    type: 'LOG',
    ts: now,
    data: {
      stream: 'agent',
      level: 'warn',
      source: 'platform',
      text: `the agent emits more than ${eventsPerSecond} events/s; ingest is slowing it down (nothing is dropped)`,
    },
  };
}

/**
 * Reads one line a runner sent: the event it carries, or the refusal stored in its place
 * (too large, not JSON, not an `ev` message with a positive integer rid, not an agent event
 * type, no data object). A line over `maxEventBytes` is judged by its size before parsing.
 */
export function parseEventLine(line: string, maxEventBytes: number, now: () => number = Date.now): IngestedEvent {
  // a UTF-16 unit is at most 3 bytes of UTF-8: most lines are judged without counting
  const bytes = line.length * 3 <= maxEventBytes ? line.length : Buffer.byteLength(line);
  if (bytes > maxEventBytes) {
    // rid and type read from the line's head when present
    const head = line.slice(0, 200);
    const rid = Number(/"rid":(\d{1,15})/.exec(head)?.[1] ?? 0) || undefined;
    const type = /"type":"([A-Z_]{1,32})"/.exec(head)?.[1] ?? 'event line';
    return rejectedEvent(
      rid,
      `${type === 'event line' ? 'an event line' : `a ${type} event`} of ${bytes} bytes exceeds the limit of ${maxEventBytes} bytes`,
      now(),
    );
  }
  let msg: Partial<EventMessage>;
  try {
    msg = JSON.parse(line) as Partial<EventMessage>;
  } catch {
    return rejectedEvent(undefined, 'an event line was not valid JSON', now());
  }
  const rid = typeof msg.rid === 'number' && Number.isSafeInteger(msg.rid) && msg.rid > 0 ? msg.rid : undefined;
  if (msg.t !== 'ev' || rid === undefined) return rejectedEvent(undefined, 'an event lacked t:"ev" or a positive integer rid', now());
  if (typeof msg.type !== 'string' || !isAgentEventType(msg.type)) {
    return rejectedEvent(rid, `event type ${JSON.stringify(msg.type)} is not an agent event type`, now());
  }
  if (typeof msg.data !== 'object' || msg.data === null || Array.isArray(msg.data)) {
    return rejectedEvent(rid, `a ${msg.type} event had no data object`, now());
  }
  const ts = typeof msg.ts === 'number' && Number.isFinite(msg.ts) ? msg.ts : now();
  return { rid, type: msg.type, ts, data: msg.data };
}
