// The fan-out bench's anchor: a raw Node SSE server, as lean as SSE gets (one serialization per
// burst, one write per subscriber), sending the same events in the same wire format as mgx's
// `sessions.streamBatches`, to the same readers. Subscribers GET /s/<session>; asked over IPC
// `{ sessions, bursts, count, size, sleepMs, at }`, it sends each session `bursts` bursts of
// `count` events from `at` on, `sleepMs` apart, then a FINISH and ends the streams.
import { createServer, type ServerResponse } from 'node:http';

interface Run {
  sessions: string[];
  bursts: number;
  count: number;
  size: number;
  sleepMs: number;
  at: number;
}

const subscribers = new Map<string, Set<ServerResponse>>();

const server = createServer((req, res) => {
  const id = /^\/s\/([\w-]+)$/.exec(req.url ?? '')?.[1];
  if (!id) return res.writeHead(404).end();
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache, no-transform', connection: 'keep-alive' });
  res.write('event: connected\ndata: {}\n\n\n');
  let set = subscribers.get(id);
  if (!set) subscribers.set(id, (set = new Set()));
  set.add(res);
  res.on('close', () => set.delete(res));
});

function send(id: string, text: string, end = false): void {
  const bytes = Buffer.from(text);
  for (const res of subscribers.get(id) ?? []) {
    res.write(bytes);
    if (end) res.end();
  }
}

async function run(r: Run): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, r.at - Date.now())));
  const pad = 'x'.repeat(r.size);
  let seq = 0;
  for (let b = 0; b < r.bursts; b++) {
    if (b > 0) await new Promise((resolve) => setTimeout(resolve, r.sleepMs));
    const first = seq;
    for (const id of r.sessions) {
      const events = [];
      for (let i = 0; i < r.count; i++) {
        events.push({ sessionId: id, seq: first + i + 1, type: 'LOG', ts: Date.now(), data: { stream: 'agent', text: pad, i: first + i } });
      }
      send(id, `data: ${JSON.stringify(events)}\nid: ${first + r.count}\n\n\n`);
    }
    seq += r.count;
  }
  for (const id of r.sessions) {
    const finish = [{ sessionId: id, seq: seq + 1, type: 'FINISH', ts: Date.now(), data: { status: 'succeeded' } }];
    send(id, `data: ${JSON.stringify(finish)}\nid: ${seq + 1}\n\n\nevent: return\ndata: \n\n\n`, true);
  }
}

server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  process.send?.({ port: typeof address === 'object' && address ? address.port : 0 });
});
process.on('message', (msg: Run) => {
  void run(msg).then(() => process.send?.({ sent: true }));
});
