import type { IncomingMessage, ServerResponse } from 'node:http';
import { TRPCError } from '@trpc/server';
import { getHTTPStatusCodeFromError, parseConnectionParamsFromString } from '@trpc/server/http';
import { TRPC_ERROR_CODES_BY_KEY } from '@trpc/server/rpc';
import type { ApiContext } from './context.js';
import { toTRPCError } from './errors.js';
import { streamInput } from './routers/session-streams.js';
import { sessionStreamsOf, type Frame, type WireFormat } from './stream-hub.js';
import { sseClientOptions } from './trpc.js';

const PROCEDURES: Record<string, WireFormat> = {
  'sessions.stream': 'events',
  'sessions.streamBatches': 'batches',
};

/** The headers tRPC's SSE responses carry. */
const SSE_HEADERS = {
  'content-type': 'text/event-stream',
  'cache-control': 'no-cache, no-transform',
  'x-accel-buffering': 'no',
  connection: 'keep-alive',
  vary: 'trpc-accept, accept',
};

const PING = Buffer.from('event: ping\ndata: \n\n\n');
const RETURN = Buffer.from('event: return\ndata: \n\n\n');

interface Connection {
  res: ServerResponse;
  lastWrite: number;
}

/**
 * `sessions.stream` and `sessions.streamBatches` over GET, served here instead of by tRPC's SSE
 * producer, which serializes and encodes every message for every connection on its own (and
 * keeps a timer per connection for its pings). Here each stored batch is read once per session
 * (the session's hub) and its SSE bytes made once, then written as they are to every
 * subscriber, with one shared ping timer. The wire is tRPC's: the `connected` event with the
 * client options, `data:`/`id:` messages (ids are seqs, so Last-Event-ID resumes), `ping`,
 * `return` at the end and `serialized-error` on a failure, so tRPC's client reads it unchanged.
 * Anything else (a bad input, no token, another tenant's session, other procedures) is left to
 * tRPC, which answers it as before.
 */
