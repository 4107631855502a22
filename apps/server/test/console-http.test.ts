import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadSettings, silentLogger } from '@mgx/config';
import { consoleRoutes } from '../src/console-http.js';
import { corsFor } from '../src/cors.js';
import { startServer } from '../src/server.js';

// The console's routes and CORS on a plain HTTP server, and the server's switches: no console
// with MGX_CONSOLE=false, a clear answer when the console is not built.

const dirs: string[] = [];
const servers: Server[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'mgx-console-'));
  dirs.push(d);
  return d;
};

async function serve(handler: (req: IncomingMessage, res: ServerResponse) => Promise<void>) {
  const server = createServer((req, res) => void handler(req, res));
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

afterAll(() => {
  for (const s of servers) s.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('console routes', () => {
  let base: string;
  beforeAll(async () => {
    const dist = tmp();
    mkdirSync(join(dist, 'assets'));
    writeFileSync(join(dist, 'index.html'), '<!doctype html><script type="module" src="/assets/app-1.js"></script>');
    writeFileSync(join(dist, 'assets', 'app-1.js'), 'console.log(1)');
    writeFileSync(join(dist, 'favicon.svg'), '<svg/>');
    const routes = consoleRoutes({ dir: dist, previewDomain: 'preview.test' });
    base = await serve(async (req, res) => {
      if (await routes(req, res)) return;
      res.writeHead(404, { 'x-api': 'yes' });
      res.end();
    });
  });

  it('serves the page under its policy, assets cacheable, client routes as the page, and leaves API paths alone', async () => {
    const page = await fetch(`${base}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('cache-control')).toBe('no-cache');
    expect(page.headers.get('content-security-policy')).toContain("frame-src 'self' http://*.preview.test https://*.preview.test");
    const asset = await fetch(`${base}/assets/app-1.js`);
    expect(asset.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    expect(await asset.text()).toBe('console.log(1)');
    expect((await fetch(`${base}/favicon.svg`)).headers.get('content-type')).toBe('image/svg+xml');
    expect(await (await fetch(`${base}/sessions/s1`)).text()).toContain('/assets/app-1.js');
    for (const path of ['/trpc/x', '/metrics', '/healthz', '/workspaces/w/files/a', '/sessions/s1/preview/3000/', '/assets/nope.js'])
      expect((await fetch(`${base}${path}`)).headers.get('x-api'), path).toBe('yes');
    expect((await fetch(`${base}/`, { method: 'POST' })).headers.get('x-api')).toBe('yes');
    // nothing outside the build is served: an encoded way out is at most a client route
    for (const path of ['/assets/..%2F..%2Fpackage.json', '/..%2Fpackage.json'])
      expect(await (await fetch(`${base}${path}`)).text(), path).not.toContain('"name"');
  });

  it('answers a preflight from an allowed origin only, and echoes only that origin', async () => {
    const cors = corsFor(['http://app.test']);
    const url = await serve(async (req, res) => {
      if (cors(req, res)) return;
      res.end('ok');
    });
    const pre = (origin: string) =>
      fetch(url, {
        method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization' },
      });
    const ok = await pre('http://app.test');
    expect(ok.status).toBe(204);
    expect(ok.headers.get('access-control-allow-origin')).toBe('http://app.test');
    expect(ok.headers.get('access-control-allow-headers')).toContain('Authorization');
    const no = await pre('http://evil.test');
    expect(no.status).toBe(403);
    expect(no.headers.get('access-control-allow-origin')).toBeNull();
    const get = await fetch(url, { headers: { origin: 'http://evil.test' } });
    expect(get.headers.get('access-control-allow-origin')).toBeNull();
    expect(get.headers.get('vary')).toBe('Origin');
  });
});

describe('the server with and without a console', () => {
  const start = async (env: Record<string, string>, consoleDir: string) => {
    const settings = loadSettings({ MGX_DATA_DIR: tmp(), MGX_PORT: '0', MGX_ROLE: 'api', MGX_OWNER: 'mgx-console-unit', ...env });
    return startServer(settings, { logger: silentLogger, runtime: null, frameworks: [], consoleDir });
  };

  it('says how to build the console when it is missing, and serves none with MGX_CONSOLE=false', async () => {
    const missing = join(tmp(), 'no-dist');
    const on = await start({}, missing);
    try {
      const res = await fetch(`${on.url}/`);
      expect(res.status).toBe(503);
      expect(await res.text()).toMatch(/web console is not built.*npm run setup/);
    } finally {
      await on.close();
    }
    const off = await start({ MGX_CONSOLE: 'false' }, missing);
    try {
      const res = await fetch(`${off.url}/`);
      expect(res.status).toBe(404);
      expect(await res.json()).toEqual({ error: 'not found' });
    } finally {
      await off.close();
    }
  });
});
