import { existsSync, readdirSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MgxClient } from '@mgx/client';
import { startPlatform, type Platform } from '../support/platform.js';
import { script, codeOf, follow, within } from '../support/sessions.js';
import { measured, writeReport } from '../support/reliability.js';
import { containerOf, ownedLeft } from '../support/engine.js';

// Hostile input over real HTTP with the real client: every refusal must be a clean 4xx, and
// nothing may reach the disk, the engine or another session.

let p: Platform;
let c: MgxClient;
beforeAll(async () => {
  p = await startPlatform({ MGX_MAX_PROMPT_BYTES: '4096', MGX_MAX_EVENT_BYTES: '4096', AGENT_MAX_CONCURRENT_CONTAINERS: '3' });
  c = p.client;
});
afterAll(async () => {
  await p?.close();
  writeReport();
});

const BAD_IDS = [
  '../x',
  '..',
  '.',
  '%2e%2e',
  '..%2f..%2fetc',
  'a/b',
  'a\\b',
  '/etc/passwd',
  '\u0000',
  'a\u0000b',
  'x'.repeat(65),
  'x'.repeat(10_000),
  ' ',
  'a b',
  '-x',
  '_x',
];

/** Every path under `dir`, relative to it. */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const full = join(d, e.name);
      out.push(relative(dir, full));
      if (e.isDirectory()) walk(full);
    }
  };
  if (existsSync(dir)) walk(dir);
  return out.sort();
}

/** Paths outside the data dir that a traversal with one of `ids` could reach from where ids become paths. */
const reachable = (dataDir: string, ids: string[]) =>
  ids
    .flatMap((id) =>
      [join(dataDir, 'workspaces'), join(dataDir, 'run', 'sessions'), dataDir].map((base) => resolve(base, id.replaceAll('\u0000', ''))),
    )
    .filter((target) => target !== dataDir && !target.startsWith(`${dataDir}/`));

/** A raw subscription from `lastEventId`: resolves when it completes, rejects with its error. */
const streamFrom = (client: MgxClient, sessionId: string, lastEventId: string) =>
  new Promise<void>((resolve, reject) => {
    const sub = client.sessions.stream.subscribe(
      { sessionId, lastEventId },
      {
        onError: (err) => {
          sub.unsubscribe();
          reject(err);
        },
        onComplete: () => resolve(),
      },
    );
  });

type Attack = [label: string, call: () => Promise<unknown>];

/**
 * Runs each attack on its own, one request each (issued together, the client would batch
 * them into one URL too long to answer), and counts those refused with the expected code.
 */
async function attacks(row: { tries: number; leaks: number; note?: string }, cases: Attack[], want: string): Promise<string[]> {
  const wrong: string[] = [];
  for (const [label, call] of cases) {
    row.tries++;
    const got = await within(codeOf(call()), 15_000, label);
    if (got !== want) {
      row.leaks++;
      wrong.push(`${label} → ${got}`);
    }
  }
  row.note = `${row.tries - row.leaks}/${row.tries} refused with ${want}${wrong.length ? `; not: ${wrong.slice(0, 3).join(', ')}` : ''}`;
  return wrong;
}