export class SessionSse {
  readonly #connections = new Set<Connection>();
  readonly #pingMs: number;
  readonly #connected: Buffer;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: { ssePingMs: number }) {
    this.#pingMs = options.ssePingMs;
    this.#connected = Buffer.from(`event: connected\ndata: ${JSON.stringify(sseClientOptions(options.ssePingMs))}\n\n\n`);
  }

  /** Open streams (for tests and diagnostics). */
  get open(): number {
    return this.#connections.size;
  }

  /**
   * Serves the request when it is a stream of a session the caller may see; false leaves it to
   * tRPC. `contextOf` is the tRPC context the request would get (`connectionParams` from the URL).
   */
  async serve(
    req: IncomingMessage,
    res: ServerResponse,
    basePath: string,
    contextOf: (connectionParams: Record<string, unknown> | null) => ApiContext,
  ): Promise<boolean> {
    if (req.method !== 'GET' || !req.url) return false;
    const url = new URL(req.url, 'http://localhost');
    const format = url.pathname.startsWith(basePath) ? PROCEDURES[url.pathname.slice(basePath.length)] : undefined;
    if (!format || url.searchParams.has('batch')) return false;
    const parsed = parseInput(url, req.headers['last-event-id']);
    if (!parsed) return false;
    const input = streamInput.safeParse(parsed.input);
    if (!input.success) return false;
    const ctx = contextOf(parsed.connectionParams);
    if (ctx.tenant === null) return false;
    const { store, metrics, logger } = ctx.deps;
    try {
      const s = await store.sessions.getSession(input.data.sessionId);
      if (!s || (s.tenant !== ctx.tenant && !ctx.operator)) return false;
    } catch {
      // tRPC answers the same failure with its code
      return false;
    }

    const conn: Connection = { res, lastWrite: Date.now() };
    const ac = new AbortController();
    res.once('close', () => ac.abort());
    // a Vary set before (CORS: Origin) is kept beside tRPC's
    const vary = res.getHeader('vary');
    res.writeHead(200, vary === undefined ? SSE_HEADERS : { ...SSE_HEADERS, vary: `${String(vary)}, ${SSE_HEADERS.vary}` });
    this.#write(conn, this.#connected);
    this.#add(conn);
    const path = url.pathname.slice(basePath.length);
    try {
      // caught up, the session's hub writes each new frame to this connection itself
      const direct = { deliver: (frame: Frame) => this.#write(conn, frame.wire(format)), drained: () => drained(res, ac.signal) };
      const frames = sessionStreamsOf(store, metrics).follow(input.data.sessionId, Number(input.data.lastEventId ?? 0), ac.signal, direct);
      for await (const frame of frames) {
        if (!this.#write(conn, frame.wire(format))) await drained(res, ac.signal);
        if (ac.signal.aborted) return true;
      }
      if (!ac.signal.aborted) this.#write(conn, RETURN);
    } catch (err) {
      if (ac.signal.aborted) return true;
      const error = toTRPCError(err) ?? new TRPCError({ code: 'INTERNAL_SERVER_ERROR', message: (err as Error).message, cause: err });
      if (error.code === 'INTERNAL_SERVER_ERROR') logger.error({ path, err: error }, 'request failed');
      const shape = {
        message: error.message,
        code: TRPC_ERROR_CODES_BY_KEY[error.code],
        data: { code: error.code, httpStatus: getHTTPStatusCodeFromError(error), path },
      };
      this.#write(conn, Buffer.from(`event: serialized-error\ndata: ${JSON.stringify(shape)}\n\n\n`));
    } finally {
      this.#remove(conn);
      res.end();
    }
    return true;
  }

  /** Stops the ping timer (the streams end with their connections). */
  close(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #write(conn: Connection, bytes: Buffer): boolean {
    conn.lastWrite = Date.now();
    return conn.res.write(bytes);
  }

  #add(conn: Connection): void {
    this.#connections.add(conn);
    if (this.#timer || this.#pingMs <= 0) return;
    // one timer for every stream: a ping to each that has been quiet for half an interval, so
    // none is silent for more than 1.5 intervals (clients reconnect after 2.5)
    this.#timer = setInterval(() => {
      const quiet = Date.now() - this.#pingMs / 2;
      for (const c of this.#connections) {
        // a subscriber that does not read gets no pings piling up behind its data
        if (c.lastWrite <= quiet && !c.res.writableNeedDrain) this.#write(c, PING);
      }
    }, this.#pingMs);
    this.#timer.unref();
  }

  #remove(conn: Connection): void {
    this.#connections.delete(conn);
    if (this.#connections.size === 0) this.close();
  }
}

/** The call's input as tRPC reads it from a GET: `input` (JSON), with the Last-Event-ID merged in; undefined when malformed. */
function parseInput(
  url: URL,
  lastEventIdHeader: string | string[] | undefined,
): { input: unknown; connectionParams: Record<string, unknown> | null } | undefined {
  try {
    const raw = url.searchParams.get('input');
    let input: unknown = raw === null ? undefined : JSON.parse(raw);
    const header = typeof lastEventIdHeader === 'string' ? lastEventIdHeader : undefined;
    const lastEventId = header ?? url.searchParams.get('lastEventId') ?? url.searchParams.get('Last-Event-Id');
    if (lastEventId) {
      if (input !== null && typeof input === 'object' && !Array.isArray(input)) input = { ...input, lastEventId };
      else input ??= { lastEventId };
    }
    const params = url.searchParams.get('connectionParams');
    return { input, connectionParams: params === null ? null : parseConnectionParamsFromString(params) };
  } catch {
    return undefined;
  }
}

/** Resolves when `res` can take more, or its connection closed. */
function drained(res: ServerResponse, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = () => {
      res.off('drain', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    res.once('drain', done);
    signal.addEventListener('abort', done, { once: true });
  });
}
