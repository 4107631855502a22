import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { grantToAgentUser, parseUser } from '../src/agent-user.js';

describe('grantToAgentUser', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('parses uid:gid and refuses anything else', () => {
    expect(parseUser('10001:10002')).toEqual({ uid: 10001, gid: 10002 });
    expect(() => parseUser('mgx')).toThrow(/not uid:gid/);
  });

  it('chowns as root (then the owned mode), and opens the mode otherwise', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mgx-grant-'));
    dirs.push(dir);
    const file = join(dir, 'f');
    writeFileSync(file, '', { mode: 0o640 });
    const how = grantToAgentUser(file, '10001:10002', { ownedMode: 0o600, openMode: 0o666 });
    const st = statSync(file);
    if (process.getuid?.() === 0) {
      expect(how).toBe('owned');
      expect([st.uid, st.gid, st.mode & 0o777]).toEqual([10001, 10002, 0o600]);
    } else {
      expect(how).toBe('opened');
      expect(st.mode & 0o777).toBe(0o666);
    }
  });

  it('opens the mode when the user cannot be parsed (chown is not possible)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mgx-grant-'));
    dirs.push(dir);
    expect(grantToAgentUser(dir, 'nobody', { openMode: 0o777 })).toBe('opened');
    expect(statSync(dir).mode & 0o777).toBe(0o777);
  });
});