describe('ids that try to become paths', () => {
  it('refuses path traversal in every id (sessionId, workspaceId, lastEventId, cursor) with BAD_REQUEST and writes nothing outside MGX_DATA_DIR', async () => {
    const real = await c.sessions.create.mutate({ framework: 'script', prompt: 'a real session for lastEventId attacks' });
    await follow(c, real.id, 30_000);
    const before = tree(p.dataDir);
    const outside = reachable(p.dataDir, BAD_IDS);
    const existedBefore = new Set(outside.filter((t) => existsSync(t)));
    const sessionsBefore = (await c.sessions.list.query({ limit: 200 })).items.length;

    await measured(
      { area: 'security/input', fault: `path traversal in sessionId: get, events, stream, cancel (${BAD_IDS.length} values)` },
      async (row) => {
        const wrong = await attacks(
          row,
          BAD_IDS.flatMap((id): Attack[] => [
            [`get ${JSON.stringify(id.slice(0, 12))}`, () => c.sessions.get.query({ sessionId: id })],
            [`events ${JSON.stringify(id.slice(0, 12))}`, () => c.sessions.events.query({ sessionId: id })],
            [`stream ${JSON.stringify(id.slice(0, 12))}`, () => follow(c, id, 10_000)],
            [`cancel ${JSON.stringify(id.slice(0, 12))}`, () => c.sessions.cancel.mutate({ sessionId: id })],
          ]),
          'BAD_REQUEST',
        );
        expect(wrong).toEqual([]);
      },
    );

    await measured({ area: 'security/input', fault: `path traversal in workspaceId on create (${BAD_IDS.length} values)` }, async (row) => {
      const wrong = await attacks(
        row,
        BAD_IDS.map((id): Attack => [
          `workspaceId ${JSON.stringify(id.slice(0, 12))}`,
          () => c.sessions.create.mutate({ framework: 'script', prompt: 'x', workspaceId: id }),
        ]),
        'BAD_REQUEST',
      );
      expect(wrong).toEqual([]);
    });

    const badSeqs = ['../x', '-1', '1e3', '1.5', '0x10', ' 1', '9'.repeat(16), '\u0000', 'x'.repeat(10_000)];
    await measured(
      {
        area: 'security/input',
        fault: `malformed lastEventId on stream, in the input and the Last-Event-ID header (${badSeqs.length} values)`,
      },
      async (row) => {
        const cases: Attack[] = badSeqs.map((v): Attack => [
          `lastEventId ${JSON.stringify(v.slice(0, 12))}`,
          () => streamFrom(c, real.id, v),
        ]);
        const wrong = await attacks(row, cases, 'BAD_REQUEST');
        // the raw header path too: a plain GET with a hostile Last-Event-ID must not stream
        for (const v of ['../x', '-1', '1e3']) {
          row.tries++;
          const res = await fetch(
            `${p.server.url}/trpc/sessions.stream?input=${encodeURIComponent(JSON.stringify({ sessionId: real.id }))}`,
            { headers: { 'last-event-id': v }, signal: AbortSignal.timeout(10_000) },
          );
          const body = await res.text().catch(() => '');
          if (!/BAD_REQUEST|lastEventId must be/.test(body) && res.status !== 400) {
            row.leaks++;
            wrong.push(`header ${v} → ${res.status}`);
          }
        }
        row.note = `${row.tries - row.leaks}/${row.tries} refused with BAD_REQUEST (${badSeqs.length} in the input, 3 in the header)`;
        expect(wrong).toEqual([]);
      },
    );

    const badCursors = ['../x', '-1', 'zzz', '1 OR 1=1', "1'; DROP TABLE sessions;--", 'x'.repeat(33), '\u0000', '1.5'];
    await measured({ area: 'security/input', fault: `malformed list cursor (${badCursors.length} values)` }, async (row) => {
      const wrong = await attacks(
        row,
        badCursors.map((v): Attack => [`cursor ${JSON.stringify(v.slice(0, 12))}`, () => c.sessions.list.query({ cursor: v })]),
        'BAD_REQUEST',
      );
      expect(wrong).toEqual([]);
    });

    // nothing was written for any of it: no new path in the data dir, nothing beside it
    const after = tree(p.dataDir).filter((f) => !/^mgx\.sqlite/.test(f));
    expect(after).toEqual(before.filter((f) => !/^mgx\.sqlite/.test(f)));
    expect(outside.filter((t) => !existedBefore.has(t) && existsSync(t))).toEqual([]);
    expect((await c.sessions.list.query({ limit: 200 })).items.length).toBe(sessionsBefore);
  });
});

