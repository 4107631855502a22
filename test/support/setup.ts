import { afterAll, beforeEach } from 'vitest';
import { logsSince, markLogs, removeLogs } from './server-log.js';

// Loaded before every test file (vitest.config.ts setupFiles): what the servers under test
// logged is printed only for a test that fails, or for a file whose set-up or tear-down failed.

interface TaskLike {
  type: string;
  result?: { state?: string; errors?: unknown[] };
  tasks?: TaskLike[];
}

beforeEach(({ onTestFailed }) => {
  const marks = markLogs();
  onTestFailed(() => {
    const logs = logsSince(marks);
    if (logs) console.error(`[mgx test] what the servers under test logged during this test:\n${logs}`);
  });
});

// vitest hands the file second, and wants the first parameter (the fixtures) destructured
// eslint-disable-next-line no-empty-pattern -- no fixtures are used here
afterAll(({}, file) => {
  const all: TaskLike[] = [];
  const walk = (t: TaskLike) => (all.push(t), t.tasks?.forEach(walk));
  walk(file);
  // a failed beforeAll or afterAll leaves its errors on its suite: no test printed those logs
  if (all.some((t) => t.type === 'suite' && t.result?.errors?.length)) {
    const logs = logsSince();
    if (logs) console.error(`[mgx test] a set-up or tear-down hook failed; what the servers under test logged:\n${logs}`);
  }
  if (!all.some((t) => t.result?.state === 'fail' || t.result?.errors?.length)) removeLogs();
});
