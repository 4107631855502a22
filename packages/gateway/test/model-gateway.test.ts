import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, request } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SecretValue, type ModelProvider } from '@mgx/config';
import { noopMetrics } from '@mgx/metrics';
import { ModelGateway, type PlatformEvent } from '../src/index.js';

const KEY = 'sk-unit-0123456789abcdef';
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A provider that answers every call with `status` and `body`, recording what it got. */
async function provider(status: number, body: (auth: string | undefined) => string) {
  const seen: Array<{ auth: string | undefined; body: Record<string, unknown> }> = [];
  const server = createHttpServer((req, res) => {
    let raw = '';
    req.on('data', (c: Buffer) => (raw += String(c)));
    req.on('end', () => {
      seen.push({ auth: req.headers.authorization, body: JSON.parse(raw) as Record<string, unknown> });
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(body(req.headers.authorization));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  return { baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, seen };
}

/** A gateway serving session `s1` of tenant `acme` on a unix socket, as model.sock does. */
async function gateway(providers: ModelProvider[]) {
  const events: PlatformEvent[] = [];
  const exceeded: string[] = [];
  const gw = new ModelGateway({
    providers,
    metrics: noopMetrics,
    record: (_id, evs) => (events.push(...evs), Promise.resolve(true)),
    budgetExceeded: (_id, message) => exceeded.push(message),
  });
  gw.admit({ id: 's1', tenant: 'acme', maxModelCalls: 2 });
  const dir = mkdtempSync(join(tmpdir(), 'mgx-gateway-'));
  const socketPath = join(dir, 'model.sock');
  const server = createServer((socket) => gw.accept('s1', socket));
  await new Promise<void>((r) => server.listen(socketPath, r));
  cleanups.push(async () => {
    gw.close();
    await new Promise<void>((r) => server.close(() => r()));
    rmSync(dir, { recursive: true, force: true });
  });
  const call = (body: unknown, headers: Record<string, string> = {}) =>
    new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = request(
        { socketPath, path: '/v1/chat/completions', method: 'POST', headers: { 'content-type': 'application/json', ...headers } },
        (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += String(c)));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
        },
      );
      req.on('error', reject);
      req.end(JSON.stringify(body));
    });
  return { gw, events, exceeded, call };
}

const entry = (name: string, baseUrl: string, models: string[], tenants?: string[]): ModelProvider => ({
  name,
  baseUrl,
  models,
  ...(tenants ? { tenants } : {}),
  keySource: 'test',
  key: new SecretValue(KEY),
});

describe('the model gateway', () => {
  it('routes by provider/model, counts a JSON answer, and keeps the key out of an error the provider echoes it in', async () => {
    const ok = await provider(200, () =>
      JSON.stringify({ choices: [{ message: { content: 'hi' } }], usage: { prompt_tokens: 9, completion_tokens: 4 } }),
    );
    const bad = await provider(401, (auth) => JSON.stringify({ error: { message: `invalid key ${auth}` } }));
    const g = await gateway([
      entry('good', ok.baseUrl, ['m1']),
      entry('bad', bad.baseUrl, ['*']),
      entry('theirs', ok.baseUrl, ['*'], ['globex']),
    ]);
    expect(await g.call({ model: 'm1', messages: [] })).toMatchObject({ status: 200 });
    expect(ok.seen.map((s) => [s.auth, s.body.model])).toEqual([[`Bearer ${KEY}`, 'm1']]);
    const refused = await g.call({ model: 'bad/anything', messages: [] });
    expect(refused.status).toBe(401);
    expect(refused.text).toContain('invalid key Bearer [REDACTED]');
    expect(refused.text).not.toContain(KEY);
    // another tenant's provider is no provider at all
    expect((await g.call({ model: 'x' }, { 'x-mgx-provider': 'theirs' })).status).toBe(404);
    expect(g.gw.usage('s1')).toEqual({ calls: 2, promptTokens: 9, completionTokens: 4, refused: 1 });
    expect(g.events.map((e) => [e.type, e.data.provider, e.data.status, e.data.httpStatus])).toEqual([
      ['MODEL_CALL', 'good', 'ok', 200],
      ['MODEL_CALL', 'bad', 'error', 401],
      ['MODEL_CALL', 'theirs', 'refused', 404],
    ]);
    // the third call is over maxModelCalls: refused, and the session ends once
    expect((await g.call({ model: 'm1' })).status).toBe(429);
    expect((await g.call({ model: 'm1' })).status).toBe(429);
    expect(g.exceeded).toEqual(['the session used its 2 model calls (maxModelCalls)']);
    expect(ok.seen).toHaveLength(1);
    expect(JSON.stringify(g.events)).not.toContain(KEY);
  });

  it("records the session's totals with each call, and a session taken over carries them on against its budget", async () => {
    const ok = await provider(200, () =>
      JSON.stringify({ choices: [{ message: { content: 'hi' } }], usage: { prompt_tokens: 9, completion_tokens: 4 } }),
    );
    const g = await gateway([entry('good', ok.baseUrl, ['m1'])]);
    // the session made one call under the worker it had before (maxModelCalls is 2)
    g.gw.resume('s1', { calls: 1, promptTokens: 100, completionTokens: 50, refused: 0 });
    expect((await g.call({ model: 'm1', messages: [] })).status).toBe(200);
    expect(g.events.at(-1)?.data).toMatchObject({
      promptTokens: 9,
      total: { calls: 2, promptTokens: 109, completionTokens: 54, refused: 0 },
    });
    expect((await g.call({ model: 'm1', messages: [] })).status).toBe(429);
    expect(g.exceeded).toEqual(['the session used its 2 model calls (maxModelCalls)']);
    expect(g.gw.usage('s1')).toEqual({ calls: 2, promptTokens: 109, completionTokens: 54, refused: 1 });
    // an unknown session is left alone
    g.gw.resume('nobody', { calls: 5, promptTokens: 0, completionTokens: 0, refused: 0 });
    expect(g.gw.usage('nobody')).toBeUndefined();
  });
});