describe('environment injection', () => {
  it('refuses env and secret names and values that would change how the agent loads or runs', async () => {
    await measured(
      { area: 'security/input', fault: 'env and secret injection: =, NUL, newline, LD_PRELOAD, NODE_OPTIONS, PATH, MGX_*' },
      async (row) => {
        const envs: Array<Record<string, string>> = [
          { 'A=B': 'x' },
          { 'A\u0000B': 'x' },
          { 'A\nB': 'x' },
          { OK: 'a\u0000b' },
          { OK: 'line\ninjected=1' },
          { OK: 'carriage\rreturn' },
          { LD_PRELOAD: '/tmp/evil.so' },
          { LD_LIBRARY_PATH: '/tmp' },
          { LD_AUDIT: '/tmp/evil.so' },
          { NODE_OPTIONS: '--require /tmp/evil.js' },
          { NODE_PATH: '/tmp' },
          { PATH: '/tmp' },
          { HOME: '/' },
          { MGX_INGEST_SOCKET: '/tmp/other.sock' },
          { MGX_WORKSPACE: '/' },
          { BASH_FUNC_x: '() { :; }' },
          { lower: 'x' },
          { '': 'x' },
        ];
        const cases: Attack[] = [];
        for (const env of envs) {
          const label = JSON.stringify(env).slice(0, 40);
          cases.push([`env ${label}`, () => c.sessions.create.mutate({ framework: 'script', prompt: 'x', env })]);
          cases.push([`secrets ${label}`, () => c.sessions.create.mutate({ framework: 'script', prompt: 'x', secrets: env })]);
        }
        const wrong = await attacks(row, cases, 'BAD_REQUEST');
        expect(wrong).toEqual([]);
      },
    );
  });
});

describe('sizes', () => {
  it('refuses an oversized prompt (PAYLOAD_TOO_LARGE) and an oversized body (HTTP 413)', async () => {
    await measured({ area: 'security/input', fault: 'oversized prompt (5 KB over a 4 KB limit) and body (200 KB)' }, async (row) => {
      row.tries = 2;
      const prompt = await codeOf(c.sessions.create.mutate({ framework: 'script', prompt: 'x'.repeat(5000) }));
      const res = await fetch(`${p.server.url}/trpc/sessions.create`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ framework: 'script', prompt: 'x'.repeat(200_000) }),
      });
      row.note = `prompt → ${prompt}, body → HTTP ${res.status}`;
      row.leaks = Number(prompt !== 'PAYLOAD_TOO_LARGE') + Number(res.status !== 413);
      expect(prompt).toBe('PAYLOAD_TOO_LARGE');
      expect(res.status).toBe(413);
    });
  });

  it('turns an event over MGX_MAX_EVENT_BYTES into an ERROR saying so, and the session still ends', async () => {
    await measured({ area: 'security/input', fault: 'oversized events from the agent (5 × 10 KB over a 4 KB limit)' }, async (row) => {
      row.tries = 5;
      row.sessions = 1;
      const s = await c.sessions.create.mutate({
        framework: 'script',
        prompt: script({ events: { count: 5, size: 10_000 } }, { say: 'still here' }),
      });
      const events = await follow(c, s.id, 30_000);
      const errors = events.filter((e) => e.type === 'ERROR' && /exceeds the limit of 4096 bytes/.test(String(e.data.message)));
      const bigLogs = events.filter((e) => e.type === 'LOG' && (typeof e.data.text === 'string' ? e.data.text : '').length > 4096);
      row.leaks = bigLogs.length;
      row.note = `${errors.length} ERROR events (${String(errors[0]?.data.code)}), ${bigLogs.length} oversized stored; FINISH ${String(events.at(-1)?.data.status)}`;
      expect(errors).toHaveLength(5);
      expect(bigLogs).toHaveLength(0);
      expect(events.at(-1)).toMatchObject({ type: 'FINISH', data: { status: 'succeeded' } });
      row.completed = 1;
    });
  });
});

