// `npm run bench`: the platform measured for real, side by side with raw Podman in the same
// run, so every ratio compares like with like. --quick for a short run, --json to end with
// one JSON object. Prints its results; --write (`npm run bench:write`) also writes them to
// test/bench/RESULTS.md.
import { setMaxListeners } from 'node:events';
import { readdirSync, readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, totalmem, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import Docker from 'dockerode';
import { createMgxClient, followSession, type MgxClient, type SessionEvent } from '@mgx/client';
import { discoverSocket, hardenedCreateOptions, LABELS } from '@mgx/runtime';
import { buildServer, cpuMs, freePort, newServerProcess, ServerProcess } from '../support/server-process.js';
import { fanoutSection } from './fanout.js';
import { collect, script, sleep, storedEvents } from '../support/sessions.js';
import { ingestSection } from './ingest.js';

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
    write: { type: 'boolean', default: false },
    // sections to run, comma-separated (all when absent): start,pool,finish,ingest,fanout,concurrency,cross,claim,rss,usage,load
    only: { type: 'string' },
  },
});
const only = args.only?.split(',').map((s) => s.trim());
const want = (section: string) => only === undefined || only.includes(section);
if (only && args.write) throw new Error('--write records a whole run: leave out --only');
const quick = args.quick === true;
// the server as it ships, from the current sources
buildServer();
const benchStart = Date.now();
const log = (msg: string) => process.stderr.write(`[bench] +${((Date.now() - benchStart) / 1000).toFixed(1)}s ${msg}\n`);

function pct(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}
const round = (n: number, d = 1) => Math.round(n * 10 ** d) / 10 ** d;

const address = discoverSocket({ containerHost: process.env.CONTAINER_HOST, dockerHost: process.env.DOCKER_HOST });
const docker = address.kind === 'unix' ? new Docker({ socketPath: address.path }) : new Docker({ host: address.host, port: address.port });
const IMAGE = process.env.AGENT_CONTAINER_IMAGE ?? 'mgx-agent:latest';

/** Removes the containers a server of the bench left behind, four at a time. */
async function removeOwned(owner: string): Promise<void> {
  const left = await docker.listContainers({ all: true, filters: { label: [`${LABELS.owner}=${owner}`] } });
  await Promise.all(
    Array.from({ length: 4 }, async (_, k) => {
      for (let i = k; i < left.length; i += 4)
        await docker
          .getContainer(left[i]!.Id)
          .remove({ force: true })
          .catch(() => null);
    }),
  );
}

/** Raw engine: create + start a container with the same image and hardening, until node prints. */
async function rawStart(runs: number): Promise<number[]> {
  const times: number[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'mgx-bench-raw-'));
  for (let i = 0; i < runs; i++) {
    const options = hardenedCreateOptions({
      name: `mgx-bench-raw-${randomBytes(5).toString('hex')}`,
      image: IMAGE,
      env: {},
      labels: { 'mgx.bench': 'raw' },
      user: '10001:10001',
      workingDir: '/workspace',
      mounts: [{ hostPath: dir, containerPath: '/workspace', readOnly: false }],
      memoryBytes: 256 * 1024 ** 2,
      cpuQuota: 100000,
      cpuPeriod: 100000,
      pidsLimit: 512,
      network: 'none',
      tmpfsBytes: 64 * 1024 ** 2,
    });
    const t0 = Date.now();
    const c = await docker.createContainer({
      ...options,
      Entrypoint: ['/sbin/tini', '-g', '--', '/usr/local/bin/node', '-e', 'console.log(Date.now())'],
    });
    await c.start();
    await c.wait();
    const out = (await c.logs({ stdout: true })).toString('latin1').replace(/[^\d]/g, '');
    times.push(Number(out) - t0);
    await c.remove({ force: true });
  }
  rmSync(dir, { recursive: true, force: true });
  return times;
}

