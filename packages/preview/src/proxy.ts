import { request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { silentLogger, type Logger } from '@mgx/config';
import type { CounterPort, GaugePort } from '@mgx/metrics';
import { httpStatusOf, PreviewError, PreviewErrorCode } from './errors.js';
import type { PreviewTarget } from './target.js';

/** The port: a byte stream to 127.0.0.1:<port> inside a session's container. */
export interface PreviewDialer {
  /** Rejects when the session has no live tunnel here or nothing listens on the port. The stream may come paused. */
  dial(sessionId: string, port: number): Promise<Duplex>;
}

export interface PreviewLimits {
  /** The ports a preview may reach (MGX_PREVIEW_PORTS). */
  minPort: number;
  maxPort: number;
  /** Open connections (requests in flight and WebSockets) per session. */
  maxConnections: number;
  /** Bytes in both directions per session; past it its connections close and new ones are refused. */
  maxBytes: number;
}

export interface PreviewMetrics {
  previewConnections: GaugePort;
  previewConnectionsTotal: CounterPort<'result'>;
  previewBytes: CounterPort<'direction'>;
}

/** Headers that belong to one hop, never forwarded (RFC 9110 7.6.1), and the caller's credentials. */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** The request headers the app gets: no hop-by-hop ones, no mgx credentials, its own loopback host. */
export function upstreamHeaders(req: IncomingMessage, target: PreviewTarget, cookieName: string, keepUpgrade: boolean): [string, string][] {
  const out: [string, string][] = [];
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] ?? '';
    let value = raw[i + 1] ?? '';
    const lower = name.toLowerCase();
    if (lower === 'authorization' || lower === 'host') continue;
    if (HOP_BY_HOP.has(lower) && !(keepUpgrade && (lower === 'connection' || lower === 'upgrade'))) continue;
    if (lower === 'cookie') {
      value = value
        .split(';')
        .filter((c) => c.trim().split('=')[0] !== cookieName)
        .join(';')
        .trim();
      if (!value) continue;
    }
    out.push([name, value]);
  }
  // dev servers check Host against localhost; the address the browser used goes in X-Forwarded-*
  out.push(['Host', `localhost:${target.port}`]);
  if (req.headers.host) out.push(['X-Forwarded-Host', req.headers.host]);
  out.push(['X-Forwarded-Proto', (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http']);
  if (target.base) out.push(['X-Forwarded-Prefix', target.base]);
  return out;
}

/** Response headers without hop-by-hop ones, as a flat [name, value, …] list. */
function downstreamHeaders(raw: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (!HOP_BY_HOP.has((raw[i] ?? '').toLowerCase())) out.push(raw[i] ?? '', raw[i + 1] ?? '');
  }
  return out;
}

/**
 * Carries one HTTP request over `stream` (an HTTP/1.1 connection to the app) and its answer
 * back. Resolves when the response has ended or either side went away.
 */
export function forwardHttp(
  req: IncomingMessage,
  res: ServerResponse,
  stream: Duplex,
  path: string,
  headers: [string, string][],
): Promise<void> {
  return new Promise<void>((resolve) => {
    const flat: OutgoingHttpHeaders = {};
    for (const [name, value] of headers) {
      const prev = flat[name];
      flat[name] = prev === undefined ? value : [...(Array.isArray(prev) ? prev : [String(prev)]), value];
    }
    flat.connection = 'close';
    const up = httpRequest({ method: req.method, path, headers: flat, createConnection: () => stream });
    // a dialed stream may come paused; the client's parser listens once the socket is assigned
    up.once('socket', () => stream.resume());
    const done = () => {
      stream.destroy();
      resolve();
    };
    up.on('response', (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.statusMessage, downstreamHeaders(answer.rawHeaders));
      answer.pipe(res);
      answer.on('error', () => res.destroy());
      res.on('close', done);
    });
    up.on('error', (err) => {
      if (!res.headersSent) {
        res.writeHead(502, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: 'PREVIEW_UNREACHABLE', message: `the app did not answer: ${err.message}` }));
      } else res.destroy();
      done();
    });
    req.on('close', () => {
      if (!req.complete) up.destroy();
    });
    req.pipe(up);
  });
}

/**
 * Carries an upgrade (a WebSocket) over `stream`: the request head goes as it came (with
 * `headers`), then bytes flow both ways untouched until either side closes.
 */
export function forwardUpgrade(
  req: IncomingMessage,
  client: Duplex,
  head: Buffer,
  stream: Duplex,
  path: string,
  headers: [string, string][],
): void {
  const lines = [`${req.method ?? 'GET'} ${path} HTTP/1.1`, ...headers.map(([n, v]) => `${n}: ${v}`), '', ''];
  stream.write(lines.join('\r\n'));
  if (head.length > 0) stream.write(head);
  stream.pipe(client);
  client.pipe(stream);
  const close = () => {
    stream.destroy();
    client.destroy();
  };
  stream.on('error', close);
  client.on('error', close);
  stream.on('close', close);
  client.on('close', close);
}

