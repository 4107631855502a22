import { mkdirSync, readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import puppeteer, { type Browser } from 'puppeteer-core';
import { createMgxClient, type MgxClient } from '@mgx/client';
import { loadSettings } from '@mgx/config';
import { PreviewSigner } from '@mgx/preview';
import { startServer, type RunningServer } from '@mgx/server';
import { startPlatform, type Platform } from '../support/platform.js';
import { freePort } from '../support/server-process.js';
import { sleep, storedEvents } from '../support/sessions.js';

// The preview end to end: an app the agent serves inside its container (HTTP and a
// WebSocket, on a container with no network at all), reached through the session's tunnel
// by a real browser, with bearer tokens, signed links and a second API node of the fleet.

const CHROMIUM = process.env.MGX_TEST_CHROMIUM ?? '/usr/bin/chromium';
const ARTIFACTS = join(import.meta.dirname, '..', '..', 'test-results');
const tokenOf = (t: string) => `${t}-token-0123456789abcdef`;

/**
 * The agent's app: a page whose script opens a WebSocket next to it and shows the echo, and a
 * minimal WebSocket echo server (no libraries in the container), on port 3000.
 */
const APP = String.raw`
const http = require('http'), crypto = require('crypto');
const page = '<!doctype html><title>app</title><h1 id="t">served from the container</h1><p id="ws">waiting</p>' +
  '<script src="app.js"></script>';
const js = "const ws = new WebSocket(new URL('ws', location.href).href.replace(/^http/, 'ws'));" +
  "ws.onopen = () => ws.send('ping'); ws.onmessage = (m) => { document.getElementById('ws').textContent = m.data; };";
const server = http.createServer((req, res) => {
  if (req.url === '/' ) { res.writeHead(200, { 'content-type': 'text/html' }); return res.end(page); }
  if (req.url === '/app.js') { res.writeHead(200, { 'content-type': 'text/javascript' }); return res.end(js); }
  if (req.url.startsWith('/echo')) { res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify({ url: req.url, host: req.headers.host, auth: req.headers.authorization || null, cookie: req.headers.cookie || null })); }
  res.writeHead(404); res.end('no such page');
});
server.on('upgrade', (req, socket) => {
  const accept = crypto.createHash('sha1').update(req.headers['sec-websocket-key'] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ' + accept + '\r\n\r\n');
  socket.on('data', (b) => {
    if ((b[0] & 0x0f) !== 1) return;
    const len = b[1] & 0x7f, mask = b.subarray(2, 6), data = Buffer.from(b.subarray(6, 6 + len).map((x, i) => x ^ mask[i % 4]));
    const out = Buffer.from('echo:' + data.toString());
    socket.write(Buffer.concat([Buffer.from([0x81, out.length]), out]));
  });
  socket.on('error', () => {});
});
server.listen(3000, '127.0.0.1', () => console.log('listening on 3000'));
`;

let p: Platform;
let acme: MgxClient;
let globex: MgxClient;
let browser: Browser | undefined;

async function startApp(client: MgxClient): Promise<string> {
  const s = await client.sessions.create.mutate({ framework: 'exec', prompt: 'serve the app', options: { command: ['node', '-e', APP] } });
  // the app is up once it said so
  for (let i = 0; i < 240; i++) {
    await sleep(500);
    const events = await storedEvents(client, s.id);
    if (events.some((e) => e.type === 'LOG' && e.data.text === 'listening on 3000')) return s.id;
    if (events.some((e) => e.type === 'FINISH')) throw new Error(`the app's session ended: ${JSON.stringify(events.at(-1))}`);
  }
  throw new Error('the app did not start');
}

/** A raw WebSocket handshake to the app's /ws through a server's preview; resolves on the app's 101, left open. */
async function openWebSocket(port: number, sessionId: string): Promise<Socket> {
  const ws = connect(port, '127.0.0.1');
  let answer = '';
  ws.on('data', (b: Buffer) => (answer += b.toString('latin1')));
  ws.on('error', () => undefined);
  ws.write(
    [
      `GET /sessions/${sessionId}/preview/3000/ws HTTP/1.1`,
      'Host: 127.0.0.1',
      `Authorization: Bearer ${tokenOf('acme')}`,
      'Upgrade: websocket',
      'Connection: Upgrade',
      'Sec-WebSocket-Version: 13',
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
      '',
      '',
    ].join('\r\n'),
  );
  await expect.poll(() => answer, { timeout: 30_000 }).toMatch(/^HTTP\/1.1 101 Switching Protocols\r\n/);
  expect(answer).toContain('Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
  // a masked text frame "ping"; the app echoes "echo:ping" unmasked
  const mask = Buffer.from([1, 2, 3, 4]);
  const frame = Buffer.concat([
    Buffer.from([0x81, 0x84]),
    mask,
    Buffer.from([...Buffer.from('ping')].map((b, i) => b ^ (mask[i % 4] ?? 0))),
  ]);
  ws.write(frame);
  await expect.poll(() => answer, { timeout: 30_000 }).toContain('echo:ping');
  return ws;
}

/** A request with no client library in between, so headers and redirects are exactly as sent. */
function get(
  url: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { headers }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('preview: an app inside a container without network, through the session tunnel', () => {
  let sessionId: string;
  let base: string;

  beforeAll(async () => {
    // a known port, so the worker can advertise its URL to the API node of the fleet test
    const port = await freePort();
    p = await startPlatform({
      MGX_PORT: String(port),
      MGX_WORKER_URL: `http://127.0.0.1:${port}`,
      MGX_API_TOKENS: `acme:${tokenOf('acme')},globex:${tokenOf('globex')}`,
      MGX_PREVIEW_PORTS: '3000-3999',
      MGX_PREVIEW_DOMAIN: 'preview.test',
    });
    acme = createMgxClient({ url: p.server.url, token: tokenOf('acme') });
    globex = createMgxClient({ url: p.server.url, token: tokenOf('globex') });
    sessionId = await startApp(acme);
    base = `${p.server.url}/sessions/${sessionId}/preview/3000`;
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await p?.close();
  });

  it('serves the app to the tenant with its bearer token, and strips the token before the app', async () => {
    const page = await get(`${base}/`, { authorization: `Bearer ${tokenOf('acme')}` });
    expect(page.status).toBe(200);
    expect(page.body).toContain('served from the container');
    const echo = JSON.parse((await get(`${base}/echo?x=1`, { authorization: `Bearer ${tokenOf('acme')}` })).body) as Record<
      string,
      unknown
    >;
    expect(echo).toEqual({ url: '/echo?x=1', host: 'localhost:3000', auth: null, cookie: null });
  });

  it('refuses no credentials (401), another tenant (404, as for sessions), a port outside the range (400) and a port nobody serves (502)', async () => {
    expect((await get(`${base}/`)).status).toBe(401);
    expect((await get(`${base}/`, { authorization: 'Bearer wrong-token-0123456789' })).status).toBe(401);
    const other = await get(`${base}/`, { authorization: `Bearer ${tokenOf('globex')}` });
    expect(other.status).toBe(404);
    expect(JSON.parse(other.body)).toMatchObject({ error: 'PREVIEW_NOT_FOUND' });
    const out = await get(`${p.server.url}/sessions/${sessionId}/preview/8080/`, { authorization: `Bearer ${tokenOf('acme')}` });
    expect(out.status).toBe(400);
    expect(out.body).toMatch(/outside the preview ports 3000-3999/);
    const nobody = await get(`${p.server.url}/sessions/${sessionId}/preview/3001/`, { authorization: `Bearer ${tokenOf('acme')}` });
    expect(nobody.status).toBe(502);
    expect(JSON.parse(nobody.body)).toMatchObject({ error: 'PREVIEW_UNREACHABLE' });
    // the tunnel's refusal did not hurt the session
    expect((await acme.sessions.get.query({ sessionId })).status).toBe('running');
  });

  it('a signed link becomes a cookie on the preview path; a forged or expired link is refused', async () => {
    const link = await acme.sessions.previewUrl.mutate({ sessionId, port: 3000, ttlSeconds: 600, form: 'path' });
    expect(link.url).toMatch(new RegExp(`/sessions/${sessionId}/preview/3000/\\?mgx_preview_token=`));
    const first = await get(link.url);
    expect(first.status).toBe(302);
    expect(first.headers.location).toBe(`/sessions/${sessionId}/preview/3000/`);
    const cookie = String(first.headers['set-cookie']);
    expect(cookie).toMatch(
      new RegExp(`^mgx_preview=[^;]+; Path=/sessions/${sessionId}/preview/3000; Max-Age=\\d+; HttpOnly; SameSite=Lax`),
    );
    const jar = cookie.split(';')[0] ?? '';
    const echo = JSON.parse((await get(`${base}/echo`, { cookie: `${jar}; theme=dark` })).body) as Record<string, unknown>;
    // the app gets its own cookies, not the preview's
    expect(echo.cookie).toBe('theme=dark');
    // a link binds its port and session
    expect((await get(`${p.server.url}/sessions/${sessionId}/preview/3001/`, { cookie: jar })).status).toBe(401);

    const forged = link.url.replace(
      /mgx_preview_token=([^.]+)\.(.)/,
      (_m, exp: string, c: string) => `mgx_preview_token=${exp}.${c === 'A' ? 'B' : 'A'}`,
    );
    const bad = await get(forged);
    expect(bad.status).toBe(401);
    expect(bad.body).toMatch(/not valid/);
    const signer = new PreviewSigner(Buffer.from(readFileSync(join(p.dataDir, 'preview.key'), 'utf8').trim()));
    const expired = await get(`${base}/?mgx_preview_token=${signer.sign(sessionId, 3000, Date.now() - 1000)}`);
    expect(expired.status).toBe(401);
    expect(expired.body).toMatch(/expired/);
    // another tenant cannot get a link to it
    await expect(globex.sessions.previewUrl.mutate({ sessionId, port: 3000 })).rejects.toMatchObject({ data: { code: 'NOT_FOUND' } });
  });

  it('loads in a real Chromium from a signed link, with its script and a WebSocket echo through the tunnel', async () => {
    browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
    const page = await browser.newPage();
    const link = await acme.sessions.previewUrl.mutate({ sessionId, port: 3000, form: 'path' });
    await page.goto(link.url, { waitUntil: 'load' });
    expect(page.url()).toBe(`${base}/`);
    expect(await page.$eval('#t', (e) => e.textContent)).toBe('served from the container');
    await page.waitForFunction(() => document.getElementById('ws')?.textContent === 'echo:ping', { timeout: 30_000 });
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'preview.png') });
    const metrics = await p.server.metrics.render();
    expect(metrics).toMatch(/mgx_preview_connections_total\{result="opened"\} [1-9]/);
    expect(metrics).toMatch(/mgx_preview_bytes_total\{direction="out"\} [1-9]/);
    await page.close();
  });

  it('reaches the session from an API node of the fleet, through the worker URL it advertises', async () => {
    // a second process role on the same store: an API node with no engine and no tunnels
    const port = await freePort();
    const settings = loadSettings(
      {
        ...p.env,
        MGX_PORT: String(port),
        MGX_ROLE: 'api',
        MGX_OWNER: `${p.env.MGX_OWNER}-api`,
        MGX_PREVIEW_KEY_FILE: join(p.dataDir, 'preview.key'),
      },
      process.cwd(),
    );
    // the worker registered the URL it advertises
    expect((await p.server.store.workers.get(p.env.MGX_OWNER ?? ''))?.url).toBe(p.server.url);
    let api: RunningServer | undefined;
    try {
      api = await startServer(settings, { runtime: null, logger: pino({ level: 'silent' }) });
      const page = await get(`${api.url}/sessions/${sessionId}/preview/3000/`, { authorization: `Bearer ${tokenOf('acme')}` });
      expect(page.status).toBe(200);
      expect(page.body).toContain('served from the container');
      // a link made by the API node opens on the API node
      const apiClient = createMgxClient({ url: api.url, token: tokenOf('acme') });
      const link = await apiClient.sessions.previewUrl.mutate({ sessionId, port: 3000, form: 'path' });
      expect(link.url.startsWith(`${api.url}/`)).toBe(true);
      expect((await get(link.url)).status).toBe(302);
      // a WebSocket through the API node reaches the app too
      (await openWebSocket(api.port, sessionId)).destroy();
    } finally {
      await api?.close();
    }
  });

  it('serves the host-name form <port>-<session>.<MGX_PREVIEW_DOMAIN> at /, for apps that must live there', async () => {
    const host = `3000-${sessionId}.preview.test`;
    const echo = await get(`${p.server.url}/echo`, { host, authorization: `Bearer ${tokenOf('acme')}` });
    expect(echo.status).toBe(200);
    expect(JSON.parse(echo.body)).toMatchObject({ url: '/echo' });
    // even the API's own paths are the app's on its host name
    expect((await get(`${p.server.url}/trpc/sessions.list`, { host, authorization: `Bearer ${tokenOf('acme')}` })).body).toBe(
      'no such page',
    );
    // MGX_PREVIEW_DOMAIN makes the host-name form the default
    const link = await acme.sessions.previewUrl.mutate({ sessionId, port: 3000 });
    expect(new URL(link.url).hostname).toBe(host);
    const first = await get(`${p.server.url}${new URL(link.url).pathname}${new URL(link.url).search}`, { host });
    expect(first.status).toBe(302);
    expect(String(first.headers['set-cookie'])).toMatch(/; Path=\/; /);
  });

  it('closes the preview when the session ends, WebSockets included, and refuses it after (409)', async () => {
    const before = await get(`${base}/`, { authorization: `Bearer ${tokenOf('acme')}` });
    expect(before.status).toBe(200);
    // a raw WebSocket handshake through the proxy, left open
    const ws = await openWebSocket(p.server.port, sessionId);
    const closed = new Promise<void>((resolve) => ws.on('close', () => resolve()));
    await acme.sessions.cancel.mutate({ sessionId });
    await closed;
    await expect
      .poll(async () => (await get(`${base}/`, { authorization: `Bearer ${tokenOf('acme')}` })).status, { timeout: 60_000, interval: 250 })
      .toBe(409);
    await expect
      .poll(async () => (await p.server.metrics.render()).match(/^mgx_preview_connections (\d+)/m)?.[1], { timeout: 30_000 })
      .toBe('0');
  });
});
