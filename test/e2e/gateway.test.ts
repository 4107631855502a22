import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SessionEvent } from '@mgx/client';
import { containerOf } from '../support/engine.js';
import { fakeOpenAI } from '../support/fake-openai.js';
import { startPlatform, type Platform } from '../support/platform.js';
import { PROC_SCAN, scanArg, type ScanResult } from '../support/proc-scan.js';
import { collect, storedEvents } from '../support/sessions.js';

// Agents call models without holding keys: the worker's gateway, reached over the session's
// socket directory, adds the provider's key; the container keeps network none.

const KEY = `sk-provider-${randomBytes(16).toString('hex')}`;
let fake: Awaited<ReturnType<typeof fakeOpenAI>>;
let p: Platform;
/** A host service on loopback that sessions may reach through the egress proxy. */
let site: Server;
let sitePort: number;

beforeAll(async () => {
  fake = await fakeOpenAI();
  site = createServer((req, res) => res.end(`reached ${req.url}`));
  await new Promise<void>((r) => site.listen(0, '127.0.0.1', r));
  sitePort = (site.address() as AddressInfo).port;
  p = await startPlatform({
    MGX_MODEL_PROVIDERS: JSON.stringify([{ name: 'fake', baseUrl: fake.baseUrl, apiKeyEnv: 'MGX_TEST_FAKE_KEY', models: ['*'] }]),
    MGX_TEST_FAKE_KEY: KEY,
    MGX_EGRESS_ALLOW: '127.0.0.1,*.example.org',
  });
});
afterAll(async () => {
  await p?.close();
  await fake?.close();
  site?.closeAllConnections();
  await new Promise((r) => site?.close(r));
});

const finishOf = (events: SessionEvent[]) => events.at(-1);
const modelCalls = (events: SessionEvent[]) => events.filter((e) => e.type === 'MODEL_CALL').map((e) => e.data);

/** Every file under a directory, as text. */
function filesUnder(dir: string): string {
  let all = '';
  for (const name of readdirSync(dir, { recursive: true }) as string[]) {
    const path = join(dir, name);
    if (statSync(path).isFile()) all += readFileSync(path).toString('latin1');
  }
  return all;
}

