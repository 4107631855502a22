import { get } from 'node:http';
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMgxClient, type MgxClient } from '@mgx/client';
import { collect, pausedReaders, script, streamUrl } from '../support/sessions.js';
import { newServerProcess, type ServerProcess } from '../support/server-process.js';

let server: ServerProcess;
let client: MgxClient;
let dataDir: string;
beforeAll(async () => {
  ({ server, dataDir } = await newServerProcess(
    'mgx-delivery',
    { MGX_LOG_LEVEL: 'warn', MGX_SSE_PING_SECONDS: '0.5', MGX_MAX_EVENTS_PER_SECOND: '0', AGENT_CONTAINER_MEMORY_LIMIT: '512m' },
    { memoryProbe: true },
  ));
  await server.start();
  client = createMgxClient({ url: server.url });
});
afterAll(async () => {
  await server?.stop('SIGTERM');
  rmSync(dataDir, { recursive: true, force: true });
});

describe('delivery to subscribers', () => {
  it('sends keep-alive pings on a quiet stream', async () => {
    const s = await client.sessions.create.mutate({ framework: 'script', prompt: script({ sleep: 2500 }) });
    const text = await new Promise<string>((resolve, reject) => {
      let body = '';
      get(streamUrl(server.url, s.id), (res) => {
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve(body));
      }).on('error', reject);
    });
    expect(text).toMatch(/event: ping/);
    expect(text.match(/event: ping/g)!.length).toBeGreaterThanOrEqual(2);
    expect(text).toMatch(/"type":"FINISH"/);
  });

  it('keeps server memory bounded with stalled subscribers, and the others get everything', async () => {
    const COUNT = 12_000;
    const STALLED = 5;
    /**
     * Server memory still reachable after a full GC once one reader has followed a 12 MB
     * session while `stalledReaders`, still connected, never read: what is buffered for them.
     */
    async function run(stalledReaders: number): Promise<number> {
      const s = await client.sessions.create.mutate({
        framework: 'script',
        prompt: script({ sleep: 1500 }, { events: { count: COUNT, size: 1000 } }),
        memory: '512m',
      });
      const stalled = await pausedReaders(server.url, s.id, stalledReaders);
      const events = await collect(client, s.id);
      const retained = await server.retainedMb();
      for (const res of stalled) res.destroy();
      expect(events.filter((e) => e.type === 'LOG' && typeof e.data.i === 'number')).toHaveLength(COUNT);
      expect(events.at(-1)?.data).toMatchObject({ status: 'succeeded' });
      return retained;
    }
    await run(0); // warm-up: JIT and caches, so the control compares like with like
    const control = await run(0);
    const withStalled = await run(STALLED);
    // buffering for the stalled readers would retain 12 MB each (60 MB)
    expect(withStalled - control).toBeLessThan(15);
  }, 240_000);
});
