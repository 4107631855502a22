import { existsSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Servers under test log to files, not to the test output: a passing run stays quiet, and
 * test/support/setup.ts prints what a server logged during a test only when that test fails.
 * The files are removed after a test file that passed, and kept (their paths printed) after
 * one that failed; MGX_TEST_KEEP_LOGS=1 keeps them all.
 */

export const LOG_DIR = process.env.MGX_TEST_LOG_DIR ?? join(tmpdir(), 'mgx-test-logs');
/** How many lines of a log a failing test prints at the most. */
const TAIL_LINES = Number(process.env.MGX_TEST_LOG_TAIL ?? 200);

export interface ServerLog {
  /** What the log belongs to, e.g. `server mgx-e2e-1a2b3c4d`. */
  name: string;
  path: string;
}

/** The logs opened in this test file so far (each test file runs in its own module graph). */
const opened: ServerLog[] = [];

/** A fresh log file for a server under test, registered so that a failing test prints it. */
export function serverLogFile(name: string): string {
  mkdirSync(LOG_DIR, { recursive: true });
  const path = join(LOG_DIR, `${name.replace(/[^\w.-]+/g, '_')}-${process.pid}-${randomBytes(3).toString('hex')}.log`);
  opened.push({ name, path });
  return path;
}

const sizeOf = (path: string) => {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
};

/** Where each log ends now: what is written after this mark belongs to what runs next. */
export function markLogs(): Map<string, number> {
  return new Map(opened.map((l) => [l.path, sizeOf(l.path)]));
}

/** The last lines of `path` from byte `from` on. */
export function tail(path: string, from = 0, lines = TAIL_LINES): string[] {
  if (!existsSync(path)) return [];
  const text = readFileSync(path).subarray(from).toString('utf8');
  return text.split('\n').filter(Boolean).slice(-lines);
}

/**
 * What every server logged since `marks` (logs opened after the mark: all of it), as text
 * to print: one header per log naming its file, then its last lines. Empty when no server
 * under test was started.
 */
export function logsSince(marks: Map<string, number> = new Map()): string {
  const parts: string[] = [];
  for (const log of opened) {
    const lines = tail(log.path, marks.get(log.path) ?? 0);
    if (lines.length === 0) parts.push(`--- ${log.name}: nothing logged in that time to ${log.path}`);
    else parts.push(`--- ${log.name}: last ${lines.length} lines of ${log.path}`, ...lines);
  }
  return parts.join('\n');
}

/** Removes this test file's logs (after it passed), unless MGX_TEST_KEEP_LOGS=1. */
export function removeLogs(): void {
  if (process.env.MGX_TEST_KEEP_LOGS === '1') return;
  for (const log of opened.splice(0)) rmSync(log.path, { force: true });
}