/** The server as its own process, as in production; the bench is only its client. */
async function platform(
  env: Record<string, string>,
): Promise<{ server: ServerProcess; client: MgxClient; owner: string; close: () => Promise<void> }> {
  const { server, dataDir, owner } = await newServerProcess('mgx-bench', {
    MGX_LOG_LEVEL: 'error',
    AGENT_CONTAINER_MEMORY_LIMIT: '256m',
    ...env,
  });
  await server.start();
  return {
    server,
    owner,
    client: createMgxClient({ url: server.url }),
    close: async () => {
      await server.stop('SIGTERM');
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Waits for a session to end without streaming it (so the measurement is not the stream). */
async function settle(client: MgxClient, id: string): Promise<void> {
  for (;;) {
    const s = await client.sessions.get.query({ sessionId: id });
    if (['succeeded', 'failed', 'timed_out', 'cancelled'].includes(s.status) && s.lastSeq > 0) {
      const last = await client.sessions.events.query({ sessionId: id, afterSeq: s.lastSeq - 1, limit: 1 });
      if (last.events[0]?.type === 'FINISH') return;
    }
    await sleep(100);
  }
}

/**
 * A fleet on one host: an API process and `workers` worker processes (AGENT_MAX_CONCURRENT_CONTAINERS
 * 4 each, a workspace root each) on one SQLite file; `n` short sessions submitted at once through
 * the API process. Returns sessions started per second (submission of the first → the last
 * START), created → START of each session (the view has no claim time), and how many each
 * worker ran.
 */
async function claimThroughput(workers: number, n: number): Promise<{ perS: number; claimMs: number[]; ran: number[] }> {
  const env = {
    MGX_LOG_LEVEL: 'error',
    AGENT_CONTAINER_MEMORY_LIMIT: '256m',
    AGENT_MAX_CONCURRENT_CONTAINERS: '4',
    MGX_MAX_QUEUED_SESSIONS: String(n * 2),
  };
  const { server: api, dataDir } = await newServerProcess('mgx-bench-claim', { ...env, MGX_ROLE: 'api' });
  const owners = Array.from({ length: workers }, (_, i) => `mgx-bench-claim-w${i}-${randomBytes(4).toString('hex')}`);
  const procs: ServerProcess[] = [];
  for (const [i, owner] of owners.entries()) {
    procs.push(
      new ServerProcess({
        ...env,
        MGX_ROLE: 'worker',
        MGX_PORT: String(await freePort()),
        MGX_DATA_DIR: dataDir,
        MGX_OWNER: owner,
        MGX_WORKSPACE_ROOT: join(dataDir, `workspaces-${i}`),
      }),
    );
  }
  try {
    const tBoot = Date.now();
    await Promise.all([api.start(), ...procs.map((w) => w.start())]);
    const client = createMgxClient({ url: api.url });
    const t0 = Date.now();
    log(`claim: ${workers + 1} processes up in ${t0 - tBoot} ms`);
    const ids = await Promise.all(
      Array.from({ length: n }, () => client.sessions.create.mutate({ framework: 'script', prompt: 'hello' }).then((s) => s.id)),
    );
    // one list a quarter second, not a poll per session: the bench must not be the load
    for (;;) {
      const open = await client.sessions.list.query({ status: ['queued', 'starting', 'running'], limit: 1 });
      if (open.items.length === 0) break;
      await sleep(250);
    }
    log(`claim: all ended after ${Date.now() - t0} ms`);
    for (const id of ids) await settle(client, id);
    const claimMs: number[] = [];
    const ran = owners.map(() => 0);
    let lastStart = 0;
    for (const id of ids) {
      const s = await client.sessions.get.query({ sessionId: id });
      const start = (await storedEvents(client, id)).find((e) => e.type === 'START');
      if (!start || s.status !== 'succeeded') throw new Error(`claim throughput: session ${id} ended ${s.status} without a START`);
      claimMs.push(start.ts - s.createdAt);
      lastStart = Math.max(lastStart, start.ts);
      ran[owners.indexOf(s.workerId ?? '')]! += 1;
    }
    return { perS: (n / Math.max(1, lastStart - t0)) * 1000, claimMs, ran };
  } finally {
    await Promise.all([api, ...procs].map((p) => p.stop('SIGTERM').catch(() => null)));
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/**
 * Where a start's time goes: each step's p50 in ms after sessions.create was sent. `queued`:
 * the session stored; `running`: CONTAINER_STARTED stored (claim, create, start, mark running);
 * `exec`: the runner's process began (START's ts less its uptimeMs); `START`: the runner emitted
 * START; `received`: START reached the client following the session.
 */
class StartSteps {
  readonly #steps = new Map<string, number[]>();
  #push(step: string, ms: number): void {
    if (!Number.isFinite(ms)) return;
    const list = this.#steps.get(step) ?? [];
    list.push(ms);
    this.#steps.set(step, list);
  }
  add(t0: number, createdAt: number, events: SessionEvent[], received: number | undefined): void {
    const start = events.find((e) => e.type === 'START');
    const running = events.find((e) => e.type === 'CONTAINER_STARTED');
    this.#push('queued', createdAt - t0);
    if (running) this.#push('running', running.ts - t0);
    if (start && typeof start.data.uptimeMs === 'number') this.#push('exec', start.ts - start.data.uptimeMs - t0);
    if (start) this.#push('START', start.ts - t0);
    if (received !== undefined) this.#push('received', received - t0);
  }
  summary(): string {
    return [...this.#steps].map(([step, ms]) => `${step} ${pct(ms, 50)}`).join(' / ');
  }
}

/** A session's events through the subscription until FINISH, with when START arrived. */
async function followTimed(client: MgxClient, id: string): Promise<{ events: SessionEvent[]; received: number | undefined }> {
  const events: SessionEvent[] = [];
  let received: number | undefined;
  for await (const ev of followSession(client, id)) {
    if (ev.type === 'START') received = Date.now();
    events.push(ev);
  }
  return { events, received };
}

const results: Record<string, number | string> = {};
const started = Date.now();

// 1. start overhead and FINISH detection, sequential sessions
if (want('start')) {
  const runs = quick ? 6 : 25;
  log(`raw engine: ${runs} × create + start + node prints`);
  await rawStart(2); // warm the image cache
  const raw = await rawStart(runs);
  const p = await platform({ AGENT_MAX_CONCURRENT_CONTAINERS: '4' });
  log(`platform: ${runs} × sessions.create → START`);
  const toStart: number[] = [];
  const detect: number[] = [];
  const steps = new StartSteps();
  for (let i = 0; i < runs + 2; i++) {
    const t0 = Date.now();
    const s = await p.client.sessions.create.mutate({ framework: 'script', prompt: 'hello' });
    const { events, received } = await followTimed(p.client, s.id);
    const start = events.find((e) => e.type === 'START');
    const finish = events.at(-1)!;
    const session = await p.client.sessions.get.query({ sessionId: s.id });
    if (i < 2) continue; // warm-up
    if (start) toStart.push(start.ts - t0);
    steps.add(t0, session.createdAt, events, received);
    if (typeof finish.data.reportedAt === 'number' && session.endedAt) detect.push(session.endedAt - finish.data.reportedAt);
  }
  await p.close();
  results.raw_start_ms_p50 = pct(raw, 50);
  results.create_to_start_ms_p50 = pct(toStart, 50);
  results.start_overhead_ratio = round(pct(toStart, 50) / pct(raw, 50), 2);
  results.start_steps_ms_p50 = steps.summary();
  results.finish_detect_ms_p50 = pct(detect, 50);
  results.finish_detect_ms_p99 = pct(detect, 99);
}

// 1b. the same sessions on a warm pool: started containers waiting for their session
if (want('pool')) {
  const runs = quick ? 6 : 25;
  const p = await platform({ AGENT_MAX_CONCURRENT_CONTAINERS: '4', MGX_WARM_POOL_SIZE: '2' });
  const metric = async (name: string): Promise<number> => {
    const text = await fetch(`${p.server.url}/metrics`).then((r) => r.text());
    return text
      .split('\n')
      .filter((l) => l.startsWith(name))
      .reduce((sum, l) => sum + Number(l.split(' ').at(-1)), 0);
  };
  /** Steady state: the pool topped up again (and its runners booted) before the next session. */
  const poolFull = async () => {
    const deadline = Date.now() + 30_000;
    while ((await metric('mgx_warm_pool_ready')) < 2) {
      if (Date.now() > deadline) throw new Error('the warm pool did not fill within 30 s');
      await sleep(50);
    }
    await sleep(200);
  };
  log(`warm pool (2 ready): ${runs} × sessions.create → START`);
  const toStart: number[] = [];
  const steps = new StartSteps();
  for (let i = 0; i < runs + 1; i++) {
    await poolFull();
    const t0 = Date.now();
    const s = await p.client.sessions.create.mutate({ framework: 'script', prompt: 'hello' });
    const { events, received } = await followTimed(p.client, s.id);
    const start = events.find((e) => e.type === 'START');
    if (i < 1) continue; // warm-up
    if (start) toStart.push(start.ts - t0);
    steps.add(t0, (await p.client.sessions.get.query({ sessionId: s.id })).createdAt, events, received);
  }
  results.pool_hits = await metric('mgx_warm_pool_hits_total');
  results.pool_misses = await metric('mgx_warm_pool_misses_total');
  await p.close();
  results.pool_create_to_start_ms_p50 = pct(toStart, 50);
  results.pool_create_to_start_ms_p95 = pct(toStart, 95);
  results.pool_start_steps_ms_p50 = steps.summary();
}

/**
 * The agent sending FINISH → a client following the session (the tRPC subscription, here)
 * receiving it: the end of a session as a client sees it. The send time is the runner's own
 * stamp, kept in the stored FINISH as `reportedAt`; the follower is live before the agent ends.
 */
async function finishVisible(runs: number): Promise<number[]> {
  const p = await platform({ AGENT_MAX_CONCURRENT_CONTAINERS: '4' });
  const delays: number[] = [];
  for (let i = 0; i < runs + 2; i++) {
    const s = await p.client.sessions.create.mutate({ framework: 'script', prompt: script({ say: 'up' }, { sleep: 300 }) });
    let finish: SessionEvent | undefined;
    let receivedAt = 0;
    for await (const ev of followSession(p.client, s.id)) {
      if (ev.type !== 'FINISH') continue;
      receivedAt = Date.now();
      finish = ev;
    }
    if (i < 2) continue; // warm-up
    if (typeof finish?.data.reportedAt !== 'number') throw new Error(`session ${s.id}: FINISH without the agent's reportedAt`);
    delays.push(receivedAt - finish.data.reportedAt);
  }
  await p.close();
  return delays;
}

// 1c. the end of a session as a following client sees it
if (want('finish')) {
  const runs = quick ? 8 : 30;
  log(`finish visible: ${runs} × agent FINISH → a follower receives FINISH`);
  const delays = await finishVisible(runs);
  results.finish_visible_ms_p50 = pct(delays, 50);
  results.finish_visible_ms_p99 = pct(delays, 99);
}

// 2. ingest throughput: 10 sessions at once, as fast as they can, into SQLite
if (want('ingest')) Object.assign(results, await ingestSection(quick));

// 3. SSE fan-out: 500 subscribers of one session, 1,000 over many, against a raw Node SSE server
if (want('fanout')) await fanoutSection(results, quick, log);

// 4. concurrency held, counted by the engine
if (want('concurrency')) {
  const limit = 4;
  const n = quick ? 12 : 40;
  log(`concurrency: ${n} sessions, limit ${limit}, sampled from the engine`);
  const p = await platform({ AGENT_MAX_CONCURRENT_CONTAINERS: String(limit) });
  const owner = p.owner;
  const ids = await Promise.all(
    Array.from({ length: n }, () =>
      p.client.sessions.create.mutate({ framework: 'script', prompt: script({ sleep: 300 }) }).then((s) => s.id),
    ),
  );
  let done = false;
  let most = 0;
  let exceeded = 0;
  let samples = 0;
  const sampler = (async () => {
    while (!done) {
      const running = (await docker.listContainers({ filters: { label: [`${LABELS.owner}=${owner}`], status: ['running'] } })).length;
      most = Math.max(most, running);
      if (running > limit) exceeded++;
      samples++;
      await sleep(20);
    }
  })();
  await Promise.all(ids.map((id) => collect(p.client, id)));
  done = true;
  await sampler;
  await p.close();
  results.concurrency_limit = limit;
  results.concurrency_max_seen = most;
  results.concurrency_samples = samples;
  results.concurrency_exceeded = exceeded;
}

// 4b. across processes: an API process and a worker process on one SQLite file, the client on
// the API process. Cancel: sessions.cancel sent → FINISH cancelled received by a follower (and →
// the CANCELLED decision stored, by its ts). Tail: the agent emits an event → the follower
// receives it through the API process, which learns of the worker's writes from the store.
if (want('cross')) {
  const n = quick ? 6 : 20;
  log(`cross-process: API process + worker process, ${n} cancels and one followed session`);
  const env = { MGX_LOG_LEVEL: 'error', AGENT_CONTAINER_MEMORY_LIMIT: '256m', MGX_MAX_EVENTS_PER_SECOND: '0' };
  const { server: api, dataDir } = await newServerProcess('mgx-bench-xproc', { ...env, MGX_ROLE: 'api' });
  const worker = new ServerProcess({
    ...env,
    MGX_ROLE: 'worker',
    MGX_PORT: String(await freePort()),
    MGX_DATA_DIR: dataDir,
    MGX_OWNER: `mgx-bench-xproc-worker-${randomBytes(4).toString('hex')}`,
    AGENT_MAX_CONCURRENT_CONTAINERS: String(n + 1),
  });
  await Promise.all([api.start(), worker.start()]);
  const client = createMgxClient({ url: api.url });

  // the tail first, alone: small bursts with pauses, so each event meets an idle tail or a busy one
  const steps = [];
  for (let i = 0; i < (quick ? 60 : 200); i++) steps.push({ events: { count: 5, size: 100 } }, { sleep: 30 });
  const tailed = await client.sessions.create.mutate({ framework: 'script', prompt: script({ sleep: 500 }, ...steps) });
  const tailDelays: number[] = [];
  for await (const ev of followSession(client, tailed.id))
    if (ev.type === 'LOG' && typeof ev.data.i === 'number') tailDelays.push(Date.now() - ev.ts);

  // then the cancels, one at a time, of sessions all running on the worker
  const ids = await Promise.all(
    Array.from({ length: n }, () =>
      client.sessions.create.mutate({ framework: 'script', prompt: script({ say: 'up' }, { sleep: 600_000 }) }).then((s) => s.id),
    ),
  );
  const followers = ids.map((id) => {
    let up: () => void = () => undefined;
    const isUp = new Promise<void>((r) => (up = r));
    let finished: (t: number) => void = () => undefined;
    const finish = new Promise<number>((r) => (finished = r));
    const events = (async () => {
      const out: SessionEvent[] = [];
      for await (const ev of followSession(client, id)) {
        out.push(ev);
        if (ev.type === 'MESSAGE' && ev.data.text === 'up') up();
        if (ev.type === 'FINISH') finished(Date.now());
      }
      return out;
    })();
    return { id, isUp, finish, events };
  });
  await Promise.all(followers.map((f) => f.isUp));
  const toFinish: number[] = [];
  const toDecision: number[] = [];
  for (const f of followers) {
    const t0 = Date.now();
    await client.sessions.cancel.mutate({ sessionId: f.id });
    toFinish.push((await f.finish) - t0);
    const events = await f.events;
    const cancelled = events.find((e) => e.type === 'CANCELLED');
    if (events.at(-1)?.data.status !== 'cancelled' || !cancelled) throw new Error(`session ${f.id} did not end cancelled`);
    toDecision.push(cancelled.ts - t0);
  }
  await api.stop('SIGTERM');
  await worker.stop('SIGTERM');
  rmSync(dataDir, { recursive: true, force: true });
  results.cross_process_cancel_ms_p50 = pct(toFinish, 50);
  results.cross_process_cancel_ms_p99 = pct(toFinish, 99);
  results.cross_process_cancel_decided_ms_p99 = pct(toDecision, 99);
  results.cross_process_tail_events = tailDelays.length;
  results.cross_process_tail_ms_p50 = pct(tailDelays, 50);
  results.cross_process_tail_ms_p99 = pct(tailDelays, 99);
}

// 4c. claim throughput of a fleet: an API process and two worker processes on one SQLite file,
// against one worker process with the same slots each, measured in the same run.
if (want('claim')) {
  const n = quick ? 6 : 200; // --quick stays under 3 minutes
  log(`claim throughput: ${n} sessions at once, one worker process, then two`);
  const one = await claimThroughput(1, n);
  const two = await claimThroughput(2, n);
  results.claim_sessions = n;
  results.claim_one_worker_sessions_per_s = round(one.perS, 1);
  results.claim_one_worker_claim_ms_p50 = pct(one.claimMs, 50);
  results.claim_two_workers_sessions_per_s = round(two.perS, 1);
  results.claim_two_workers_claim_ms_p50 = pct(two.claimMs, 50);
  results.claim_two_workers_claim_ms_p99 = pct(two.claimMs, 99);
  results.claim_two_workers_ran = two.ran.join('/');
}

/** What one window of the idle-load run measured, with `sessions` running. */
interface LoadStep {
  sessions: number;
  rssMb: number;
  /** The server's event-loop delay p99 over the window, less prom-client's 10 ms sampling resolution. */
  lagMsP99: number;
  getMsP99: number;
  getMsP50: number;
}

/**
 * One server (its own process, SQLite) and sessions that only sleep, each followed by a client
 * (the tRPC subscription), added in steps up to `steps.at(-1)`. At 0 and after each step, over
 * `windowMs`: the server's RSS, its event-loop delay p99 (prom-client's monitor, reset by the
 * scrape that opens the window) and `sessions.get` as a client sees it (one call after another).
 * Also what each running session costs the host: its container's memory (the engine's reading,
 * a few containers) and the host's MemAvailable drop per session.
 */
async function idleLoad(steps: number[], windowMs: number) {
  const top = steps.at(-1) ?? 0;
  const { server, dataDir, owner } = await newServerProcess('mgx-bench-load', {
    MGX_LOG_LEVEL: 'error',
    AGENT_MAX_CONCURRENT_CONTAINERS: String(top),
    AGENT_CONTAINER_MEMORY_LIMIT: '128m',
  });
  await server.start();
  const client = createMgxClient({ url: server.url });
  const rssMb = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${server.pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
  const availableMb = () => Number(/MemAvailable:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0) / 1024;
  const lagP99 = async () => {
    const text = await fetch(`${server.url}/metrics`).then((r) => r.text());
    return Number(/^mgx_nodejs_eventloop_lag_p99_seconds (\S+)$/m.exec(text)?.[1] ?? Number.NaN) * 1000;
  };
  const running = async () => (await client.sessions.list.query({ status: ['running'], limit: 200 })).items.length;
  const ids: string[] = [];
  const window = async (): Promise<LoadStep> => {
    await lagP99(); // the scrape resets the monitor's histogram: the window starts here
    const times: number[] = [];
    const until = Date.now() + windowMs;
    for (let i = 0; Date.now() < until; i++) {
      const t0 = performance.now();
      await client.sessions.get.query({ sessionId: ids[i % Math.max(1, ids.length)] ?? warm.id });
      times.push(performance.now() - t0);
      await sleep(25);
    }
    const lag = await lagP99();
    return {
      sessions: ids.length,
      rssMb: round(rssMb(), 0),
      lagMsP99: round(Math.max(0, lag - 10), 1),
      getMsP99: round(pct(times, 99), 1),
      getMsP50: round(pct(times, 50), 1),
    };
  };
  // one session end to end first, so what a session loads lazily is loaded
  const warm = await client.sessions.create.mutate({ framework: 'script', prompt: 'hello' });
  await collect(client, warm.id);
  await sleep(quick ? 1000 : 2000);
  const out: LoadStep[] = [await window()];
  const ac = new AbortController();
  setMaxListeners(0, ac.signal); // one listener per follower
  const followers: Array<Promise<unknown>> = [];
  const hostBefore = availableMb();
  let ran = 0;
  for (const n of steps) {
    log(`idle load: ${n} sleeping sessions, each followed`);
    const more = await Promise.all(
      Array.from({ length: n - ids.length }, () =>
        client.sessions.create.mutate({ framework: 'script', prompt: script({ sleep: 3_600_000 }) }).then((x) => x.id),
      ),
    );
    for (const id of more) {
      followers.push(
        (async () => {
          for await (const ev of followSession(client, id, { signal: ac.signal })) if (ev.type === 'FINISH') break;
        })().catch(() => null),
      );
    }
    ids.push(...more);
    // all of them up (or as many as this host starts within 4 minutes)
    const deadline = Date.now() + 240_000;
    while ((ran = await running()) < n && Date.now() < deadline) {
      if (server.child?.exitCode !== null || server.child.signalCode !== null) throw new Error('idle load: the server process ended');
      await sleep(1000);
    }
    if (ran < n) log(`idle load: only ${ran} of ${n} sessions running after 4 minutes`);
    await sleep(quick ? 1500 : 3000);
    out.push({ ...(await window()), sessions: ran });
  }
  const hostMbPerSession = (hostBefore - availableMb()) / Math.max(1, ran);
  // the engine's reading of a few of the containers
  const containers = await docker.listContainers({ filters: { label: [`${LABELS.owner}=${owner}`], status: ['running'] } });
  const containerMb: number[] = [];
  for (const c of containers.slice(0, 5)) {
    const st = (await docker.getContainer(c.Id).stats({ stream: false })) as unknown as {
      memory_stats?: { usage?: number; stats?: Record<string, number> };
    };
    const m = st.memory_stats;
    if (m?.usage) containerMb.push((m.usage - (m.stats?.total_inactive_file ?? m.stats?.inactive_file ?? 0)) / 2 ** 20);
  }
  ac.abort();
  // the containers go with the server: stopped (it leaves running sessions to its next start), then removed here
  await server.stop('SIGTERM');
  await removeOwned(owner);
  rmSync(dataDir, { recursive: true, force: true });
  return {
    steps: out,
    hostMbPerSession,
    containerMb: containerMb.length > 0 ? containerMb.reduce((a, b) => a + b) / containerMb.length : Number.NaN,
  };
}

// 5. the server under idle load: memory per running session, event-loop delay and sessions.get
// latency with many sessions running (sleeping), each followed by a client
if (want('load') || want('rss')) {
  const steps = quick ? [50] : [50, 100, 200];
  const load = await idleLoad(steps, quick ? 5_000 : 20_000);
  const [idle, ...loaded] = load.steps;
  const at100 = loaded.find((s) => s.sessions >= 100) ?? loaded.at(-1);
  const last = loaded.at(-1);
  log(`idle load: ${JSON.stringify(load.steps)}`);
  if (idle && at100 && last) {
    results.rss_sessions = at100.sessions;
    results.server_rss_mb = at100.rssMb;
    results.server_rss_idle_mb = idle.rssMb;
    // the slope from the first step (idle, when there is one step) to the last: what one more running session costs the server
    const first = loaded.length > 1 ? loaded[0]! : idle;
    results.server_mb_per_session = round((last.rssMb - first.rssMb) / Math.max(1, last.sessions - first.sessions), 2);
    results.idle_sessions = last.sessions;
    results.loop_lag_ms_p99 = last.lagMsP99;
    results.loop_lag_idle_ms_p99 = idle.lagMsP99;
    results.api_get_ms_p99 = last.getMsP99;
    results.api_get_ms_p50 = last.getMsP50;
    results.api_get_idle_ms_p99 = idle.getMsP99;
    results.container_mb = round(load.containerMb, 1);
    results.host_mb_per_session = round(load.hostMbPerSession, 1);
  }
}

// 6. what sampling usage costs the server: its CPU while only sampling happens (sessions asleep,
// the fallback poll off), with sampling at 10 readings per second, less the same without sampling
if (want('usage')) {
  const n = quick ? 5 : 50;
  const intervalS = quick ? 1 : 5;
  const windowMs = quick ? 5_000 : 30_000;
  log(`usage sampling: server CPU with ${n} sleeping sessions read every ${intervalS} s, against none read`);
  const readingsOf = async (url: string) => {
    const text = await (await fetch(`${url}/metrics`)).text();
    return Number(/^mgx_usage_readings_total (\S+)$/m.exec(text)?.[1] ?? 0);
  };
  // the engine's own service, when it is one process here (Podman's API service)
  const enginePid = () => {
    for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
      try {
        if (/podman\0system\0service/.test(readFileSync(`/proc/${pid}/cmdline`, 'latin1'))) return Number(pid);
      } catch {
        // gone meanwhile
      }
    }
    return undefined;
  };
  const measure = async (usageIntervalS: number) => {
    const { server, dataDir, owner } = await newServerProcess('mgx-bench-usage', {
      MGX_LOG_LEVEL: 'error',
      AGENT_MAX_CONCURRENT_CONTAINERS: String(n),
      AGENT_CONTAINER_MEMORY_LIMIT: '128m',
      AGENT_MONITOR_POLL_SECONDS: '3600',
      MGX_USAGE_INTERVAL_SECONDS: String(usageIntervalS),
    });
    await server.start();
    const client = createMgxClient({ url: server.url });
    await Promise.all(
      Array.from({ length: n }, () => client.sessions.create.mutate({ framework: 'script', prompt: script({ sleep: 600_000 }) })),
    );
    const running = async () => (await client.sessions.list.query({ status: ['running'], limit: 200 })).items.length;
    while ((await running()) < n) await sleep(500);
    // the starts' own work done, a few readings taken
    await sleep(quick ? 1500 : 3000);
    const engine = enginePid();
    const [cpu0, e0, r0] = [cpuMs(server.pid!), engine ? cpuMs(engine) : 0, await readingsOf(server.url)];
    await sleep(windowMs);
    const [cpu1, e1, r1] = [cpuMs(server.pid!), engine ? cpuMs(engine) : 0, await readingsOf(server.url)];
    // the containers go with the server: stopped (it leaves running sessions to its next start), then removed here
    await server.stop('SIGTERM');
    await removeOwned(owner);
    rmSync(dataDir, { recursive: true, force: true });
    return { cpuMs: cpu1 - cpu0, engineMs: engine ? e1 - e0 : Number.NaN, readings: r1 - r0 };
  };
  const off = await measure(0);
  const on = await measure(intervalS);
  const perReadingMs = Math.max(0, on.cpuMs - off.cpuMs) / Math.max(1, on.readings);
  results.usage_sessions = n;
  results.usage_readings_per_s = round(on.readings / (windowMs / 1000), 1);
  results.usage_server_cpu_ms_per_reading = round(perReadingMs, 2);
  results.usage_engine_cpu_ms_per_reading = round(Math.max(0, on.engineMs - off.engineMs) / Math.max(1, on.readings), 1);
  // 50 sessions read every 5 s: 10 readings a second
  results.usage_server_cpu_pct_50_sessions_5s = round((10 * perReadingMs) / 10, 2);
}

results.duration_s = Math.round((Date.now() - started) / 1000);
results.mode = quick ? 'quick' : 'full';

// report
const targets: Array<[string, string, (v: number) => boolean]> = [
  ['start_overhead_ratio', '≤ 1.25', (v) => v <= 1.25],
  ['pool_create_to_start_ms_p50', '< 50', (v) => v < 50],
  ['finish_detect_ms_p99', '≤ 50', (v) => v <= 50],
  ['finish_visible_ms_p50', '≤ 30', (v) => v <= 30],
  ['finish_visible_ms_p99', '≤ 100', (v) => v <= 100],
  ['ingest_events_per_s', '≥ 100000', (v) => v >= 100000],
  ['events_lost', '0', (v) => v === 0],
  ['sse_server_cpu_us_per_event', '≤ 3', (v) => v <= 3],
  ['concurrency_exceeded', '0', (v) => v === 0],
  ['server_rss_mb', '≤ 150', (v) => v <= 150],
  ['loop_lag_ms_p99', '≤ 20', (v) => v <= 20],
  ['api_get_ms_p99', '≤ 50', (v) => v <= 50],
  ['cross_process_cancel_ms_p99', '≤ 500', (v) => v <= 500],
  ['cross_process_tail_ms_p99', '≤ 250', (v) => v <= 250],
  ['usage_server_cpu_pct_50_sessions_5s', '< 2', (v) => v < 2],
];
const engine = (await docker.version()) as unknown as { Version: string; Components?: Array<{ Name: string; Version: string }> };
const engineName = engine.Components?.find((c) => /podman/i.test(c.Name)) ? `podman ${engine.Version}` : `docker ${engine.Version}`;
const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / 1024 ** 3)} GiB, Linux ${release()}, ${engineName}, Node ${process.version}`;
const rows = Object.entries(results).map(([k, v]) => {
  const t = targets.find(([name]) => name === k);
  const verdict = t && typeof v === 'number' ? (t[2](v) ? `met (${t[1]})` : `missed (${t[1]})`) : '';
  return `| ${k} | ${v} | ${verdict} |`;
});
const md = `# Benchmark results

Generated by \`npm run bench:write${quick ? ' -- --quick' : ''}\` on ${new Date().toISOString()}.

Machine: ${machine}.

Raw engine and platform are measured in the same run with the same image and hardening.
\`start_overhead_ratio\` = sessions.create → START p50 ÷ raw create + start → first output p50.
\`pool_create_to_start_ms\` = sessions.create → START with MGX_WARM_POOL_SIZE=2, the pool topped up between sessions.
\`finish_detect_ms\` = the agent sending FINISH → the session terminal in the store (socket, batching, compare-and-set).
\`finish_visible_ms\` = the agent sending FINISH (its own stamp, \`reportedAt\`) → FINISH received by a client following the session (teardown included: exit, logs, FINISH stored; the container's removal is not on this path).
\`ingest_events_per_s\` = events stored per second from 10 agents writing at once into SQLite: the first LOG's emission by its runner → the last one stored (read from the store file beside the server); \`ingest_server_cpu_*\` = the server process's CPU (all its threads) over that window; \`ingest_raw_sqlite_rows_per_s\` = the same rows inserted with better-sqlite3 directly, 500 a transaction, in the same run (the anchor).
\`sse_{one,spread}_*\` = subscribers of \`sessions.streamBatches\` read by light SSE readers in 4 child processes (raw HTTP, a regular expression per message; \`readers_cpu_pct\`: their CPU, % of one core): 500 on one session (\`one\`), 1,000 spread over ${results.sse_spread_sessions} sessions (\`spread\`), each session sending bursts of events 100 ms apart. \`server_cpu_us_per_event\` = the server's CPU (/proc/<pid>/stat) from every session running and every subscriber connected to every stream ended ÷ events received by the subscribers in that time; \`fanout_*_ms\` = event created in the container → received by a reader. \`raw_*\` = a raw Node SSE server (one serialization per burst, one write per subscriber) with the same readers, events and layout, in the same run. \`sse_server_cpu_us_per_event\` and \`sse_fanout_p99_ms\` = the worse of the two layouts.
\`cross_process_cancel_ms\` = an API process and a worker process on one SQLite file: sessions.cancel sent to the API process → FINISH cancelled received by a client following there (\`cross_process_cancel_decided_ms\`: → the CANCELLED decision stored by the worker).
\`cross_process_tail_ms\` = the same two processes: event created in the container on the worker → received by a client following through the API process.
\`claim_two_workers_sessions_per_s\` = an API process and two worker processes (4 slots each) on one SQLite file, ${results.claim_sessions} short sessions submitted at once through the API process: sessions started per second across the fleet (submission → the last START); \`claim_two_workers_claim_ms\` = each session's creation → its START (queue wait, claim, container start); \`claim_two_workers_ran\` = how many each worker ran. \`claim_one_worker_*\` = the same sessions on one worker process, the anchor.
\`usage_server_cpu_ms_per_reading\` = the server's CPU (utime + stime) over a window in which only usage sampling works (${results.usage_sessions} sessions asleep, the fallback poll off), less the same window of a server that does not sample, per stats reading (\`usage_engine_cpu_ms_per_reading\`: the same for Podman's API service, which answers them); \`usage_server_cpu_pct_50_sessions_5s\` = that cost for 50 sessions read every 5 s (MGX_USAGE_INTERVAL_SECONDS default), in % of one core.
\`server_rss_mb\` = resident memory of the server process (its bundle, as it ships, on plain node) with ${results.rss_sessions} sessions running, asleep, each followed by a client (\`server_rss_idle_mb\`: none); \`server_mb_per_session\` = its growth per additional running session (the slope between the first and last step; from idle in a quick run).
\`loop_lag_ms_p99\` = the server's event-loop delay p99 (prom-client's monitor, less its 10 ms resolution) over a window with \`idle_sessions\` sessions running, asleep and followed; \`api_get_ms_p99\` = \`sessions.get\` round trips from a client in the same window; \`*_idle_*\` = the same with none running. \`container_mb\` = one idle session's container memory as the engine reads it; \`host_mb_per_session\` = the host's MemAvailable drop per running session (container, conmon, engine).

| figure | value | target |
| --- | --- | --- |
${rows.join('\n')}
`;
process.stderr.write(`\n${md}\n`);
if (args.write) {
  writeFileSync(join(import.meta.dirname, 'RESULTS.md'), md);
  log('wrote test/bench/RESULTS.md');
} else log('test/bench/RESULTS.md left as it is (--write, or npm run bench:write, writes it)');
if (args.json) process.stdout.write(`${JSON.stringify(results)}\n`);
process.exit(0);
