import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { SqliteStore } from '../src/index.js';
import { newSession } from './contract.js';

/**
 * Several processes on one SQLite file, as a fleet of workers on one host shares it: the claim
 * rules and the terminal compare-and-set hold across processes, not only across connections.
 */
const FIXTURE = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'store-process.ts');

interface Child {
  proc: ChildProcess;
  lines: string[];
  ready: Promise<void>;
  exited: Promise<number | null>;
}

function start(args: string[]): Child {
  const proc = spawn(process.execPath, ['--import', 'tsx', FIXTURE, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  let onReady: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => {
    onReady = resolve;
  });
  if (proc.stdout) {
    createInterface({ input: proc.stdout }).on('line', (line) => {
      if (line === 'ready') onReady();
      else lines.push(line);
    });
  }
  const exited = new Promise<number | null>((resolve) => {
    proc.on('exit', (code) => {
      if (code !== 0) console.error(`store process ${args.join(' ')} exited ${code}: ${stderr}`);
      onReady();
      resolve(code);
    });
  });
  return { proc, lines, ready, exited };
}

const results = <T>(child: Child): T[] => child.lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as T);

function fresh(): { file: string; go: string } {
  const dir = mkdtempSync(join(tmpdir(), 'mgx-procs-'));
  return { file: join(dir, 'mgx.sqlite'), go: join(dir, 'go') };
}

describe('sqlite store shared by several processes', () => {
  it(
    'claims each session once, never past the per-tenant limit, one per workspace on its holder, across 3 worker processes',
    { timeout: 300_000 },
    async () => {
      const { file, go } = fresh();
      const setup = SqliteStore.open({ file });
      const tenants = ['ta', 'tb', 'tc', 'td'];
      const ids: string[] = [];
      for (let i = 0; i < 12; i++) {
        for (const tenant of tenants)
          ids.push((await setup.createSession(newSession(`p${tenant}${i}`, { tenant, workspaceId: `w${i}` }))).id);
      }
      await setup.close();
      const maxPerTenant = 2;
      const children = ['wa', 'wb', 'wc'].map((w) => start(['claim', file, go, w, String(maxPerTenant), 'sticky']));
      await Promise.all(children.map((c) => c.ready));

      // the parent samples committed states while the processes race: each read is one snapshot
      const sampler = new Database(file, { readonly: true, timeout: 60_000 });
      const perTenant = sampler.prepare<[], { tenant: string; n: number }>(
        "SELECT tenant, COUNT(*) AS n FROM sessions WHERE status IN ('starting', 'running') GROUP BY tenant",
      );
      const perWorkspace = sampler.prepare<[], { n: number }>(
        "SELECT COUNT(*) AS n FROM sessions WHERE status IN ('starting', 'running') GROUP BY workspace_id ORDER BY n DESC LIMIT 1",
      );
      let busiestWorkspace = 0;
      let running = true;
      let samples = 0;
      let highest = 0;
      let sawFull = false;
      const exited = Promise.all(children.map((c) => c.exited)).finally(() => {
        running = false;
      });
      writeFileSync(go, '');
      while (running) {
        for (const { n } of perTenant.all()) {
          highest = Math.max(highest, n);
          if (n === maxPerTenant) sawFull = true;
        }
        busiestWorkspace = Math.max(busiestWorkspace, perWorkspace.get()?.n ?? 0);
        samples++;
        await new Promise((r) => setTimeout(r, 2));
      }
      const codes = await exited;
      sampler.close();
      expect(codes).toEqual([0, 0, 0]);
      expect(samples).toBeGreaterThan(0);
      expect(highest).toBeLessThanOrEqual(maxPerTenant);
      expect(busiestWorkspace).toBeLessThanOrEqual(1);

      const claims = children
        .flatMap((c) => results<{ claimed?: string; workspace: string; worker: string }>(c))
        .filter((r) => r.claimed !== undefined);
      const claimed = claims.map((r) => r.claimed);
      expect(claimed).toHaveLength(ids.length);
      expect(new Set(claimed).size).toBe(ids.length);
      expect([...claimed].sort()).toEqual([...ids].sort());

      // every session of a workspace ran on the worker that first claimed it, which holds it
      const check = SqliteStore.open({ file });
      try {
        for (const ws of new Set(claims.map((c) => c.workspace))) {
          const workers = new Set(claims.filter((c) => c.workspace === ws).map((c) => c.worker));
          expect(workers.size).toBe(1);
          expect(await check.workspaceHolder(ws)).toBe([...workers][0]);
        }
        for (const id of ids) {
          const s = await check.getSession(id);
          expect(s?.status).toBe('succeeded');
          // each claimed by the worker that reported it
          expect(s?.workerId).toBe(claims.find((c) => c.claimed === id)?.worker);
        }
        expect(await check.countByStatus('queued')).toBe(0);
      } finally {
        await check.close();
      }
      // a record of what the race looked like, not an assertion on timing
      console.log(
        `3 processes claimed ${ids.length} sessions (${children.map((c, i) => `w${'abc'[i]}: ${results(c).length / 2}`).join(', ')}); ` +
          `${samples} samples, a full tenant seen: ${sawFull}`,
      );
    },
  );

  it('lets exactly one of two processes decide a session, with one FINISH', { timeout: 180_000 }, async () => {
    const { file, go } = fresh();
    const setup = SqliteStore.open({ file });
    const ids: string[] = [];
    for (let i = 0; i < 30; i++) {
      const s = await setup.createSession(newSession(`d${i}`));
      if (i % 2 === 0) {
        await setup.claimNext('w');
        await setup.markRunning(s.id, 1, 2);
      }
      ids.push(s.id);
    }
    await setup.close();
    const children = ['failed', 'cancelled'].map((status) => start(['finish', file, go, status, ...ids]));
    await Promise.all(children.map((c) => c.ready));
    writeFileSync(go, '');
    expect(await Promise.all(children.map((c) => c.exited))).toEqual([0, 0]);

    const [a, b] = children.map((c) => new Map(results<{ id: string; won: boolean; finishSeq: number }>(c).map((r) => [r.id, r])));
    const check = SqliteStore.open({ file });
    try {
      for (const id of ids) {
        const ra = a!.get(id)!;
        const rb = b!.get(id)!;
        expect([ra.won, rb.won].filter(Boolean)).toHaveLength(1);
        // both see the one FINISH
        expect(ra.finishSeq).toBe(rb.finishSeq);
        const events = await check.read(id, 0, 100);
        const finishes = events.filter((e) => e.type === 'FINISH');
        expect(finishes).toHaveLength(1);
        // only the winner's event is stored, and FINISH names the winner's outcome
        expect(events.filter((e) => e.type === 'LOG')).toHaveLength(1);
        const s = await check.getSession(id);
        const winner = ra.won ? 'failed' : 'cancelled';
        expect(s?.status).toBe(winner);
        expect(finishes[0]?.data.status).toBe(winner);
        expect(s?.finishSeq).toBe(ra.finishSeq);
      }
    } finally {
      await check.close();
    }
  });
});
