import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { connect, createServer as createTcpServer, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import puppeteer, { type Browser, type HTTPRequest, type Page } from 'puppeteer-core';
import { createMgxClient, type MgxClient } from '@mgx/client';
import { startPlatform, type Platform } from '../support/platform.js';
import { collect, script, storedEvents } from '../support/sessions.js';

// The web console (apps/console) end to end: the built app served by a real server, driven in
// a real headless Chromium against real sessions on Podman. Screenshots of each page go to
// test-results/console-*.png; MGX_WRITE_DOCS=1 also copies them to docs/console/ for the README.

const ROOT = join(import.meta.dirname, '..', '..');
const CHROMIUM = process.env.MGX_TEST_CHROMIUM ?? '/usr/bin/chromium';
const ARTIFACTS = join(ROOT, 'test-results');
const DOCS = join(ROOT, 'docs', 'console');
const DIST = join(ROOT, 'apps', 'console', 'dist');
const TOKEN = 'acme-console-token-0123456789';
const OPERATOR = 'ops-console-token-0123456789';

let p: Platform;
let acme: MgxClient;
let browser: Browser;
let allowedSite: Site;
let refusedSite: Site;

interface Site {
  server: Server;
  origin: string;
}

/** A page on another origin (http://localhost:<port>, while the API is at http://127.0.0.1:<port>). */
async function site(): Promise<Site> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>another origin</title><h1>a page on another origin</h1>');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, origin: `http://localhost:${(server.address() as AddressInfo).port}` };
}

/**
 * A TCP relay to the API whose connections can be cut: every open one is destroyed and new ones
 * are dropped until it is restored, as a network loss does to the browser's streams.
 */
