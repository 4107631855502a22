// The bench's ingest section: agents in their containers writing events as fast as they can,
// the server storing them in SQLite, and the same rows inserted into SQLite directly in the
// same run (the raw anchor).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { createMgxClient } from '@mgx/client';
import { cpuMs, freePort, ServerProcess } from '../support/server-process.js';
import { script, sleep, storedEvents } from '../support/sessions.js';
import { allRunning, go, GO } from './go.js';

const log = (msg: string) => process.stderr.write(`[bench] ingest: ${msg}\n`);

/**
 * `sessions` agents, each in its own container (the runner's `events` step: LOG events of
 * `size` bytes of text, numbered `i`), start writing `each` events at the same moment; the
 * server is its own process. The rate is what the server stored: LOG events stored ÷ (the first
 * one's emission by its runner → the moment the sessions' stored seq says all of them are
 * stored, read every 10 ms from the server's SQLite file by a connection of the bench's own,
 * which costs the server nothing; usage sampling is off, so nothing else is appended meanwhile). Counting to the last emission instead would flatter the server by the events the
 * runners still held unacknowledged. Every LOG's `i` is checked: `lost` is how many of them are
 * missing, duplicates are not counted twice.
 */
async function ingestThroughput(
  sessions: number,
  each: number,
  size: number,
): Promise<{ perS: number; lost: number; windowMs: number; serverCpuPct: number; serverCpuUsPerEvent: number }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'mgx-bench-ingest-'));
  const profDir = process.env.MGX_BENCH_CPU_PROF;
  const server = new ServerProcess(
    {
      MGX_PORT: String(await freePort()),
      MGX_DATA_DIR: dataDir,
      MGX_OWNER: `mgx-bench-ingest-${process.pid}`,
      MGX_LOG_LEVEL: 'error',
      AGENT_CONTAINER_MEMORY_LIMIT: '256m',
      AGENT_MAX_CONCURRENT_CONTAINERS: String(sessions),
      MGX_MAX_EVENTS_PER_SECOND: '0',
      MGX_USAGE_INTERVAL_SECONDS: '0',
    },
    profDir ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : [],
  );
  await server.start();
  try {
    const client = createMgxClient({ url: server.url });
    // every agent starts writing at the same moment, once all containers are up: when its go file appears
    const ids = await Promise.all(
      Array.from({ length: sessions }, () =>
        client.sessions.create
          .mutate({ framework: 'script', prompt: script({ wait_for: GO }, { events: { count: each, size } }) })
          .then((s) => s.id),
      ),
    );
    await allRunning(client);
    // the sessions' last seq, read beside the server (WAL: a reader never blocks its writer)
    const db = new Database(join(dataDir, 'mgx.sqlite'), { readonly: true, fileMustExist: true });
    const seqs = db.prepare<[], { n: number }>('SELECT COALESCE(SUM(last_seq), 0) AS n FROM sessions');
    const storedSeqs = () => seqs.get()?.n ?? 0;
    // every event before the LOGs (queued, container, START) is stored by now
    const target = storedSeqs() + sessions * each;
    const pid = server.pid ?? 0;
    const cpu0 = cpuMs(pid);
    const t0 = Date.now();
    go(dataDir, ids);
    let storedAt = 0;
    while (storedAt === 0) {
      await sleep(10);
      if (storedSeqs() >= target) storedAt = Date.now();
      if (Date.now() - t0 > 300_000) throw new Error('ingest bench: the events were not stored within 5 minutes');
    }
    db.close();
    const cpu = cpuMs(pid) - cpu0;
    const busyMs = storedAt - t0;
    for (const id of ids) {
      // FINISH stored: nothing more comes
      for (;;) {
        const s = await client.sessions.get.query({ sessionId: id });
        const last = s.lastSeq > 0 ? await client.sessions.events.query({ sessionId: id, afterSeq: s.lastSeq - 1, limit: 1 }) : undefined;
        if (last?.events[0]?.type === 'FINISH') break;
        await sleep(100);
      }
    }
    let first = Number.POSITIVE_INFINITY;
    let stored = 0;
    for (const id of ids) {
      const logs = (await storedEvents(client, id)).filter((e) => e.type === 'LOG' && typeof e.data.i === 'number');
      stored += new Set(logs.map((e) => e.data.i as number)).size;
      if (logs[0]) first = Math.min(first, logs[0].ts);
    }
    const windowMs = Math.max(1, storedAt - first);
    return {
      perS: Math.round((stored / windowMs) * 1000),
      lost: sessions * each - stored,
      windowMs,
      serverCpuPct: Math.round((cpu / busyMs) * 100),
      serverCpuUsPerEvent: Math.round((cpu * 1000) / (sessions * each)),
    };
  } finally {
    await server.stop('SIGTERM').catch(() => null);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/**
 * The anchor: the same rows (the events table's shape, a LOG of the same size) inserted into a
 * SQLite file directly with better-sqlite3, WAL and synchronous=NORMAL as the store opens it,
 * `batch` rows per transaction with one prepared statement, round-robin over `sessions`.
 */
function rawSqliteInserts(sessions: number, each: number, size: number, batch: number): number {
  const dir = mkdtempSync(join(tmpdir(), 'mgx-bench-raw-sqlite-'));
  const db = new Database(join(dir, 'raw.db'));
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.exec(`CREATE TABLE events (session_id TEXT NOT NULL, seq INTEGER NOT NULL, rid INTEGER, type TEXT NOT NULL,
      ts INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (session_id, seq)) WITHOUT ROWID;
      CREATE UNIQUE INDEX events_session_rid ON events (session_id, rid) WHERE rid IS NOT NULL;`);
    const insert = db.prepare('INSERT INTO events (session_id, seq, rid, type, ts, data) VALUES (?, ?, ?, ?, ?, ?)');
    const ids = Array.from({ length: sessions }, (_, i) => `01BENCHRAWSQLITE${String(i).padStart(10, '0')}`);
    const text = 'x'.repeat(size);
    const write = db.transaction((id: string, from: number, n: number) => {
      for (let i = from; i < from + n; i++) insert.run(id, i + 1, i + 1, 'LOG', Date.now(), JSON.stringify({ stream: 'agent', text, i }));
    });
    const t0 = performance.now();
    for (let from = 0; from < each; from += batch) for (const id of ids) write(id, from, Math.min(batch, each - from));
    return Math.round(((sessions * each) / (performance.now() - t0)) * 1000);
  } finally {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The section's figures, under the bench's --json keys. */
export async function ingestSection(quick: boolean): Promise<Record<string, number>> {
  const sessions = 10;
  const each = quick ? 10_000 : 20_000;
  const size = 100;
  log(`${sessions} sessions × ${each} events of ${size} bytes`);
  const run = await ingestThroughput(sessions, each, size);
  log(`raw SQLite: the same ${sessions * each} rows, 500 a transaction`);
  const raw = rawSqliteInserts(sessions, each, size, 500);
  return {
    ingest_events: sessions * each,
    ingest_events_per_s: run.perS,
    events_lost: run.lost,
    ingest_window_ms: run.windowMs,
    ingest_server_cpu_pct: run.serverCpuPct,
    ingest_server_cpu_us_per_event: run.serverCpuUsPerEvent,
    ingest_raw_sqlite_rows_per_s: raw,
    ingest_vs_raw_sqlite: Math.round((run.perS / raw) * 100) / 100,
  };
}