describe('the openai framework through the model gateway', () => {
  it('runs with network none, reaches the provider with the real key, and counts tokens per call and in FINISH', async () => {
    fake.reset([
      {
        toolCalls: [{ name: 'write_file', args: { path: 'hello.txt', content: 'hi from the model' } }],
        promptTokens: 120,
        completionTokens: 30,
      },
      { text: 'All done.', promptTokens: 200, completionTokens: 7 },
    ]);
    const s = await p.client.sessions.create.mutate({
      framework: 'openai',
      prompt: 'write hello.txt',
      options: { provider: 'fake', model: 'gpt-fake' },
    });
    expect(s.network).toBe('none');
    const events = await collect(p.client, s.id);
    expect(finishOf(events)?.data).toMatchObject({
      status: 'succeeded',
      usage: { model: { calls: 2, promptTokens: 320, completionTokens: 37, refused: 0 } },
    });
    expect(fake.requests.map((r) => r.authorization)).toEqual([`Bearer ${KEY}`, `Bearer ${KEY}`]);
    expect(fake.requests.map((r) => [r.body.model, r.body.stream])).toEqual([
      ['gpt-fake', true],
      ['gpt-fake', true],
    ]);
    expect(modelCalls(events)).toEqual([
      expect.objectContaining({
        provider: 'fake',
        model: 'gpt-fake',
        status: 'ok',
        httpStatus: 200,
        promptTokens: 120,
        completionTokens: 30,
        stream: true,
      }),
      expect.objectContaining({ provider: 'fake', model: 'gpt-fake', status: 'ok', promptTokens: 200, completionTokens: 7 }),
    ]);
    expect(events.find((e) => e.type === 'MESSAGE' && e.data.done)?.data.text).toBe('All done.');
    expect(readFileSync(join(p.dataDir, 'workspaces', s.workspaceId, 'hello.txt'), 'utf8')).toBe('hi from the model');
    // no content was asked for, so none is recorded
    expect(modelCalls(events).filter((c) => 'request' in c || 'response' in c)).toEqual([]);
    const metrics = await (await fetch(`${p.server.url}/metrics`)).text();
    expect(metrics).toMatch(/mgx_model_tokens_total\{provider="fake",model="\*",kind="prompt"\} [1-9]/);
    expect(metrics).toMatch(/mgx_model_calls_total\{provider="fake",status="ok"\} [1-9]/);
  });

  it('leaves the key nowhere in the container: inspect, every process environment, command line and memory, the workspace, the events', async () => {
    let scan: ScanResult | undefined;
    let inspected = '';
    let sessionId = '';
    fake.reset([
      {
        // while the model "thinks", look at everything inside the container
        before: async () => {
          const c = await containerOf(sessionId);
          inspected = JSON.stringify(c);
          const out = await p.server.runtime!.exec(c.Id, [
            '/usr/local/bin/node',
            '-e',
            PROC_SCAN,
            scanArg({ key: KEY, control: sessionId }),
          ]);
          scan = JSON.parse(out.stdout) as ScanResult;
        },
        text: 'looked',
      },
    ]);
    const s = await p.client.sessions.create.mutate({ framework: 'openai', prompt: 'look', options: { provider: 'fake', model: 'm' } });
    sessionId = s.id;
    const events = await collect(p.client, s.id);
    expect(finishOf(events)?.data).toMatchObject({ status: 'succeeded' });
    expect(fake.requests[0]?.authorization).toBe(`Bearer ${KEY}`);
    // the scan could read the runner: it found the session id in its memory
    expect(scan?.pids.some((x) => x.comm === 'node')).toBe(true);
    expect(scan?.found.control?.some((w) => w.endsWith(' mem'))).toBe(true);
    expect(scan?.readBytes).toBeGreaterThan(1024 * 1024);
    expect(scan?.found.key).toEqual([]);
    expect(inspected).toContain(s.id);
    expect(inspected).not.toContain(KEY);
    expect(filesUnder(join(p.dataDir, 'workspaces', s.workspaceId))).not.toContain(KEY);
    expect(JSON.stringify(await storedEvents(p.client, s.id))).not.toContain(KEY);
  });

  it('ends a session past its call budget failed, budget_exceeded, with the refused call recorded', async () => {
    fake.reset([{ toolCalls: [{ name: 'list_files', args: {} }] }]);
    const s = await p.client.sessions.create.mutate({
      framework: 'openai',
      prompt: 'loop',
      options: { provider: 'fake', model: 'm', maxSteps: 10 },
      maxModelCalls: 2,
    });
    expect(s.limits.maxModelCalls).toBe(2);
    const events = await collect(p.client, s.id);
    expect(finishOf(events)?.data).toMatchObject({
      status: 'failed',
      reason: 'budget_exceeded',
      usage: { model: { calls: 2, promptTokens: 200, completionTokens: 40, refused: 1 } },
    });
    expect(modelCalls(events).map((c) => [c.status, c.httpStatus])).toEqual([
      ['ok', 200],
      ['ok', 200],
      ['refused', 429],
    ]);
    expect(fake.requests).toHaveLength(2);
    expect((await p.client.sessions.get.query({ sessionId: s.id })).reason).toBe('budget_exceeded');
  });

  it("records each call's messages and answer in MODEL_CALL only when the session asks (recordModelContent)", async () => {
    fake.reset([
      { toolCalls: [{ name: 'write_file', args: { path: 'note.txt', content: 'kept' } }], promptTokens: 10, completionTokens: 5 },
      { text: 'Wrote the note.', promptTokens: 20, completionTokens: 4 },
    ]);
    const s = await p.client.sessions.create.mutate({
      framework: 'openai',
      prompt: 'write note.txt',
      options: { provider: 'fake', model: 'gpt-fake' },
      recordModelContent: true,
    });
    expect(s.limits.recordModelContent).toBe(true);
    const events = await collect(p.client, s.id);
    expect(finishOf(events)?.data).toMatchObject({ status: 'succeeded' });
    const [first, second] = modelCalls(events) as Array<{
      request: { messages: Array<{ role: string; content: unknown }> };
      response: Record<string, unknown>;
    }>;
    expect(first?.request.messages.some((m) => m.role === 'user' && String(m.content).includes('write note.txt'))).toBe(true);
    expect(first?.response).toMatchObject({ content: '', truncated: false });
    expect(JSON.stringify(first?.response.toolCalls)).toContain('write_file');
    expect(second?.response).toMatchObject({ content: 'Wrote the note.', truncated: false });
    // the answer to the tool call went back to the model, and is in the second request
    expect(JSON.stringify(second?.request.messages)).toContain('tool');
  });

  it('ends a session past its token budget the same way', async () => {
    fake.reset([{ toolCalls: [{ name: 'list_files', args: {} }], promptTokens: 600, completionTokens: 500 }]);
    const s = await p.client.sessions.create.mutate({
      framework: 'openai',
      prompt: 'loop',
      options: { provider: 'fake', model: 'm' },
      maxModelTokens: 1000,
    });
    const events = await collect(p.client, s.id);
    expect(finishOf(events)?.data).toMatchObject({ status: 'failed', reason: 'budget_exceeded' });
    expect(String(finishOf(events)?.data.message)).toContain('maxModelTokens');
    expect(fake.requests).toHaveLength(1);
  });
});

