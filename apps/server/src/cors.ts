import type { IncomingMessage, ServerResponse } from 'node:http';

/** What a page on an allowed origin may send: the bearer token, JSON bodies, a stream's resume point, ranges. */
const ALLOW_HEADERS = 'Authorization, Content-Type, Last-Event-ID, Range, trpc-accept';
const ALLOW_METHODS = 'GET, HEAD, POST, PUT, DELETE, OPTIONS';
/** What the page may read of a file download besides the simple headers. */
const EXPOSE_HEADERS = 'Content-Length, Content-Range, Content-Disposition, Last-Modified';
/** How long a browser may reuse a preflight's answer. */
const MAX_AGE_SECONDS = 600;

/**
 * CORS for the API's routes (tRPC with its streams, the files routes): a page on an origin of
 * MGX_CORS_ORIGINS may call them with its token in the Authorization header; any other origin
 * gets no CORS header at all, so the browser refuses. Tokens travel as headers, never cookies,
 * so credentials mode is not needed. Returns true when it answered the request (a preflight).
 */
export function corsFor(origins: readonly string[]): (req: IncomingMessage, res: ServerResponse) => boolean {
  const allowed = new Set(origins);
  return (req, res) => {
    // the answer depends on Origin: caches must keep one per origin
    res.setHeader('vary', 'Origin');
    const origin = req.headers.origin;
    const ok = origin !== undefined && allowed.has(origin);
    const preflight = req.method === 'OPTIONS' && req.headers['access-control-request-method'] !== undefined;
    if (ok) {
      res.setHeader('access-control-allow-origin', origin);
      res.setHeader('access-control-expose-headers', EXPOSE_HEADERS);
    }
    if (!preflight) return false;
    if (ok) {
      res.writeHead(204, {
        'access-control-allow-methods': ALLOW_METHODS,
        'access-control-allow-headers': ALLOW_HEADERS,
        'access-control-max-age': String(MAX_AGE_SECONDS),
        'content-length': '0',
      });
    } else {
      res.writeHead(403, { 'content-type': 'application/json' });
    }
    res.end(ok ? undefined : JSON.stringify({ error: { code: 'FORBIDDEN', message: 'this origin is not in MGX_CORS_ORIGINS' } }));
    return true;
  };
}