/** Answers a refused preview request with the error's status and code. */
export function refuse(res: ServerResponse, err: PreviewError): void {
  if (res.headersSent) return void res.destroy();
  res.writeHead(httpStatusOf(err.code), { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify({ error: err.code, message: err.message }));
}

/** The same for an upgrade request, whose socket has no response object. */
export function refuseUpgrade(socket: Duplex, err: PreviewError): void {
  const body = JSON.stringify({ error: err.code, message: err.message });
  const status = httpStatusOf(err.code);
  socket.end(
    `HTTP/1.1 ${status} ${err.code}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

interface Opened {
  stream: Duplex;
  /** Counts a direction's bytes against the session's allowance (a 'data' listener). */
  meter: (direction: 'in' | 'out') => (chunk: Buffer) => void;
}

interface SessionUse {
  open: Set<Duplex>;
  bytes: number;
}

/**
 * The preview of sessions that run on this worker: each request or WebSocket dials the app's
 * port over the session's tunnel, within the session's connection and byte allowance.
 * Connections are closed when the session ends (`endSession`).
 */
export class PreviewProxy {
  readonly #o: { dialer: PreviewDialer; limits: PreviewLimits; metrics: PreviewMetrics; logger: Logger; cookieName: string };
  readonly #use = new Map<string, SessionUse>();

  constructor(o: { dialer: PreviewDialer; limits: PreviewLimits; metrics: PreviewMetrics; logger?: Logger; cookieName: string }) {
    this.#o = { logger: silentLogger, ...o };
  }

  async request(req: IncomingMessage, res: ServerResponse, target: PreviewTarget): Promise<void> {
    let opened: Opened;
    try {
      opened = await this.#open(target);
    } catch (err) {
      if (err instanceof PreviewError) return refuse(res, err);
      throw err;
    }
    // metered in the same tick as the pipes start: a listener alone would start the flow early
    opened.stream.on('data', opened.meter('out'));
    req.on('data', opened.meter('in'));
    await forwardHttp(req, res, opened.stream, target.path, upstreamHeaders(req, target, this.#o.cookieName, false));
  }

  async upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, target: PreviewTarget): Promise<void> {
    let opened: Opened;
    try {
      opened = await this.#open(target);
    } catch (err) {
      if (err instanceof PreviewError) return refuseUpgrade(socket, err);
      throw err;
    }
    opened.stream.on('data', opened.meter('out'));
    socket.on('data', opened.meter('in'));
    forwardUpgrade(req, socket, head, opened.stream, target.path, upstreamHeaders(req, target, this.#o.cookieName, true));
  }

  /** The session ended: its connections close, and its allowance is forgotten. */
  endSession(sessionId: string): void {
    const use = this.#use.get(sessionId);
    if (!use) return;
    this.#use.delete(sessionId);
    for (const s of use.open) s.destroy();
  }

  closeAll(): void {
    for (const id of [...this.#use.keys()]) this.endSession(id);
  }

  /** Open connections of a session (tests, diagnostics). */
  openConnections(sessionId: string): number {
    return this.#use.get(sessionId)?.open.size ?? 0;
  }

  async #open(target: PreviewTarget): Promise<Opened> {
    const { limits, metrics } = this.#o;
    if (target.port < limits.minPort || target.port > limits.maxPort) {
      metrics.previewConnectionsTotal.inc({ result: 'refused' });
      throw new PreviewError(
        PreviewErrorCode.BAD_TARGET,
        `port ${target.port} is outside the preview ports ${limits.minPort}-${limits.maxPort}`,
      );
    }
    let use = this.#use.get(target.sessionId);
    if (!use) this.#use.set(target.sessionId, (use = { open: new Set(), bytes: 0 }));
    if (use.bytes >= limits.maxBytes) {
      metrics.previewConnectionsTotal.inc({ result: 'limited' });
      throw new PreviewError(PreviewErrorCode.LIMIT, `the session's preview used its ${limits.maxBytes} bytes`);
    }
    if (use.open.size >= limits.maxConnections) {
      metrics.previewConnectionsTotal.inc({ result: 'limited' });
      throw new PreviewError(PreviewErrorCode.LIMIT, `the session has ${limits.maxConnections} preview connections open (the limit)`);
    }
    let stream: Duplex;
    try {
      stream = await this.#o.dialer.dial(target.sessionId, target.port);
    } catch (err) {
      metrics.previewConnectionsTotal.inc({ result: 'unreachable' });
      if (err instanceof PreviewError) throw err;
      throw new PreviewError(
        PreviewErrorCode.UNREACHABLE,
        `nothing answers on port ${target.port} in session ${target.sessionId}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    // the session may have ended while the tunnel was dialed
    if (this.#use.get(target.sessionId) !== use) {
      stream.destroy();
      throw new PreviewError(PreviewErrorCode.NOT_RUNNING, `session ${target.sessionId} has ended`);
    }
    metrics.previewConnectionsTotal.inc({ result: 'opened' });
    metrics.previewConnections.inc();
    use.open.add(stream);
    const count = (direction: 'in' | 'out') => (chunk: Buffer) => {
      metrics.previewBytes.inc({ direction }, chunk.length);
      use.bytes += chunk.length;
      if (use.bytes > limits.maxBytes) {
        this.#o.logger.warn({ sessionId: target.sessionId, bytes: use.bytes }, 'preview byte allowance used up; closing its connections');
        for (const s of use.open) s.destroy();
      }
    };
    stream.once('close', () => {
      use.open.delete(stream);
      metrics.previewConnections.dec();
    });
    return { stream, meter: count };
  }
}
