import { createTRPCClient, httpBatchLink, httpSubscriptionLink, splitLink, type TRPCClient } from '@trpc/client';
import { EventSource } from 'eventsource';
import type { AppRouter } from '@mgx/api';
import type { SessionEvent } from '@mgx/agent-sdk';

export interface MgxClientOptions {
  /** Base URL of the server, e.g. http://127.0.0.1:8080 (the API is under /trpc). */
  url: string;
  /** Bearer token; optional when the server runs single-tenant on loopback. */
  token?: string | undefined;
}

export type MgxClient = TRPCClient<AppRouter>;

/**
 * The typed client for front ends and scripts: queries and mutations over batched HTTP,
 * subscriptions over SSE (with the `eventsource` polyfill, which Node 20 needs and which
 * can send the Authorization header). The stream resumes from the last event id on its own.
 * The same code runs in a browser bundle (apps/console): the polyfill streams over fetch there
 * too, so the token goes in a header, never in the URL as the browser's own EventSource needs.
 */
export function createMgxClient(options: MgxClientOptions): MgxClient {
  const base = `${options.url.replace(/\/+$/, '')}/trpc`;
  const auth: Record<string, string> = options.token ? { authorization: `Bearer ${options.token}` } : {};
  return createTRPCClient<AppRouter>({
    links: [
      splitLink({
        condition: (op) => op.type === 'subscription',
        true: httpSubscriptionLink({
          url: base,
          EventSource,
          eventSourceOptions: () => ({
            fetch: (url, init) => fetch(url, { ...init, headers: { ...init.headers, ...auth } }),
          }),
        }),
        false: httpBatchLink({ url: base, headers: () => auth }),
      }),
    ],
  });
}

export interface FollowOptions {
  /** Resume after this seq (the last event id seen). */
  lastEventId?: number;
  signal?: AbortSignal;
  /** Connection state changes, for status lines ('connecting', 'pending', 'idle'). */
  onState?: (state: string, error?: Error) => void;
}

/**
 * A session's events as an async iterable: the backlog, then live events, ending after
 * FINISH. Reconnects resume from the last event received, so nothing repeats or goes missing.
 */
export function followSession(client: MgxClient, sessionId: string, options: FollowOptions = {}): AsyncIterable<SessionEvent> {
  return {
    [Symbol.asyncIterator]() {
      const queue: SessionEvent[] = [];
      let done = false;
      let failure: Error | undefined;
      let wake: (() => void) | undefined;
      const notify = () => {
        wake?.();
        wake = undefined;
      };
      // batched: a busy session costs one SSE message per stored batch, not per event
      const sub = client.sessions.streamBatches.subscribe(
        { sessionId, ...(options.lastEventId !== undefined ? { lastEventId: String(options.lastEventId) } : {}) },
        {
          onData: (msg) => {
            queue.push(...(msg.data as SessionEvent[]));
            notify();
          },
          onError: (err) => {
            failure = err;
            done = true;
            notify();
          },
          onComplete: () => {
            done = true;
            notify();
          },
          onConnectionStateChange: (s) => options.onState?.(s.state, s.error ?? undefined),
        },
      );
      const stop = () => {
        done = true;
        sub.unsubscribe();
        notify();
      };
      options.signal?.addEventListener('abort', stop, { once: true });
      return {
        async next(): Promise<IteratorResult<SessionEvent>> {
          for (;;) {
            const ev = queue.shift();
            if (ev) {
              if (ev.type === 'FINISH') stop();
              return { value: ev, done: false };
            }
            if (failure) {
              const err = failure;
              failure = undefined;
              throw err;
            }
            if (done) return { value: undefined, done: true };
            await new Promise<void>((r) => (wake = r));
          }
        },
        async return(): Promise<IteratorResult<SessionEvent>> {
          stop();
          return { value: undefined, done: true };
        },
      };
    },
  };
}
