import { execFileSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

/**
 * The fault and security suite's recorder: every test appends what it measured as one
 * NDJSON row, and every file's afterAll regenerates the report from all rows so far. The
 * report goes to test/.reliability/RELIABILITY.md (untracked); the tracked
 * test/RELIABILITY.md is written only when asked: MGX_WRITE_REPORTS=1, as
 * `npm run reliability:write` does.
 */

const ROOT = join(import.meta.dirname, '..', '..');
const DIR = join(ROOT, 'test', '.reliability');
export const ROWS_FILE = join(DIR, 'rows.ndjson');
export const REPORT_FILE = process.env.MGX_WRITE_REPORTS === '1' ? join(ROOT, 'test', 'RELIABILITY.md') : join(DIR, 'RELIABILITY.md');
/** Rows older than this belong to an earlier run (a run takes a few minutes). */
const RUN_MAX_AGE_MS = 30 * 60 * 1000;

export interface ReliabilityRow {
  /** faults/crashes, security/input, … */
  area: string;
  /** The fault injected or the attack tried. */
  fault: string;
  /** How many times it was injected or tried. */
  tries: number;
  /** Sessions involved, and how many of them ended as they should. */
  sessions: number;
  completed: number;
  /** Events the agent emitted that the store does not hold. */
  lostEvents: number;
  /** Containers left with the test's owner label. */
  orphans: number;
  /** Anything else left behind or let through: files, sockets, processes, mounts, accepted attacks. */
  leaks: number;
  result: 'pass' | 'fail';
  /** One line on what was observed. */
  note?: string;
}

interface StoredRow extends ReliabilityRow {
  at: string;
  pid: number;
}

// a rows file left by an earlier run starts this run afresh
try {
  if (Date.now() - statSync(ROWS_FILE).mtimeMs > RUN_MAX_AGE_MS) rmSync(ROWS_FILE, { force: true });
} catch {
  // no rows yet
}

const count = (n: number, name: string) => {
  if (!Number.isInteger(n) || n < 0) throw new Error(`reliability row: ${name} must be a whole number >= 0, got ${n}`);
};

/**
 * The test file's clean-ups: pushed as it goes, run after all its tests, last pushed first,
 * each one's failure ignored; then the report is written.
 */
export function cleanupsThenReport(): Array<() => unknown> {
  const cleanups: Array<() => unknown> = [];
  afterAll(async () => {
    for (const c of cleanups.reverse())
      await Promise.resolve()
        .then(c)
        .catch(() => undefined);
    writeReport();
  });
  return cleanups;
}

/** Appends one measured row. */
export function record(row: ReliabilityRow): void {
  for (const k of ['tries', 'sessions', 'completed', 'lostEvents', 'orphans', 'leaks'] as const) count(row[k], k);
  mkdirSync(DIR, { recursive: true });
  const stored: StoredRow = { ...row, at: new Date().toISOString(), pid: process.pid };
  // one short O_APPEND write per row: parallel test files do not interleave
  appendFileSync(ROWS_FILE, `${JSON.stringify(stored)}\n`);
}

/**
 * Runs a measurement and records its row whatever happens: `fn` fills the numbers as it
 * measures them; a thrown assertion marks the row failed and is rethrown.
 */
export async function measured<T>(
  base: { area: string; fault: string },
  fn: (row: Omit<ReliabilityRow, 'area' | 'fault' | 'result'>) => Promise<T>,
): Promise<T> {
  const row: Omit<ReliabilityRow, 'area' | 'fault' | 'result'> = {
    tries: 0,
    sessions: 0,
    completed: 0,
    lostEvents: 0,
    orphans: 0,
    leaks: 0,
  };
  try {
    const out = await fn(row);
    record({ ...base, ...row, result: 'pass' });
    return out;
  } catch (err) {
    record({
      ...base,
      ...row,
      result: 'fail',
      note: `${row.note ? `${row.note}; ` : ''}${(err as Error).message.split('\n')[0]!.slice(0, 160)}`,
    });
    throw err;
  }
}

function readRows(): StoredRow[] {
  if (!existsSync(ROWS_FILE)) return [];
  const rows: StoredRow[] = [];
  for (const line of readFileSync(ROWS_FILE, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try {
      rows.push(JSON.parse(line) as StoredRow);
    } catch {
      // a torn line from a killed run: skip it
    }
  }
  // a re-run of one file within the same run window replaces its earlier rows
  const latest = new Map<string, StoredRow>();
  for (const r of rows) {
    const key = `${r.area}\u0000${r.fault}`;
    latest.delete(key);
    latest.set(key, r);
  }
  return [...latest.values()].sort((a, b) => a.area.localeCompare(b.area) || a.at.localeCompare(b.at));
}

function engineVersion(): string {
  try {
    return (
      execFileSync('podman', ['version', '--format', '{{.Version}}'], {
        encoding: 'utf8',
        timeout: 5000,
        stdio: ['ignore', 'pipe', 'ignore'],
      }).trim() || 'unknown'
    );
  } catch {
    return 'unavailable';
  }
}

const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

/** Writes the report (REPORT_FILE) from every row recorded in this run so far. */
export function writeReport(): void {
  const rows = readRows();
  const sum = (k: 'lostEvents' | 'orphans' | 'leaks' | 'sessions' | 'completed' | 'tries') => rows.reduce((n, r) => n + r[k], 0);
  const failed = rows.filter((r) => r.result !== 'pass').length;
  const lines = [
    '# mgx reliability and security report',
    '',
    '<!-- generated by test/support/reliability.ts from test/.reliability/rows.ndjson; do not edit -->',
    '',
    `Date: ${new Date().toISOString()}`,
    '',
    `Machine: ${cpus().length} cores, ${(totalmem() / 1024 ** 3).toFixed(1)} GiB memory, Podman ${engineVersion()}, Node ${process.version}`,
    '',
    'Every row is measured in this run by `test/faults` and `test/security` (`npm run reliability:write`).',
    '',
    '| area | fault / attack | tries | sessions completed/total | lost events | orphans | leaks | result | observed |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |',
    ...rows.map(
      (r) =>
        `| ${cell(r.area)} | ${cell(r.fault)} | ${r.tries} | ${r.completed}/${r.sessions} | ${r.lostEvents} | ${r.orphans} | ${r.leaks} | ${r.result} | ${cell(r.note ?? '')} |`,
    ),
    '',
    `Totals: ${rows.length} faults and attacks, ${sum('tries')} tries, ${sum('completed')}/${sum('sessions')} sessions completed, ` +
      `lost events ${sum('lostEvents')}, orphans ${sum('orphans')}, leaks ${sum('leaks')}, ${failed} failed.`,
    '',
  ];
  mkdirSync(DIR, { recursive: true });
  const tmp = `${REPORT_FILE}.${process.pid}.tmp`;
  writeFileSync(tmp, lines.join('\n'));
  // rename: a reader (or a parallel writer) never sees half a report
  renameSync(tmp, REPORT_FILE);
}
