import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const RUNNER = join(import.meta.dirname, '..');
const out = mkdtempSync(join(tmpdir(), 'mgx-runner-bundle-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

/** Dependencies from node_modules the bundle may hold, each worth its parse at every start. */
const ALLOWED_DEPENDENCIES: string[] = [];

describe('the runner bundle', () => {
  // regression: @mgx/config's index (for CodedError) brought zod, 454 of the bundle's 490 KB,
  // parsed and run by every container before its START
  it('holds the runner and its workspace packages, no dependency from node_modules', () => {
    execFileSync(process.execPath, [join(RUNNER, '..', 'scripts', 'build-runner.mjs'), '--outdir', out], { cwd: RUNNER });
    const meta = JSON.parse(readFileSync(join(out, 'runner.meta.json'), 'utf8')) as { inputs: Record<string, { bytes: number }> };
    const inputs = Object.keys(meta.inputs);
    expect(inputs).toContain('src/main.ts');
    expect(inputs.some((p) => p.startsWith('../packages/ingest/'))).toBe(true);
    const dependencies = new Set(inputs.flatMap((p) => /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(p)?.[1] ?? []));
    expect([...dependencies].filter((d) => !ALLOWED_DEPENDENCIES.includes(d))).toEqual([]);
  });
});