describe('what a client may ask of the container', () => {
  it('refuses an unknown framework and every container setting smuggled into sessions.create', async () => {
    await measured({ area: 'security/input', fault: 'unknown framework, and container settings as extra create keys' }, async (row) => {
      const extras: Array<Record<string, unknown>> = [
        { image: 'alpine' },
        { Image: 'alpine' },
        { user: '0:0' },
        { privileged: true },
        { binds: ['/:/host'] },
        { Binds: ['/:/host'] },
        { mounts: [{ source: '/', target: '/host' }] },
        { hostConfig: { Privileged: true } },
        { HostConfig: { Binds: ['/:/host'] } },
        { capAdd: ['SYS_ADMIN'] },
        { securityOpt: ['seccomp=unconfined'] },
        { devices: ['/dev/sda'] },
        { labels: { 'mgx.owner': 'someone-else' } },
        { entrypoint: ['/bin/sh'] },
        { networkMode: 'host' },
        { pidMode: 'host' },
        { network: 'host' },
        { __proto__: { image: 'alpine' }, constructor: { prototype: { image: 'alpine' } } },
      ];
      const cases: Attack[] = [['framework "nope"', () => c.sessions.create.mutate({ framework: 'nope', prompt: 'x' })]];
      for (const extra of extras)
        cases.push([
          `extra ${JSON.stringify(extra).slice(0, 40)}`,
          () => c.sessions.create.mutate({ framework: 'script', prompt: 'x', ...extra }),
        ]);
      const wrong = await attacks(row, cases, 'BAD_REQUEST');
      expect(wrong).toEqual([]);
    });
  });

  it('container settings inside free-form options have no effect: mgx-agent:latest as 10001, no extra binds, nothing privileged', async () => {
    await measured({ area: 'security/input', fault: 'container settings inside options (accepted as framework options)' }, async (row) => {
      row.tries = 1;
      row.sessions = 1;
      const options = {
        image: 'alpine',
        user: '0:0',
        privileged: true,
        binds: ['/:/host'],
        HostConfig: { Privileged: true, Binds: ['/:/host'], CapAdd: ['ALL'] },
      };
      const s = await c.sessions.create
        .mutate({ framework: 'script', prompt: script({ sleep: 2000 }), options })
        .catch((err: { data?: { code?: string } }) => err.data?.code ?? 'error');
      if (typeof s === 'string') {
        // refusing them is fine too
        row.note = `refused (${s})`;
        return;
      }
      const info = await containerOf(s.id);
      const h = info.HostConfig;
      const binds = info.Mounts.filter((m) => m.Type === 'bind');
      // the image under test (AGENT_CONTAINER_IMAGE, as the platform was started with)
      const image = process.env.AGENT_CONTAINER_IMAGE ?? 'mgx-agent:latest';
      const effects = [
        info.Config.Image !== image && !info.Config.Image.endsWith(`/${image}`) ? `image ${info.Config.Image}` : '',
        info.Config.User !== '10001:10001' ? `user ${info.Config.User}` : '',
        h.Privileged ? 'privileged' : '',
        (h.CapAdd ?? []).length > 0 ? `capAdd ${String(h.CapAdd)}` : '',
        binds.some((m) => m.Source === '/' || m.Destination === '/host') ? 'host bind' : '',
        binds.length !== 2 ? `${binds.length} binds` : '',
      ].filter(Boolean);
      row.leaks = effects.length;
      const events = await follow(c, s.id, 30_000);
      if (events.at(-1)?.data.status === 'succeeded') row.completed = 1;
      row.note = `accepted; effects on the container: ${effects.length ? effects.join(', ') : 'none'} (image ${info.Config.Image}, user ${info.Config.User}, binds ${binds
        .map((m) => m.Destination)
        .sort()
        .join(' ')})`;
      expect(effects).toEqual([]);
      expect(binds.map((m) => m.Destination).sort()).toEqual(['/run/mgx', '/workspace']);
      expect(row.completed).toBe(1);
      row.orphans = (await ownedLeft(p.env.MGX_OWNER!)).length;
      expect(row.orphans).toBe(0);
    });
  });
});
