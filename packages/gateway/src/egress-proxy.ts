import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import { domainMatches, silentLogger, type Logger } from '@mgx/config';
import type { Metrics } from '@mgx/metrics';
import type { PlatformEvent } from './model-gateway.js';

export interface EgressSession {
  id: string;
  /** Host names and `*.domain` patterns the session may reach. */
  allow: string[];
}

export interface EgressProxyOptions {
  metrics: Metrics;
  logger?: Logger;
  /** Stores events in the session's stream (ingest's `record`); false once it has ended. */
  record(sessionId: string, events: PlatformEvent[]): Promise<boolean>;
  /** How long a connection to an allowed host may take to open. */
  connectTimeoutMs?: number;
}

/** A short text answer with its length, so a client reads it whole without chunking. */
function plainAnswer(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** `host:port` of a CONNECT target; IPv6 in brackets. */
function target(authority: string): { host: string; port: number } | undefined {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]/\s]+):(\d{1,5})$/.exec(authority);
  if (!m?.[1] || !m[2]) return undefined;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return undefined;
  return { host: m[1].replace(/^\[|\]$/g, '').toLowerCase(), port };
}

/**
 * The egress proxy: an HTTP proxy on each session's proxy.sock that opens connections (CONNECT,
 * or a plain `http://` request) only to hosts on the session's allow-list. Everything else is
 * refused with 403 and recorded as EGRESS_DENIED. The container itself has no network; the
 * worker makes the connection.
 */
export class EgressProxy {
  readonly #o: EgressProxyOptions & { logger: Logger; connectTimeoutMs: number };
  readonly #sessions = new Map<string, EgressSession>();
  readonly #bySocket = new WeakMap<Socket, string>();
  readonly #http: Server;

  constructor(options: EgressProxyOptions) {
    this.#o = { logger: silentLogger, connectTimeoutMs: 10_000, ...options };
    this.#http = createServer((req, res) => this.#forward(req, res));
    this.#http.on('connect', (req: IncomingMessage, socket: Socket, head: Buffer) => this.#connect(req, socket, head));
    this.#http.on('clientError', (_err, socket) => socket.destroy());
  }

  admit(session: EgressSession): void {
    if (session.allow.length > 0) this.#sessions.set(session.id, session);
  }

  forget(sessionId: string): void {
    this.#sessions.delete(sessionId);
  }

  /** Whether a session gets proxy.sock: it has an allow-list. */
  offers(task: { sessionId: string }): boolean {
    return this.#sessions.has(task.sessionId);
  }

  accept(sessionId: string, socket: Socket): void {
    this.#bySocket.set(socket, sessionId);
    this.#http.emit('connection', socket);
  }

  close(): void {
    this.#http.closeAllConnections();
    this.#http.close();
  }

  /** The session a request came from, if it may reach `host`; records a refusal otherwise. */
  #allowed(socket: Socket, host: string, port: number, method: string): boolean {
    const sessionId = this.#bySocket.get(socket);
    const session = sessionId !== undefined ? this.#sessions.get(sessionId) : undefined;
    if (session?.allow.some((pattern) => domainMatches(pattern, host))) return true;
    this.#o.metrics.egressConnections.inc({ outcome: 'denied' });
    if (session) {
      void this.#o
        .record(session.id, [{ rid: 0, type: 'EGRESS_DENIED', ts: Date.now(), data: { host: host.slice(0, 253), port, method } }])
        .catch((err: unknown) => this.#o.logger.error({ err, sessionId: session.id }, 'recording a refused connection failed'));
    }
    return false;
  }

  #connect(req: IncomingMessage, client: Socket, head: Buffer): void {
    const to = target(req.url ?? '');
    client.on('error', () => client.destroy());
    if (!to) return void client.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n');
    // the proxy's own socket is the one the session's connection arrived on
    if (!this.#allowed(req.socket, to.host, to.port, 'CONNECT')) {
      const body = `${to.host} is not on this session's egress allow-list\n`;
      return void client.end(
        `HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      );
    }
    const upstream = connect({ host: to.host, port: to.port, timeout: this.#o.connectTimeoutMs });
    upstream.once('connect', () => {
      upstream.setTimeout(0);
      this.#o.metrics.egressConnections.inc({ outcome: 'allowed' });
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    const fail = (why: string) => {
      this.#o.metrics.egressConnections.inc({ outcome: 'failed' });
      const body = `cannot reach ${to.host}:${to.port}: ${why}\n`;
      if (!client.destroyed)
        client.end(`HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
      upstream.destroy();
    };
    upstream.once('timeout', () => fail('timed out'));
    upstream.once('error', (err: NodeJS.ErrnoException) => {
      if (upstream.readyState === 'opening' || !client.writable) fail(err.code ?? err.message);
      client.destroy();
    });
    client.once('close', () => upstream.destroy());
    upstream.once('close', () => client.destroy());
  }

  /** A plain-HTTP request through the proxy (absolute-form URL), for clients that use HTTP_PROXY for http://. */
  #forward(req: IncomingMessage, res: ServerResponse): void {
    let url: URL;
    try {
      url = new URL(req.url ?? '');
    } catch {
      return plainAnswer(res, 400, 'a proxy request needs an absolute http:// URL\n');
    }
    if (url.protocol !== 'http:') return plainAnswer(res, 400, 'only http:// URLs are forwarded; use CONNECT for https\n');
    const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
    const port = Number(url.port || 80);
    if (!this.#allowed(req.socket, host, port, req.method ?? 'GET')) {
      return plainAnswer(res, 403, `${host} is not on this session's egress allow-list\n`);
    }
    const headers = { ...req.headers };
    delete headers['proxy-connection'];
    delete headers['proxy-authorization'];
    const upstream = request({ host, port, method: req.method, path: `${url.pathname}${url.search}`, headers }, (answer) => {
      this.#o.metrics.egressConnections.inc({ outcome: 'allowed' });
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.setTimeout(this.#o.connectTimeoutMs, () => upstream.destroy(new Error('timed out')));
    upstream.on('error', (err) => {
      this.#o.metrics.egressConnections.inc({ outcome: 'failed' });
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`cannot reach ${host}:${port}: ${err.message}\n`);
    });
    req.pipe(upstream);
  }
}
