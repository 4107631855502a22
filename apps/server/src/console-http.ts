import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, join } from 'node:path';

/** Where the console's build lands (apps/console/dist, built by scripts/setup.sh). */
export const CONSOLE_DIST = join(import.meta.dirname, '..', '..', 'console', 'dist');

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.json': 'application/json',
  '.txt': 'text/plain; charset=utf-8',
};

/** Paths the API owns: the console never answers them, not even as a client route. */
const RESERVED = /^\/(trpc|metrics|healthz|workspaces)(\/|$)|^\/sessions\/[^/]+\/preview(\/|$)/;
/** A built file: hashed assets, or a file at the root of the build (favicon). */
const ASSET = /^\/(assets\/)?[A-Za-z0-9_.-]+\.[a-z0-9]+$/;

/**
 * The policy of the console's page: its own scripts and styles only (no inline script, no
 * eval), calls to its own origin, previews framed from its own origin or the preview domain,
 * and nobody may frame the console itself.
 */
export function consolePolicy(previewDomain: string | undefined): string {
  const frames = ["'self'", ...(previewDomain ? [`http://*.${previewDomain}`, `https://*.${previewDomain}`] : [])];
  return [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "font-src 'self'",
    "connect-src 'self'",
    `frame-src ${frames.join(' ')}`,
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join('; ');
}

export interface ConsoleRoutesOptions {
  /** The built console (index.html and assets/). */
  dir: string;
  previewDomain: string | undefined;
}

/**
 * Serves the web console at `/`: hashed assets cacheable for a year, index.html never cached
 * and under a strict Content-Security-Policy, and index.html for any other GET that is not an
 * API path (the console's own routes, as /sessions/<id>). Called after every API route.
 */
export function consoleRoutes({ dir, previewDomain }: ConsoleRoutesOptions) {
  const policy = consolePolicy(previewDomain);
  return async (req: IncomingMessage, res: ServerResponse): Promise<boolean> => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    const [path = '/'] = (req.url ?? '/').split('?');
    if (RESERVED.test(path)) return false;
    if (ASSET.test(path) && !path.includes('..')) {
      const file = join(dir, path);
      const info = await stat(file).catch(() => undefined);
      if (!info?.isFile()) return false;
      res.writeHead(200, {
        'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
        'content-length': info.size,
        'cache-control': path.startsWith('/assets/') ? 'public, max-age=31536000, immutable' : 'no-cache',
        'x-content-type-options': 'nosniff',
      });
      if (req.method === 'HEAD') res.end();
      else createReadStream(file).pipe(res);
      return true;
    }
    // a client route: the page, which routes itself
    let page: Buffer;
    try {
      page = await readFile(join(dir, 'index.html'));
    } catch {
      res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
      res.end(
        `The web console is not built (${dir} has no index.html). Build it with \`npm run setup\` or \`npx nx run console:build\`, or set MGX_CONSOLE=false.\n`,
      );
      return true;
    }
    res.writeHead(200, {
      'content-type': 'text/html; charset=utf-8',
      'content-length': page.length,
      'cache-control': 'no-cache',
      'content-security-policy': policy,
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      'x-frame-options': 'DENY',
    });
    res.end(req.method === 'HEAD' ? undefined : page);
    return true;
  };
}
