import { get, type IncomingMessage } from 'node:http';
import { followSession, type FollowOptions, type MgxClient, type SessionEvent } from '@mgx/client';

// Driving sessions through the real client. Bounded waits where a test must not hang: a stuck
// session fails the test instead of the run.

/** A prompt for the `script` framework: its steps, in order. */
export const script = (...steps: unknown[]) => JSON.stringify({ steps });

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A session's events through the real tRPC subscription until FINISH, or until `signal` aborts. */
async function read(client: MgxClient, sessionId: string, opts: FollowOptions): Promise<SessionEvent[]> {
  const events: SessionEvent[] = [];
  for await (const ev of followSession(client, sessionId, opts)) events.push(ev);
  return events;
}

/** Every event of a session through the real tRPC subscription, until FINISH. */
export function collect(client: MgxClient, sessionId: string, lastEventId?: number): Promise<SessionEvent[]> {
  return read(client, sessionId, lastEventId !== undefined ? { lastEventId } : {});
}

/** A session's events through the real subscription until FINISH, or what arrived when `ms` ran out. */
export async function follow(client: MgxClient, sessionId: string, ms: number): Promise<SessionEvent[]> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), ms);
  try {
    return await read(client, sessionId, { signal: ac.signal });
  } finally {
    clearTimeout(timer);
  }
}

/** Every stored event of a session, paged through sessions.events. */
export async function storedEvents(client: MgxClient, sessionId: string): Promise<SessionEvent[]> {
  const all: SessionEvent[] = [];
  for (let after = 0; ;) {
    const page = await client.sessions.events.query({ sessionId, afterSeq: after, limit: 1000 });
    all.push(...page.events);
    if (page.events.length < 1000) return all;
    after = page.lastSeq;
  }
}

/** The URL of a session's server-sent event stream on the server at `baseUrl`. */
export const streamUrl = (baseUrl: string, sessionId: string) =>
  `${baseUrl}/trpc/sessions.stream?input=${encodeURIComponent(JSON.stringify({ sessionId }))}`;

/** `n` subscribers to a session's stream that connect and then never read (their responses paused). */
export function pausedReaders(baseUrl: string, sessionId: string, n: number): Promise<IncomingMessage[]> {
  return Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<IncomingMessage>((resolve, reject) => {
          get(streamUrl(baseUrl, sessionId), (res) => {
            res.pause();
            resolve(res);
          }).on('error', reject);
        }),
    ),
  );
}

/** The tRPC error code of a call, or 'OK'. */
export const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => 'OK',
    (err: Error & { data?: { code?: string } }) => err.data?.code ?? err.message,
  );

/** `p`, or a rejection after `ms`: for calls that must not hang. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms))),
  ]).finally(() => clearTimeout(timer));
}
