import { randomBytes } from 'node:crypto';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { noopMetrics } from '@mgx/metrics';
import { PreviewError, PreviewProxy, PreviewSigner, previewTargetOf, takeToken, type PreviewTarget } from '../src/index.js';

describe('PreviewSigner', () => {
  const signer = new PreviewSigner(randomBytes(32));
  const now = Date.now();

  it('accepts its own token for the same session and port until it expires', () => {
    const token = signer.sign('s1', 3000, now + 60_000);
    expect(signer.verify(token, 's1', 3000, now)).toBe('ok');
    expect(signer.verify(token, 's1', 3000, now + 61_000)).toBe('expired');
  });

  it('refuses a token for another session, another port, another key, or altered', () => {
    const token = signer.sign('s1', 3000, now + 60_000);
    expect(signer.verify(token, 's2', 3000, now)).toBe('invalid');
    expect(signer.verify(token, 's1', 3001, now)).toBe('invalid');
    expect(new PreviewSigner(randomBytes(32)).verify(token, 's1', 3000, now)).toBe('invalid');
    // a later expiry with the old signature
    const [, mac] = token.split('.');
    expect(signer.verify(`${Math.floor((now + 9e9) / 1000).toString(36)}.${mac}`, 's1', 3000, now)).toBe('invalid');
    expect(signer.verify('', 's1', 3000, now)).toBe('invalid');
    expect(signer.verify('zz.zz', 's1', 3000, now)).toBe('invalid');
  });

  it('needs a key of 32 bytes or more', () => {
    expect(() => new PreviewSigner(Buffer.alloc(16))).toThrow(/32 bytes/);
  });
});

describe('previewTargetOf', () => {
  it('reads the path form and keeps the rest of the path and the query for the app', () => {
    expect(previewTargetOf('/sessions/sabc/preview/3000/app/x.js?v=1', 'h', undefined)).toEqual({
      sessionId: 'sabc',
      port: 3000,
      path: '/app/x.js?v=1',
      base: '/sessions/sabc/preview/3000',
    });
    expect(previewTargetOf('/sessions/sabc/preview/5173', 'h', undefined)?.path).toBe('/');
    expect(previewTargetOf('/sessions/sabc/preview/5173?x=1', 'h', undefined)?.path).toBe('/?x=1');
  });

  it('is null for other paths', () => {
    expect(previewTargetOf('/trpc/sessions.get', 'h', undefined)).toBeNull();
    expect(previewTargetOf('/sessions/sabc/previewx/1', 'h', undefined)).toBeNull();
  });

  it('refuses a bad session id or port by name', () => {
    const bad = (url: string) => () => previewTargetOf(url, 'h', undefined);
    expect(bad('/sessions/..%2f/preview/3000/')).toThrow(PreviewError);
    expect(bad('/sessions/a.b/preview/3000/')).toThrow(/session id/);
    expect(bad('/sessions/sabc/preview/0/')).toThrow(/port/);
    expect(bad('/sessions/sabc/preview/65536/')).toThrow(/port/);
    expect(bad('/sessions/sabc/preview/30a/')).toThrow(/port/);
  });

  it('reads the host-name form when a preview domain is set', () => {
    expect(previewTargetOf('/index.html', '5173-sabc.preview.test:8080', 'preview.test')).toEqual({
      sessionId: 'sabc',
      port: 5173,
      path: '/index.html',
      base: '',
    });
    // another host falls back to the path form
    expect(previewTargetOf('/index.html', 'api.test', 'preview.test')).toBeNull();
    expect(() => previewTargetOf('/', 'x-sabc.preview.test', 'preview.test')).toThrow(/<port>-<session>/);
  });

  it('takes a signed link token out of the URL the app sees', () => {
    expect(takeToken('/a?mgx_preview_token=t1&b=2')).toEqual({ token: 't1', path: '/a?b=2' });
    expect(takeToken('/a?mgx_preview_token=t1')).toEqual({ token: 't1', path: '/a' });
    expect(takeToken('/a?b=2')).toEqual({ token: undefined, path: '/a?b=2' });
  });
});

