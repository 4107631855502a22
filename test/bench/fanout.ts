// The SSE fan-out section of the bench: many subscribers of mgx's `sessions.streamBatches`, read
// by light readers in child processes (sse-reader.ts) so that the subscribers are not the
// bottleneck, against a raw Node SSE server (raw-sse-server.ts) with the same readers, the same
// events and the same subscribers, in the same run. Server CPU comes from /proc/<pid>/stat.
import { fork, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { createMgxClient } from '@mgx/client';
import { cpuMs, newServerProcess, ServerProcess } from '../support/server-process.js';
import { script } from '../support/sessions.js';
import { allRunning, go, GO } from './go.js';

export interface FanoutScenario {
  sessions: number;
  /** Subscribers of each session. */
  perSession: number;
  /** Each session sends `bursts` bursts of `count` events of `size` bytes, `sleepMs` apart. */
  bursts: number;
  count: number;
  size: number;
  sleepMs: number;
  /** Reader processes the subscribers are spread over. */
  readers: number;
}

export interface FanoutResult {
  /** Events received, summed over subscribers. */
  delivered: number;
  /** Events per SSE message received (a message carries one stored batch, or a burst for the raw server). */
  eventsPerMessage: number;
  p50Ms: number;
  p99Ms: number;
  /** Server CPU per event delivered to a subscriber, µs. */
  serverCpuUsPerEvent: number;
  /** The readers' CPU over the same window, % of one core. */
  readersCpuPct: number;
  windowMs: number;
}

interface ReaderDone {
  events: number;
  messages: number;
  histogram: Array<[number, number]>;
  cpuMs: number;
}

function tsxChild(file: string): ChildProcess {
  return fork(join(import.meta.dirname, file), { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
}

/** Reader processes, loaded (a slow host takes seconds to start them, so they start first). */
async function readerProcesses(n: number): Promise<ChildProcess[]> {
  const procs = Array.from({ length: n }, () => tsxChild('sse-reader.ts'));
  await Promise.all(procs.map((p) => new Promise<void>((resolve) => p.once('message', () => resolve()))));
  return procs;
}

/** Subscribers spread over the reader processes; resolves once every stream has its headers. */
async function startReaders(
  procs: ChildProcess[],
  urls: string[],
): Promise<{ measure: (from: number) => void; done: Promise<ReaderDone> }> {
  const connected = procs.map(
    (p, i) =>
      new Promise<void>((resolve, reject) => {
        p.once('message', (m: { connected?: number; error?: string }) => (m.error ? reject(new Error(m.error)) : resolve()));
        p.send({ urls: urls.filter((_, j) => j % procs.length === i) });
      }),
  );
  const done = procs.map(
    (p) =>
      new Promise<ReaderDone>((resolve, reject) => {
        p.on('message', (m: ReaderDone & { done?: boolean }) => {
          if (m.done) resolve(m);
        });
        p.once('exit', (code) => reject(new Error(`a reader exited with ${code}`)));
      }),
  );
  await Promise.all(connected);
  return {
    measure: (from) => procs.forEach((p) => p.connected && p.send({ from })),
    done: Promise.all(done).then((all) => {
      const histogram = new Map<number, number>();
      for (const r of all) for (const [ms, k] of r.histogram) histogram.set(ms, (histogram.get(ms) ?? 0) + k);
      return {
        events: all.reduce((s, r) => s + r.events, 0),
        messages: all.reduce((s, r) => s + r.messages, 0),
        histogram: [...histogram].sort((a, b) => a[0] - b[0]),
        cpuMs: all.reduce((s, r) => s + r.cpuMs, 0),
      };
    }),
  };
}

function percentile(histogram: Array<[number, number]>, p: number): number {
  const total = histogram.reduce((s, [, k]) => s + k, 0);
  let seen = 0;
  for (const [ms, k] of histogram) {
    seen += k;
    if (seen >= (p / 100) * total) return ms;
  }
  return Number.NaN;
}

function result(s: FanoutScenario, got: ReaderDone, serverMs: number, windowMs: number): FanoutResult {
  // nothing in the window: no figure rather than a flattering 0
  if (got.events === 0) {
    return {
      delivered: 0,
      eventsPerMessage: Number.NaN,
      p50Ms: Number.NaN,
      p99Ms: Number.NaN,
      serverCpuUsPerEvent: Number.NaN,
      readersCpuPct: Number.NaN,
      windowMs,
    };
  }
  return {
    delivered: got.events,
    eventsPerMessage: Math.round((got.events / Math.max(1, got.messages)) * 10) / 10,
    p50Ms: percentile(got.histogram, 50),
    p99Ms: percentile(got.histogram, 99),
    serverCpuUsPerEvent: Math.round((serverMs * 1000 * 100) / Math.max(1, got.events)) / 100,
    readersCpuPct: Math.round((got.cpuMs / Math.max(1, windowMs)) * 100),
    windowMs,
  };
}

/**
 * mgx: `s.sessions` scripted sessions on a server process, each sending its bursts once its go
 * file appears, written once every container runs and every subscriber is connected. The window
 * runs from then to every stream ended: server CPU over it ÷ events received in it, and the
 * delays of the bursts' events.
 */
export async function mgxFanout(s: FanoutScenario, log: (msg: string) => void): Promise<FanoutResult> {
  const { server: plain, dataDir } = await newServerProcess('mgx-bench-fanout', {
    MGX_LOG_LEVEL: 'error',
    AGENT_CONTAINER_MEMORY_LIMIT: '128m',
    AGENT_MAX_CONCURRENT_CONTAINERS: String(s.sessions),
    MGX_MAX_QUEUED_SESSIONS: String(s.sessions * 2),
    MGX_MAX_EVENTS_PER_SECOND: '0',
    // nothing but the sessions' events: no usage readings, no fallback poll
    MGX_USAGE_INTERVAL_SECONDS: '0',
    AGENT_MONITOR_POLL_SECONDS: '3600',
  });
  // MGX_BENCH_CPU_PROF=<dir>: the server writes a CPU profile there when it exits
  const profDir = process.env.MGX_BENCH_CPU_PROF;
  const server = profDir ? new ServerProcess(plain.env, ['--cpu-prof', `--cpu-prof-dir=${profDir}`]) : plain;
  // one after the other: on a busy host, starting both at once can keep the server from being ready in time
  const procs = await readerProcesses(s.readers);
  try {
    await server.start();
    const client = createMgxClient({ url: server.url });
    const steps: object[] = [];
    for (let b = 0; b < s.bursts; b++) steps.push(...(b > 0 ? [{ sleep: s.sleepMs }] : []), { events: { count: s.count, size: s.size } });
    // each session sends once its go file is in its workspace: when every container runs and every subscriber is connected
    const ids = await Promise.all(
      Array.from({ length: s.sessions }, () =>
        client.sessions.create.mutate({ framework: 'script', prompt: script({ wait_for: GO }, ...steps) }).then((x) => x.id),
      ),
    );
    const urls = ids.flatMap((id) =>
      Array.from(
        { length: s.perSession },
        () => `${server.url}/trpc/sessions.streamBatches?input=${encodeURIComponent(JSON.stringify({ sessionId: id }))}`,
      ),
    );
    const readers = await startReaders(procs, urls);
    await allRunning(client);
    log(`fan-out: ${urls.length} subscribers connected, ${s.sessions} session(s) running`);
    const pid = server.pid ?? 0;
    const cpu0 = cpuMs(pid);
    const t0 = Date.now();
    readers.measure(t0);
    go(dataDir, ids);
    const got = await readers.done;
    const serverMs = cpuMs(pid) - cpu0;
    return result(s, got, serverMs, Date.now() - t0);
  } finally {
    for (const p of procs) p.kill();
    await server.stop('SIGTERM');
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** The raw Node SSE server with the same readers and events. */
export async function rawFanout(s: FanoutScenario): Promise<FanoutResult> {
  const srv = tsxChild('raw-sse-server.ts');
  const procs = await readerProcesses(s.readers);
  try {
    const port = await new Promise<number>((resolve) => srv.once('message', (m: { port: number }) => resolve(m.port)));
    const sessions = Array.from({ length: s.sessions }, (_, i) => `s${i}`);
    const urls = sessions.flatMap((id) => Array.from({ length: s.perSession }, () => `http://127.0.0.1:${port}/s/${id}`));
    const readers = await startReaders(procs, urls);
    const pid = srv.pid ?? 0;
    const cpu0 = cpuMs(pid);
    const t0 = Date.now();
    readers.measure(t0);
    srv.send({ sessions, bursts: s.bursts, count: s.count, size: s.size, sleepMs: s.sleepMs, at: Date.now() + 500 });
    const got = await readers.done;
    return result(s, got, cpuMs(pid) - cpu0, Date.now() - t0);
  } finally {
    for (const p of procs) p.kill();
    srv.kill('SIGTERM');
  }
}

/**
 * Section 3 of the bench: 500 subscribers of one session, and 1,000 spread over many sessions
 * (100 in a full run, 20 in a quick one, which starts fewer containers), each against the raw
 * server with the same readers and events. `sse_server_cpu_us_per_event` and
 * `sse_fanout_p99_ms` are the worse of the two layouts.
 */
export async function fanoutSection(results: Record<string, number | string>, quick: boolean, log: (msg: string) => void): Promise<void> {
  const layouts: Array<[string, FanoutScenario]> = [
    ['one', { sessions: 1, perSession: 500, bursts: 30, count: 20, size: 100, sleepMs: 100, readers: 4 }],
    [
      'spread',
      quick
        ? { sessions: 20, perSession: 50, bursts: 30, count: 10, size: 100, sleepMs: 100, readers: 4 }
        : { sessions: 100, perSession: 10, bursts: 30, count: 10, size: 100, sleepMs: 100, readers: 4 },
    ],
  ];
  let cpu = 0;
  let p99 = 0;
  for (const [name, s] of layouts) {
    log(`fan-out: ${s.sessions * s.perSession} subscribers over ${s.sessions} session(s), raw Node SSE then mgx`);
    const raw = await rawFanout(s);
    const mgx = await mgxFanout(s, log);
    results[`sse_${name}_sessions`] = s.sessions;
    results[`sse_${name}_subscribers`] = s.sessions * s.perSession;
    results[`sse_${name}_delivered`] = mgx.delivered;
    results[`sse_${name}_events_per_message`] = mgx.eventsPerMessage;
    results[`sse_${name}_server_cpu_us_per_event`] = mgx.serverCpuUsPerEvent;
    results[`sse_${name}_fanout_p50_ms`] = mgx.p50Ms;
    results[`sse_${name}_fanout_p99_ms`] = mgx.p99Ms;
    results[`sse_${name}_readers_cpu_pct`] = mgx.readersCpuPct;
    results[`sse_${name}_raw_server_cpu_us_per_event`] = raw.serverCpuUsPerEvent;
    results[`sse_${name}_raw_fanout_p99_ms`] = raw.p99Ms;
    // NaN (an empty window) wins: the figure is then missing, not the other layout's
    cpu = Number.isNaN(cpu) || Number.isNaN(mgx.serverCpuUsPerEvent) ? Number.NaN : Math.max(cpu, mgx.serverCpuUsPerEvent);
    p99 = Number.isNaN(p99) || Number.isNaN(mgx.p99Ms) ? Number.NaN : Math.max(p99, mgx.p99Ms);
  }
  results.sse_server_cpu_us_per_event = cpu;
  results.sse_fanout_p99_ms = p99;
}