async function relay(port: number) {
  const open = new Set<Socket>();
  let down = false;
  const server = createTcpServer((client) => {
    if (down) return client.destroy();
    const upstream = connect(port, '127.0.0.1');
    for (const [a, b] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      open.add(a);
      a.pipe(b);
      a.on('error', () => b.destroy());
      a.on('close', () => {
        open.delete(a);
        b.destroy();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    cut() {
      down = true;
      for (const s of open) s.destroy();
    },
    restore() {
      down = false;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const file = join(ARTIFACTS, `console-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  if (process.env.MGX_WRITE_DOCS === '1') {
    mkdirSync(DOCS, { recursive: true });
    copyFileSync(file, join(DOCS, `${name}.png`));
  }
}

/** A new tab signed in through the sign-in form (of the console at `base`). */
async function signedIn(token = TOKEN, base = p.server.url): Promise<Page> {
  const page = await browser.newPage();
  await page.setViewport({ width: 1200, height: 800 });
  await page.goto(`${base}/`);
  await page.waitForSelector('input[name=token]');
  await page.type('input[name=token]', token);
  await page.click('form button[type=submit]');
  await page.waitForSelector('table.sessions');
  return page;
}

/** Opens a session's page on a tab of the console (a client route, as a link would). */
async function openSession(page: Page, sessionId: string, tab?: string, base = p.server.url): Promise<void> {
  await page.goto(`${base}/sessions/${sessionId}`);
  await page.waitForSelector(`[data-session="${sessionId}"] [data-status]`);
  if (tab) await page.click(`[data-tab="${tab}"]`);
}

/** The session page's status badge comes from sessions.get, refreshed on lifecycle events: wait for it. */
const waitForStatus = (page: Page, status: string, timeout = 60_000) =>
  page.waitForFunction(
    (want) => document.querySelector('.session [data-status]')?.getAttribute('data-status') === want,
    { timeout },
    status,
  );
const shownSeqs = (page: Page) => page.$$eval('table.events tr[data-seq]', (rows) => rows.map((r) => Number(r.getAttribute('data-seq'))));

describe('web console', { timeout: 180_000 }, () => {
  beforeAll(async () => {
    execFileSync('bash', [join(ROOT, 'scripts', 'build-console.sh')], { stdio: 'inherit' });
    [allowedSite, refusedSite] = await Promise.all([site(), site()]);
    p = await startPlatform({
      MGX_API_TOKENS: `acme:${TOKEN}`,
      MGX_OPERATOR_TOKENS: `ops:${OPERATOR}`,
      MGX_CORS_ORIGINS: allowedSite.origin,
      MGX_USAGE_INTERVAL_SECONDS: '0.5',
      MGX_PREVIEW_PORTS: '3000-3999',
    });
    acme = createMgxClient({ url: p.server.url, token: TOKEN });
    browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
  }, 180_000);

  afterAll(async () => {
    // a test that failed half-way may leave a session running: the server's drain would wait for it
    const active = await acme?.sessions.list.query({ status: ['queued', 'starting', 'running'], limit: 200 }).catch(() => undefined);
    for (const s of active?.items ?? []) await acme.sessions.cancel.mutate({ sessionId: s.id }).catch(() => undefined);
    await browser?.close();
    await p?.close();
    allowedSite?.server.close();
    refusedSite?.server.close();
  });

  it('signs in with a token, starts a session from the form and shows it live; cancels another', async () => {
    const page = await browser.newPage();
    await page.setViewport({ width: 1200, height: 800 });
    await page.goto(`${p.server.url}/`);
    await page.waitForSelector('input[name=token]');
    await screenshot(page, 'sign-in');
    // a wrong token is refused, and nothing is kept
    await page.type('input[name=token]', 'not-a-token');
    await page.click('form button[type=submit]');
    await page.waitForSelector('.error');
    expect(await page.$eval('.error', (e) => e.textContent)).toContain('UNAUTHORIZED');
    expect(await page.evaluate(() => sessionStorage.getItem('mgx.token'))).toBeNull();
    await page.$eval('input[name=token]', (e) => (e.value = ''));
    await page.type('input[name=token]', TOKEN);
    await page.click('form button[type=submit]');
    await page.waitForSelector('table.sessions');
    expect(await page.evaluate(() => sessionStorage.getItem('mgx.token'))).toBe(TOKEN);
    // the token is never in a URL
    expect(page.url()).not.toContain(TOKEN);

    // the form: the framework from frameworks.list, its options from its schema
    await page.click('a[href="/new"]');
    await page.waitForSelector('select[name=framework] option[value=script]');
    await page.select('select[name=framework]', 'exec');
    await page.waitForSelector('textarea[name=option-command]');
    await page.select('select[name=framework]', 'script');
    await page.type(
      'textarea[name=prompt]',
      script(
        { say: 'hello from the console' },
        { sleep: 1500 },
        { write: { path: 'out/result.txt', content: 'done\n' } },
        { say: 'all done' },
      ),
    );
    await page.type('input[name=timeoutSeconds]', '120');
    await page.type('input[name=memory]', '256m');
    await screenshot(page, 'new-session');
    await page.click('form.new-session button[type=submit]');
    await page.waitForFunction(() => /^\/sessions\/[^/]+$/.test(location.pathname));
    const sessionId = page.url().split('/').pop() ?? '';
    await page.waitForFunction(() => document.querySelector('.conversation')?.textContent?.includes('hello from the console'), {
      timeout: 60_000,
    });
    await waitForStatus(page, 'succeeded');
    expect(await page.$eval('.conversation', (e) => e.textContent)).toContain('all done');
    const session = await acme.sessions.get.query({ sessionId });
    expect(session).toMatchObject({
      framework: 'script',
      status: 'succeeded',
      limits: { memoryBytes: 256 * 1024 ** 2, timeoutSeconds: 120 },
    });
    await screenshot(page, 'session');
    await page.click('[data-tab="events"]');
    const stored = await storedEvents(acme, sessionId);
    await page.waitForFunction((n) => document.querySelectorAll('table.events tr[data-seq]').length === n, {}, stored.length);
    expect(await shownSeqs(page)).toEqual(stored.map((e) => e.seq));
    await screenshot(page, 'events');
    await page.click('[data-tab="files"]');
    await page.waitForSelector('table.files tr[data-path="out/result.txt"]');
    await screenshot(page, 'files');

    // the list shows it, live
    await page.click('a[href="/"]');
    await page.waitForSelector(`tr[data-session="${sessionId}"] [data-status=succeeded]`);

    // another session, which grows its memory then would wait two minutes: it is running, its
    // usage is charted as it is sampled, then it is cancelled from its page
    const grow = Array.from({ length: 8 }, () => [{ alloc_mb: 16 }, { sleep: 1500 }]).flat();
    const long = await acme.sessions.create.mutate({
      framework: 'script',
      prompt: script({ say: 'waiting' }, ...grow, { sleep: 120_000 }),
    });
    await page.waitForSelector(`tr[data-session="${long.id}"]`);
    await screenshot(page, 'sessions');
    await page.click(`tr[data-session="${long.id}"] a`);
    await page.waitForFunction(() => document.querySelector('.conversation')?.textContent?.includes('waiting'), { timeout: 60_000 });
    // the status may land after the first message
    await waitForStatus(page, 'running', 30_000);
    await page.click('[data-tab="usage"]');
    // a running session's first reading is always stored; more follow as its memory grows
    const samples = () => Number(document.querySelector('.charts')?.getAttribute('data-samples') ?? 0);
    await page.waitForFunction(samples, { timeout: 120_000 });
    // a few more make a better picture, when the engine reads fast enough
    await page
      .waitForFunction(() => Number(document.querySelector('.charts')?.getAttribute('data-samples')) >= 4, { timeout: 20_000 })
      .catch(() => undefined);
    await screenshot(page, 'usage-chart');
    await page.click('.session button.danger');
    await waitForStatus(page, 'cancelled');
    expect((await acme.sessions.get.query({ sessionId: long.id })).status).toBe('cancelled');
    await page.close();
  });

  it('resumes the stream after the network is cut mid-session, with no gap and no duplicate', async () => {
    const steps = Array.from({ length: 10 }, (_, i) => [{ say: `line ${i}` }, { sleep: 700 }]).flat();
    const s = await acme.sessions.create.mutate({ framework: 'script', prompt: script(...steps) });
    // the browser reaches the console through a relay that can cut its connections
    const net = await relay(p.server.port);
    const page = await signedIn(TOKEN, net.url);
    const streams: HTTPRequest[] = [];
    page.on('request', (r) => {
      if (r.url().includes('/trpc/sessions.streamBatches')) streams.push(r);
    });
    await openSession(page, s.id, 'events', net.url);
    await page.waitForFunction(() => document.querySelector('table.events')?.textContent?.includes('line 1'), { timeout: 60_000 });
    net.cut();
    const cutAt = (await shownSeqs(page)).length;
    // the agent goes on while the page is cut off: wait until it stored more than the page had
    await expect.poll(async () => (await storedEvents(acme, s.id)).length, { timeout: 60_000 }).toBeGreaterThan(cutAt + 3);
    await page.waitForFunction(() => document.querySelector('[data-connection]')?.getAttribute('data-connection') === 'connecting', {
      timeout: 30_000,
    });
    net.restore();
    const finished = await collect(acme, s.id);
    const last = finished.at(-1);
    expect(last?.type).toBe('FINISH');
    await page.waitForFunction(
      (n) => document.querySelectorAll('table.events tr[data-seq]').length >= n,
      { timeout: 60_000 },
      finished.length,
    );
    // every seq once, in order: the resumed stream started after the last event received
    expect(await shownSeqs(page)).toEqual(finished.map((e) => e.seq));
    expect(streams.length).toBeGreaterThanOrEqual(2);
    const resumed = streams.slice(1).map((r) => r.headers()['last-event-id'] ?? new URL(r.url()).searchParams.get('input') ?? '');
    expect(resumed.some((x) => /[1-9]/.test(x))).toBe(true);
    await page.close();
    await net.close();
  });
  it("renders an agent's HTML and script as text: messages and file names stay inert", async () => {
    const evil = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>';
    const evilName = '<img src=x onerror=window.__xss=3>.html';
    const s = await acme.sessions.create.mutate({
      framework: 'script',
      prompt: script(
        { say: evil },
        { write: { path: evilName, content: '<script>window.__xss=4</script>' } },
        { print: { stream: 'stdout', text: evil } },
      ),
    });
    await collect(acme, s.id);
    const page = await signedIn();
    await openSession(page, s.id);
    await waitForStatus(page, 'succeeded');
    await page.waitForFunction((t) => document.querySelector('.conversation')?.textContent?.includes(t), {}, evil);
    for (const tab of ['conversation', 'events', 'logs', 'files']) {
      await page.click(`[data-tab="${tab}"]`);
      if (tab === 'files') await page.waitForSelector('table.files tr[data-path]');
      if (tab === 'logs') await page.waitForSelector('pre.logs');
      // the text is there, as text: no element was made of it, no handler ran
      const panel = await page.$eval('[data-panel]', (e) => ({
        text: e.textContent ?? '',
        injected: e.querySelectorAll('img, script, iframe, object').length,
      }));
      expect(panel.injected, tab).toBe(0);
      if (tab === 'files') expect(panel.text).toContain(evilName);
      else expect(panel.text).toContain(tab === 'events' ? 'onerror' : evil);
    }
    expect(await page.evaluate(() => (window as unknown as { __xss?: unknown }).__xss)).toBeUndefined();
    await screenshot(page, 'untrusted-output');
    await page.close();
  });

  it('lets a page on an origin of MGX_CORS_ORIGINS call the API, follow a stream and fetch a file, and refuses any other', async () => {
    const s = await acme.sessions.create.mutate({
      framework: 'script',
      prompt: script({ write: { path: 'hello.txt', content: 'hello across origins' } }, { say: 'cross-origin' }),
    });
    await collect(acme, s.id);
    const calls = async (origin: string) => {
      const page = await browser.newPage();
      await page.goto(`${origin}/`);
      const result = await page.evaluate(
        async (api: string, token: string, sessionId: string) => {
          const auth = { authorization: `Bearer ${token}` };
          const attempt = async (f: () => Promise<string>) => {
            try {
              return await f();
            } catch (err) {
              return `refused: ${String(err)}`;
            }
          };
          return {
            list: await attempt(async () => {
              const r = await fetch(`${api}/trpc/sessions.list?input=${encodeURIComponent('{"limit":5}')}`, { headers: auth });
              return `${r.status} ${await r.text()}`;
            }),
            // the stream with the token as a header and a resume point, as a browser's client sends them
            stream: await attempt(async () => {
              const input = encodeURIComponent(JSON.stringify({ sessionId }));
              const r = await fetch(`${api}/trpc/sessions.stream?input=${input}`, { headers: { ...auth, 'last-event-id': '1' } });
              return `${r.status} ${await r.text()}`;
            }),
            file: await attempt(async () => {
              const r = await fetch(`${api}/workspaces/${sessionId}/files/hello.txt`, { headers: auth });
              return `${r.status} ${r.headers.get('content-length') ?? ''} ${await r.text()}`;
            }),
          };
        },
        p.server.url,
        TOKEN,
        s.id,
      );
      await page.close();
      return result;
    };
    const allowed = await calls(allowedSite.origin);
    expect(allowed.list).toMatch(/^200 /);
    expect(allowed.list).toContain(s.id);
    expect(allowed.stream).toMatch(/^200 /);
    expect(allowed.stream).toContain('"FINISH"');
    // resumed after seq 1: the first event is not sent again
    expect(allowed.stream).not.toMatch(/^id: ?1$/m);
    expect(allowed.file).toBe('200 20 hello across origins');
    const refused = await calls(refusedSite.origin);
    expect(refused.list).toMatch(/^refused: TypeError/);
    expect(refused.stream).toMatch(/^refused: TypeError/);
    expect(refused.file).toMatch(/^refused: TypeError/);

    // what the browser was told
    const preflight = (origin: string, path: string) =>
      raw('OPTIONS', path, {
        origin,
        'access-control-request-method': 'GET',
        'access-control-request-headers': 'authorization,last-event-id',
      });
    const ok = await preflight(allowedSite.origin, '/trpc/sessions.stream');
    expect(ok.status).toBe(204);
    expect(ok.headers).toMatchObject({
      'access-control-allow-origin': allowedSite.origin,
      vary: expect.stringContaining('Origin'),
      'access-control-max-age': '600',
    });
    expect(String(ok.headers['access-control-allow-headers'])).toMatch(/Authorization.*Last-Event-ID/);
    const no = await preflight(refusedSite.origin, '/workspaces/x/files/a');
    expect(no.headers['access-control-allow-origin']).toBeUndefined();
    const get = await raw('GET', '/trpc/system.health', { origin: refusedSite.origin });
    expect(get.status).toBe(200);
    expect(get.headers['access-control-allow-origin']).toBeUndefined();
    expect(get.headers.vary).toContain('Origin');
  });

  it('serves the console at / under a strict policy, without shadowing the API', async () => {
    const index = await raw('GET', '/');
    expect(index.status).toBe(200);
    expect(index.headers['cache-control']).toBe('no-cache');
    const csp = String(index.headers['content-security-policy']);
    for (const directive of ["script-src 'self'", "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'", "default-src 'none'"])
      expect(csp).toContain(directive);
    expect(csp).not.toContain('unsafe-inline');
    // no inline script in the page: its one script is a file
    expect(index.body).not.toMatch(/<script(?![^>]*\ssrc=)[^>]*>/);
    const asset = /src="(\/assets\/[^"]+\.js)"/.exec(index.body)?.[1] ?? '';
    const js = await raw('GET', asset);
    expect(js.status).toBe(200);
    expect(js.headers['cache-control']).toContain('immutable');
    expect(js.headers['content-type']).toContain('text/javascript');
    // client routes get the page; the API's paths keep their answers
    expect((await raw('GET', '/sessions/s123')).body).toBe(index.body);
    expect((await raw('GET', '/workers')).body).toBe(index.body);
    expect((await raw('GET', '/assets/missing.js')).status).toBe(404);
    expect((await raw('GET', '/healthz')).headers['content-type']).toContain('application/json');
    expect((await raw('GET', '/metrics')).body).toContain('mgx_');
    expect((await raw('GET', '/trpc/system.health')).body).toContain('"result"');
    expect((await raw('GET', '/workspaces/w1/files/a.txt')).status).toBe(401);
    expect((await raw('GET', '/sessions/s123/preview/3000/')).body).not.toBe(index.body);

    // the JavaScript budget: under 200 KB gzipped, all of it
    const assets = readdirSync(join(DIST, 'assets')).filter((f) => f.endsWith('.js'));
    const gzipped = assets.reduce((n, f) => n + gzipSync(readFileSync(join(DIST, 'assets', f))).length, 0);
    console.log(`[console] JavaScript: ${assets.length} file(s), ${(gzipped / 1024).toFixed(1)} KiB gzipped`);
    expect(gzipped).toBeLessThan(200 * 1024);

    // how long the first page takes to be usable (measured, not asserted: the machine is shared)
    const page = await browser.newPage();
    await page.evaluateOnNewDocument((t: string) => sessionStorage.setItem('mgx.token', t), TOKEN);
    const t0 = performance.now();
    await page.goto(`${p.server.url}/`);
    await page.waitForSelector('table.sessions tbody tr');
    console.log(`[console] first page usable (sessions listed) in ${Math.round(performance.now() - t0)} ms`);
    await page.close();
  });

  it('shows the workspace files with downloads, the preview in a frame, usage and the workers', async () => {
    // the agent's app: a page and the script it loads from next to it (a second request of the frame)
    const APP = String.raw`
require('http').createServer((q, s) => {
  if (q.url === '/app.js') { s.writeHead(200, { 'content-type': 'text/javascript' }); return s.end("document.getElementById('js').textContent = 'script ran'"); }
  s.writeHead(200, { 'content-type': 'text/html' });
  s.end('<h1 id=t>hello from the agent app</h1><p id=js>no script</p><script src="app.js"></script>');
}).listen(3000, '127.0.0.1', () => console.log('listening on 3000'));
`;
    const s = await acme.sessions.create.mutate({ framework: 'exec', prompt: '', options: { command: ['node', '-e', APP] } });
    const page = await signedIn();
    await openSession(page, s.id, 'logs');
    await page.waitForFunction(() => document.querySelector('pre.logs')?.textContent?.includes('listening on 3000'), { timeout: 60_000 });
    await page.click('[data-tab="preview"]');
    await page.waitForSelector('input[name=port]');
    await page.click('.preview button[type=submit]');
    const frameEl = await page.waitForSelector('.preview iframe');
    const frame = await frameEl?.contentFrame();
    await frame?.waitForSelector('#t');
    expect(await frame?.$eval('#t', (e) => e.textContent)).toBe('hello from the agent app');
    // the frame has no origin of its own: the agent's app cannot reach the console or its token
    expect(await frameEl?.evaluate((e) => e.getAttribute('sandbox'))).not.toContain('allow-same-origin');
    await screenshot(page, 'preview');
    // in a tab of its own the app runs whole: its page loads its script
    const link = await page.$eval('a.open-preview', (a) => a.getAttribute('href') ?? '');
    expect(link).toContain(`/sessions/${s.id}/preview/3000/`);
    const tab = await browser.newPage();
    await tab.goto(link);
    await tab.waitForFunction(() => document.getElementById('js')?.textContent === 'script ran', { timeout: 30_000 });
    await tab.close();
    await acme.sessions.cancel.mutate({ sessionId: s.id });

    // files: a download is fetched with the token in a header and saved from a blob URL
    const w = await acme.sessions.create.mutate({
      framework: 'script',
      prompt: script(
        { write: { path: 'report/summary.md', content: '# the summary' } },
        { write: { path: 'data.json', content: '{"ok":true}' } },
      ),
    });
    await collect(acme, w.id);
    const downloads = join(ARTIFACTS, 'console-downloads');
    mkdirSync(downloads, { recursive: true });
    const cdp = await page.createCDPSession();
    await cdp.send('Browser.setDownloadBehavior', { behavior: 'allow', downloadPath: downloads });
    const requests: string[] = [];
    page.on('request', (r) => requests.push(r.url()));
    await openSession(page, w.id, 'files');
    await page.waitForSelector('table.files tr[data-path="report/summary.md"] button');
    await screenshot(page, 'workspace-files');
    await page.click('table.files tr[data-path="report/summary.md"] button');
    await expect.poll(() => readdirSync(downloads).includes('summary.md'), { timeout: 30_000 }).toBe(true);
    expect(readFileSync(join(downloads, 'summary.md'), 'utf8')).toBe('# the summary');
    expect(requests.every((u) => !u.includes(TOKEN))).toBe(true);

    await page.click('a[href="/usage"]');
    await page.waitForSelector('table.usage');
    await screenshot(page, 'usage');
    // the workers page is an operator's: a tenant is told so
    await page.click('a[href="/workers"]');
    await page.waitForSelector('.error');
    expect(await page.$eval('.error', (e) => e.textContent)).toContain('FORBIDDEN');
    await page.close();
    const ops = await signedIn(OPERATOR);
    await ops.click('a[href="/workers"]');
    await ops.waitForSelector(`tr[data-worker="${p.env.MGX_OWNER}"]`);
    await screenshot(ops, 'workers');
    await ops.click('a[href="/"]');
    await ops.waitForSelector(`table.sessions tr[data-session="${w.id}"]`);
    await ops.close();
  });
});

/** A request with no client in between, so the headers are exactly the server's. */
function raw(method: string, path: string, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }>((resolve, reject) => {
    const req = httpRequest(`${p.server.url}${path}`, { method, headers }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}
