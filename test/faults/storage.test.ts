import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { createMgxClient } from '@mgx/client';
import { follow, sleep } from '../support/sessions.js';
import { ownedLeft } from '../support/engine.js';
import { freePort, newServerProcess, SERVER_ENTRY } from '../support/server-process.js';
import { cleanupsThenReport, measured } from '../support/reliability.js';

const ROOT = join(import.meta.dirname, '..', '..');
const cleanups = cleanupsThenReport();

const elapsed = async <T>(p: Promise<T>): Promise<[T, number]> => {
  const t0 = Date.now();
  const v = await p;
  return [v, Date.now() - t0];
};

describe('the SQLite store locked by another process', () => {
  it('fails writes with an error naming the store within the busy timeout, stays up, and recovers when the lock goes', async () => {
    await measured({ area: 'faults/storage', fault: 'store locked (BEGIN EXCLUSIVE held by another process)' }, async (row) => {
      const { server, dataDir, owner } = await newServerProcess('mgx-fault-lock', {
        MGX_LOG_LEVEL: 'fatal',
        AGENT_MONITOR_POLL_SECONDS: '1',
        AGENT_CONTAINER_MEMORY_LIMIT: '256m',
      });
      cleanups.push(async () => {
        await server.stop('SIGKILL');
        rmSync(dataDir, { recursive: true, force: true });
      });
      await server.start();
      const client = createMgxClient({ url: server.url });
      const first = await client.sessions.create.mutate({ framework: 'script', prompt: 'before the lock' });
      row.sessions++;
      if ((await follow(client, first.id, 30_000)).at(-1)?.data.status === 'succeeded') row.completed++;

      const db = new Database(join(dataDir, 'mgx.sqlite'));
      db.exec('BEGIN EXCLUSIVE');
      let locked = true;
      cleanups.push(() => {
        if (locked) db.exec('ROLLBACK');
        db.close();
      });
      row.tries++;
      const [err, createMs] = await elapsed(
        client.sessions.create.mutate({ framework: 'script', prompt: 'during the lock' }).then(
          () => null,
          (e: unknown) => e as Error,
        ),
      );
      expect(err, 'a write while the store is locked must fail').not.toBeNull();
      row.note = `create refused after ${createMs} ms: ${err!.message.slice(0, 90)}`;
      expect(err!.message).toMatch(/SQLite store .*mgx\.sqlite.*(locked|busy)/i);
      // the 5 s busy timeout, not a hang
      expect(createMs).toBeLessThan(15_000);

      // alive and answering, not crash-looping; but every write attempt (the scheduler claims
      // once a poll interval) blocks the event loop for the whole busy timeout, because
      // better-sqlite3 is synchronous, so /healthz answers late: measured, and reported
      const [health, healthMs] = await elapsed(
        fetch(`${server.url}/healthz`, { signal: AbortSignal.timeout(45_000) }).then(
          (r) => r.status,
          () => 0,
        ),
      );
      expect(server.child!.exitCode).toBeNull();
      expect(health).toBe(200);
      row.note += `; /healthz 200 after ${healthMs} ms while locked`;

      db.exec('ROLLBACK');
      locked = false;
      const deadline = Date.now() + 30_000;
      let again: { id: string } | null = null;
      while (!again && Date.now() < deadline) {
        again = await client.sessions.create.mutate({ framework: 'script', prompt: 'after the lock' }).catch(() => null);
        if (!again) await sleep(200);
      }
      expect(again, 'a session after the lock is released').not.toBeNull();
      row.sessions++;
      const events = await follow(client, again!.id, 30_000);
      expect(events.at(-1)?.data).toMatchObject({ status: 'succeeded' });
      row.completed++;
      expect(server.child!.exitCode).toBeNull();
      row.orphans = (await ownedLeft(owner)).length;
      expect(row.orphans).toBe(0);
    });
  }, 120_000);
});

/** Runs the server entry point with `env`; resolves with its exit code and stderr, or kills it after `ms`. */
function runServer(env: Record<string, string>, ms: number): Promise<{ code: number | null; stderr: string; ms: number }> {
  const t0 = Date.now();
  const child = spawn(process.execPath, [SERVER_ENTRY], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr, ms: Date.now() - t0 });
    });
  });
}

describe('a data directory that cannot be created', () => {
  it('stops the server quickly with a non-zero exit and a message naming the path', async () => {
    await measured({ area: 'faults/storage', fault: 'data dir blocked by a regular file' }, async (row) => {
      const base = mkdtempSync(join(tmpdir(), 'mgx-fault-datadir-'));
      cleanups.push(() => rmSync(base, { recursive: true, force: true }));
      const file = join(base, 'not-a-dir');
      writeFileSync(file, 'a file where the data directory should be');
      const outcomes: string[] = [];
      for (const dataDir of [file, join(file, 'nested')]) {
        row.tries++;
        const r = await runServer(
          {
            MGX_PORT: String(await freePort()),
            MGX_DATA_DIR: dataDir,
            MGX_OWNER: `mgx-fault-dd-${randomBytes(4).toString('hex')}`,
            MGX_LOG_LEVEL: 'fatal',
          },
          30_000,
        );
        outcomes.push(`exit ${r.code} in ${r.ms} ms`);
        expect(r.code, r.stderr).not.toBe(0);
        expect(r.code, 'killed by the test: it hung').not.toBeNull();
        expect(r.ms).toBeLessThan(20_000);
        expect(r.stderr).toContain(dataDir);
        expect(r.stderr).toMatch(/cannot open the SQLite store/);
      }
      row.note = outcomes.join(', ');
    });
  }, 60_000);
});