/** An agent CLI built for OpenAI's API: reads OPENAI_BASE_URL and OPENAI_API_KEY, asks once, prints the answer. */
const OPENAI_CLI = String.raw`
fetch(process.env.OPENAI_BASE_URL + '/chat/completions', {
  method: 'POST',
  headers: { 'content-type': 'application/json', authorization: 'Bearer ' + process.env.OPENAI_API_KEY },
  body: JSON.stringify({ model: 'gpt-cli', messages: [{ role: 'user', content: 'hi' }] }),
}).then(async (r) => {
  const body = await r.json();
  console.log('status ' + r.status + ' key ' + process.env.OPENAI_API_KEY + ' answer ' + body.choices[0].message.content);
}).catch((e) => { console.error(String(e)); process.exit(1); });`;

describe('agent CLIs in exec', () => {
  it('reach the model through the OpenAI-compatible endpoint inside the container, with a placeholder key', async () => {
    fake.reset([{ text: 'hello from the model', promptTokens: 11, completionTokens: 3 }]);
    const s = await p.client.sessions.create.mutate({
      framework: 'exec',
      prompt: '',
      options: { command: ['/usr/local/bin/node', '-e', OPENAI_CLI] },
    });
    const events = await collect(p.client, s.id);
    expect(finishOf(events)?.data).toMatchObject({
      status: 'succeeded',
      usage: { model: { calls: 1, promptTokens: 11, completionTokens: 3 } },
    });
    const out = events.filter((e) => e.type === 'LOG' && e.data.stream === 'stdout').map((e) => e.data.text);
    expect(out).toEqual(['status 200 key mgx-gateway answer hello from the model']);
    expect(fake.requests.map((r) => [r.authorization, r.body.model, r.body.stream ?? false])).toEqual([
      [`Bearer ${KEY}`, 'gpt-cli', false],
    ]);
    expect(modelCalls(events)).toEqual([expect.objectContaining({ status: 'ok', stream: false, promptTokens: 11, completionTokens: 3 })]);
  });
});

/** A TCP server inside the container that answers each line upper-cased; says "listening" once up. */
const UPPER_SERVER = String.raw`
require('net').createServer((s) => s.on('data', (d) => s.write(String(d).toUpperCase()))).listen(7357, '127.0.0.1', () => console.log('listening'));
setTimeout(() => process.exit(0), 60000);`;

describe('host to container streams', () => {
  it('dial reaches a port inside a container with network none, through the runner', async () => {
    const s = await p.client.sessions.create.mutate({
      framework: 'exec',
      prompt: '',
      options: { command: ['/usr/local/bin/node', '-e', UPPER_SERVER] },
    });
    for (;;) {
      const events = await storedEvents(p.client, s.id);
      if (events.some((e) => e.type === 'LOG' && e.data.text === 'listening')) break;
      if (events.some((e) => e.type === 'FINISH')) throw new Error('the session ended before its server listened');
      await new Promise((r) => setTimeout(r, 100));
    }
    const stream = await p.server.ingest.dial(s.id, 7357);
    stream.resume();
    const reply = await new Promise<string>((resolve) => {
      stream.once('data', (d: Buffer) => resolve(d.toString()));
      stream.write('through the socket');
    });
    expect(reply).toBe('THROUGH THE SOCKET');
    stream.destroy();
    await expect(p.server.ingest.dial(s.id, 7358)).rejects.toThrow(/ECONNREFUSED/);
    const info = await containerOf(s.id);
    expect(info.HostConfig.NetworkMode).toBe('none');
    await p.client.sessions.cancel.mutate({ sessionId: s.id });
    expect(finishOf(await collect(p.client, s.id))?.data).toMatchObject({ status: 'cancelled' });
  });
});

