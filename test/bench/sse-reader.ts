// A light SSE reader for the fan-out bench, run as a child process so that the subscribers are
// not the bottleneck nor share the bench's event loop: raw HTTP GETs of SSE URLs, lines split by
// hand, each event's creation stamp taken by a regular expression (no JSON parse, no tRPC client).
// It says `{ ready }` once loaded. Asked over IPC `{ urls }`, it answers `{ connected }` once every response has its headers; told
// `{ from }`, it counts from then on: events received, and the delays of the bursts' events
// created since; it answers `{ done, events, messages, histogram, cpuMs }` once every stream ended.
import { get, type IncomingMessage } from 'node:http';

interface Start {
  urls?: string[];
  from?: number;
}

/** Delays in 1 ms buckets up to a minute (the last bucket holds the rest). */
const histogram = new Uint32Array(60_001);
let events = 0;
let messages = 0;
let from = Number.POSITIVE_INFINITY;
let cpu0 = process.cpuUsage();
const TS = /"type":"([A-Z_]+)","ts":(\d+)/g;

function onData(line: string, at: number): void {
  if (at < from) return;
  messages++;
  TS.lastIndex = 0;
  for (let m = TS.exec(line); m; m = TS.exec(line)) {
    events++;
    // only the bursts' events made while measuring: not a backlog read at connect
    const ts = Number(m[2]);
    if (m[1] === 'LOG' && ts >= from) histogram[Math.min(60_000, Math.max(0, at - ts))]!++;
  }
}

function read(url: string): { headers: Promise<void>; ended: Promise<void> } {
  let headers: () => void = () => undefined;
  let failed: (err: Error) => void = () => undefined;
  const gotHeaders = new Promise<void>((resolve, reject) => {
    headers = resolve;
    failed = reject;
  });
  const ended = new Promise<void>((resolve) => {
    const req = get(url, { agent: false }, (res: IncomingMessage) => {
      if (res.statusCode !== 200) {
        failed(new Error(`GET ${url}: ${res.statusCode}`));
        res.resume();
        return;
      }
      headers();
      res.setEncoding('utf8');
      let rest = '';
      res.on('data', (chunk: string) => {
        const at = Date.now();
        const text = rest + chunk;
        let from = 0;
        for (let nl = text.indexOf('\n', from); nl >= 0; nl = text.indexOf('\n', from)) {
          if (text.startsWith('data: ', from)) onData(text.slice(from, nl), at);
          else if (text.startsWith('event: return', from)) req.destroy();
          from = nl + 1;
        }
        rest = text.slice(from);
      });
      res.on('close', () => resolve());
    });
    req.on('error', (err) => {
      failed(err);
      resolve();
    });
  });
  return { headers: gotHeaders, ended };
}

process.on('message', (msg: Start) => {
  if (msg.from !== undefined) {
    from = msg.from;
    cpu0 = process.cpuUsage();
  }
  if (!msg.urls) return;
  if (msg.urls.length === 0) process.exit(0);
  const streams = msg.urls.map(read);
  Promise.all(streams.map((s) => s.headers)).then(
    () => process.send?.({ connected: streams.length }),
    (err: Error) => process.send?.({ error: err.message }),
  );
  void Promise.all(streams.map((s) => s.ended)).then(() => {
    const cpu = process.cpuUsage(cpu0);
    const buckets: Array<[number, number]> = [];
    histogram.forEach((n, ms) => {
      if (n > 0) buckets.push([ms, n]);
    });
    process.send?.({ done: true, events, messages, histogram: buckets, cpuMs: (cpu.user + cpu.system) / 1000 }, () => process.exit(0));
  });
});
process.send?.({ ready: true });