describe('PreviewProxy over a real HTTP server (the dialer connects to it on loopback)', () => {
  let app: Server;
  let front: Server;
  let appPort = 0;
  let frontUrl = '';
  const seen: IncomingMessage[] = [];
  let proxy: PreviewProxy;

  beforeAll(async () => {
    app = createServer((req, res) => {
      seen.push(req);
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'text/plain', 'x-app': 'yes' });
        res.end(`${req.method} ${req.url} ${body}`);
      });
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    appPort = (app.address() as AddressInfo).port;
    proxy = new PreviewProxy({
      dialer: {
        dial: (_id, port) =>
          new Promise((resolve, reject) => {
            const s = connect(port === 1 ? 9 : appPort, '127.0.0.1');
            // paused, as the session tunnel hands its streams over
            s.once('connect', () => resolve(s.pause()));
            s.once('error', reject);
          }),
      },
      limits: { minPort: 1, maxPort: 9000, maxConnections: 2, maxBytes: 2000 },
      metrics: noopMetrics,
      cookieName: 'mgx_preview',
    });
    front = createServer((req, res) => {
      const target = previewTargetOf(req.url ?? '/', req.headers.host, undefined) as PreviewTarget;
      void proxy.request(req, res, target);
    });
    await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
    frontUrl = `http://127.0.0.1:${(front.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    proxy.closeAll();
    await new Promise((r) => front.close(r));
    await new Promise((r) => app.close(r));
  });

  const send = (path: string, init: RequestInit = {}) => fetch(`${frontUrl}${path}`, init);

  it("forwards method, path, query and body, and strips the caller's credentials", async () => {
    const res = await send('/sessions/s1/preview/3000/api/x?q=1', {
      method: 'POST',
      body: 'hello',
      headers: { authorization: 'Bearer secret-token', cookie: 'mgx_preview=tok; theme=dark' },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-app')).toBe('yes');
    expect(await res.text()).toBe('POST /api/x?q=1 hello');
    const req = seen.at(-1) as IncomingMessage;
    expect(req.headers.authorization).toBeUndefined();
    expect(req.headers.cookie).toBe('theme=dark');
    expect(req.headers.host).toBe('localhost:3000');
    expect(req.headers['x-forwarded-prefix']).toBe('/sessions/s1/preview/3000');
  });

  it('answers 502 when nothing listens, and 400 outside the port range', async () => {
    const down = await send('/sessions/s2/preview/1/');
    expect(down.status).toBe(502);
    expect(((await down.json()) as { error: string }).error).toBe('PREVIEW_UNREACHABLE');
    const out = await send('/sessions/s2/preview/9001/');
    expect(out.status).toBe(400);
    expect(((await out.json()) as { message: string }).message).toMatch(/outside the preview ports 1-9000/);
  });

  it('refuses a session past its byte allowance, and forgets it when the session ends', async () => {
    const big = 'x'.repeat(1500);
    expect((await send('/sessions/s3/preview/3000/', { method: 'POST', body: big })).status).toBe(200);
    const over = await send('/sessions/s3/preview/3000/', { method: 'POST', body: big });
    // the second request may be cut mid-way or refused: either way the allowance holds
    if (over.status === 200) await over.text().catch(() => '');
    const after = await send('/sessions/s3/preview/3000/');
    expect(after.status).toBe(429);
    proxy.endSession('s3');
    expect((await send('/sessions/s3/preview/3000/')).status).toBe(200);
  });

  it('holds a session to its connection limit while requests are in flight', async () => {
    // two requests whose bodies never end keep two connections open
    const hold = () =>
      new Promise<void>((resolve) => {
        const r = request(`${frontUrl}/sessions/s4/preview/3000/`, { method: 'POST', headers: { 'content-length': '10' } });
        r.on('error', () => undefined);
        r.write('12345');
        setImmediate(resolve);
        holds.push(r);
      });
    const holds: ReturnType<typeof request>[] = [];
    await hold();
    await hold();
    await expect.poll(() => proxy.openConnections('s4')).toBe(2);
    const res = await send('/sessions/s4/preview/3000/');
    expect(res.status).toBe(429);
    proxy.endSession('s4');
    for (const r of holds) r.destroy();
    expect(proxy.openConnections('s4')).toBe(0);
  });
});