/** Asks HTTPS_PROXY to CONNECT to each target, then speaks HTTP through what it opened; prints one line per target. */
const THROUGH_PROXY = String.raw`
const net = require('net');
const proxy = new URL(process.env.HTTPS_PROXY);
const CRLF = String.fromCharCode(13, 10);
const via = (target) => new Promise((resolve) => {
  const s = net.connect(Number(proxy.port), proxy.hostname);
  let got = '';
  let tunnelled = false;
  s.on('data', (d) => {
    got += d;
    if (!tunnelled && got.includes(CRLF + CRLF)) {
      const status = got.split(CRLF)[0];
      if (!status.includes(' 200 ')) { s.destroy(); return resolve(target + ' -> ' + status); }
      tunnelled = true;
      got = '';
      s.write(['GET /hello HTTP/1.1', 'Host: x', 'Connection: close', '', ''].join(CRLF));
    }
  });
  s.on('close', () => { if (tunnelled) resolve(target + ' -> ' + got.split(CRLF + CRLF)[1]); });
  s.on('error', (e) => resolve(target + ' -> ' + e.code));
  s.write(['CONNECT ' + target + ' HTTP/1.1', 'Host: ' + target, '', ''].join(CRLF));
});
/** A plain http:// request through HTTP_PROXY (absolute-form), as curl or npm send it. */
const plain = (target) => new Promise((resolve) => {
  const s = net.connect(Number(proxy.port), proxy.hostname);
  let got = '';
  s.on('data', (d) => (got += d));
  s.on('close', () => resolve('http://' + target + ' -> ' + got.split(CRLF)[0] + ' ' + String(got.split(CRLF + CRLF)[1]).trim()));
  s.write(['GET http://' + target + '/plain HTTP/1.1', 'Host: ' + target, 'Connection: close', '', ''].join(CRLF));
});
(async () => {
  for (const t of process.argv.slice(1)) console.log(await via(t));
  console.log(await plain(process.argv[1]));
  console.log(await plain('blocked.example.com'));
})();`;

describe('egress by domain', () => {
  it('lets a session with network none reach an allowed host through the proxy, and refuses any other with EGRESS_DENIED', async () => {
    const s = await p.client.sessions.create.mutate({
      framework: 'exec',
      prompt: '',
      network: { allow: ['127.0.0.1'] },
      options: {
        command: ['/usr/local/bin/node', '-e', THROUGH_PROXY, `127.0.0.1:${sitePort}`, 'blocked.example.com:443', 'localhost:' + sitePort],
      },
    });
    expect(s.network).toBe('none');
    expect(s.limits.egressAllow).toEqual(['127.0.0.1']);
    const events = await collect(p.client, s.id);
    expect(finishOf(events)?.data).toMatchObject({ status: 'succeeded' });
    const out = events.filter((e) => e.type === 'LOG' && e.data.stream === 'stdout').map((e) => e.data.text);
    expect(out).toEqual([
      `127.0.0.1:${sitePort} -> reached /hello`,
      'blocked.example.com:443 -> HTTP/1.1 403 Forbidden',
      `localhost:${sitePort} -> HTTP/1.1 403 Forbidden`,
      `http://127.0.0.1:${sitePort} -> HTTP/1.1 200 OK reached /plain`,
      "http://blocked.example.com -> HTTP/1.1 403 Forbidden blocked.example.com is not on this session's egress allow-list",
    ]);
    expect(events.filter((e) => e.type === 'EGRESS_DENIED').map((e) => e.data)).toEqual([
      { host: 'blocked.example.com', port: 443, method: 'CONNECT' },
      { host: 'localhost', port: sitePort, method: 'CONNECT' },
      { host: 'blocked.example.com', port: 80, method: 'GET' },
    ]);
    const metrics = await (await fetch(`${p.server.url}/metrics`)).text();
    expect(metrics).toMatch(/mgx_egress_connections_total\{outcome="denied"\} [2-9]/);
  });

  it('refuses an allow-list the server does not grant, and gives a session without one no proxy', async () => {
    await expect(
      p.client.sessions.create.mutate({
        framework: 'exec',
        prompt: '',
        network: { allow: ['registry.npmjs.org'] },
        options: { command: ['true'] },
      }),
    ).rejects.toThrow(/MGX_EGRESS_ALLOW/);
    const s = await p.client.sessions.create.mutate({
      framework: 'exec',
      prompt: '',
      options: { command: ['/usr/local/bin/node', '-e', 'console.log(String(process.env.HTTPS_PROXY))'] },
    });
    const events = await collect(p.client, s.id);
    expect(events.filter((e) => e.type === 'LOG' && e.data.stream === 'stdout').map((e) => e.data.text)).toEqual(['undefined']);
  });
});
