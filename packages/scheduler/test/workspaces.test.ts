import { lstatSync, mkdirSync, mkdtempSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { prepareWorkspace } from '../src/index.js';

describe('prepareWorkspace', () => {
  it('makes a directory owned by the container user under <dataDir>/workspaces', async () => {
    const data = mkdtempSync(join(tmpdir(), 'mgx-ws-'));
    const path = await prepareWorkspace(join(data, 'workspaces'), 'ws-1', '10001:10001');
    expect(path).toBe(join(data, 'workspaces', 'ws-1'));
    const st = statSync(path);
    expect(st.isDirectory()).toBe(true);
    if (process.getuid?.() === 0) expect([st.uid, st.gid]).toEqual([10001, 10001]);
    // reused as it is
    expect(await prepareWorkspace(join(data, 'workspaces'), 'ws-1', '10001:10001')).toBe(path);
  });

  it.each(['../etc', 'a/b', '.', '..', '', 'x'.repeat(65), 'has space', 'dot.ted'])('refuses the id %j', async (id) => {
    const data = mkdtempSync(join(tmpdir(), 'mgx-ws-'));
    await expect(prepareWorkspace(join(data, 'workspaces'), id, '10001:10001')).rejects.toThrow(/invalid workspace id/);
  });

  it('refuses a workspace root that is a symlink, and leaves its target alone', async () => {
    const data = mkdtempSync(join(tmpdir(), 'mgx-ws-'));
    const outside = mkdtempSync(join(tmpdir(), 'mgx-outside-'));
    mkdirSync(join(data, 'workspaces'));
    symlinkSync(outside, join(data, 'workspaces', 'evil'));
    const before = statSync(outside);
    await expect(prepareWorkspace(join(data, 'workspaces'), 'evil', '10001:10001')).rejects.toThrow(/not a plain directory/);
    const after = statSync(outside);
    expect([after.uid, after.gid, after.mode]).toEqual([before.uid, before.gid, before.mode]);
    expect(lstatSync(join(data, 'workspaces', 'evil')).isSymbolicLink()).toBe(true);
  });
});
