import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPlatform, type Platform } from '../support/platform.js';
import { script, follow } from '../support/sessions.js';
import { measured, writeReport } from '../support/reliability.js';
import { containerOf, ownedLeft } from '../support/engine.js';

// The escape surface as an agent sees it: probes run inside a real session's container (an
// engine exec joins the container's namespaces, user and limits), and read the agent
// process itself through /proc.

let p: Platform;
let sessionId: string;
let containerId: string;
let probe: Record<string, unknown>;

const PROBE = `
const fs = require('fs'), os = require('os'), net = require('net');
const status = (pid) => Object.fromEntries(fs.readFileSync('/proc/' + pid + '/status', 'utf8').split('\\n').filter(Boolean).map((l) => l.split(':\\t')));
const tryWrite = (p) => { try { fs.writeFileSync(p, 'x'); return 'ok'; } catch (e) { return e.code; } };
const pids = fs.readdirSync('/proc').filter((d) => /^\\d+$/.test(d));
const procs = pids.map((pid) => { try { const s = status(pid); return { pid: Number(pid), name: s.Name, uid: s.Uid.split('\\t')[0], capEff: s.CapEff, capPrm: s.CapPrm, capBnd: s.CapBnd, capAmb: s.CapAmb, noNewPrivs: s.NoNewPrivs, seccomp: s.Seccomp }; } catch { return null; } }).filter(Boolean);
// every unix socket reachable in the filesystem, except /proc and /sys
const sockets = [];
const walk = (d, depth) => { if (depth > 12) return; let es; try { es = fs.readdirSync(d, { withFileTypes: true }); } catch { return; } for (const e of es) { const f = (d === '/' ? '' : d) + '/' + e.name; if (f === '/proc' || f === '/sys') continue; if (e.isSocket()) sockets.push(f); else if (e.isDirectory()) walk(f, depth + 1); } };
walk('/', 0);
let setuid; try { process.setuid(0); setuid = 'ok'; } catch (e) { setuid = e.code; }
const engineSockets = ['/run/podman/podman.sock', '/var/run/podman/podman.sock', '/var/run/docker.sock', '/run/docker.sock', '/run/containerd/containerd.sock', '/run/user/0/podman/podman.sock'];
let pending = engineSockets.length; const connect = {};
for (const s of engineSockets) { const c = net.connect(s); c.on('connect', () => { connect[s] = 'connected'; c.destroy(); end(); }); c.on('error', (e) => { connect[s] = e.code; end(); }); }
function end() { if (--pending > 0) return; console.log(JSON.stringify({
  uid: process.getuid(), gid: process.getgid(), groups: process.getgroups(),
  procs, init: status(1).Name,
  writes: { root: tryWrite('/evil'), etc: tryWrite('/etc/passwd'), bin: tryWrite('/usr/local/bin/node'), runMgx: tryWrite('/run/mgx/evil'), tmp: tryWrite('/tmp/ok'), workspace: tryWrite('/workspace/ok') },
  interfaces: Object.keys(os.networkInterfaces()),
  netDevs: fs.readFileSync('/proc/net/dev', 'utf8').split('\\n').slice(2).map((l) => l.split(':')[0].trim()).filter(Boolean),
  sockets, connect, setuid,
  devices: fs.readdirSync('/dev'),
})); }`;

beforeAll(async () => {
  p = await startPlatform({ AGENT_STOP_GRACE_SECONDS: '1' });
  const s = await p.client.sessions.create.mutate({ framework: 'script', prompt: script({ sleep: 30_000 }), timeoutSeconds: 60 });
  sessionId = s.id;
  containerId = (await containerOf(s.id)).Id;
  const r = await p.server.runtime!.exec(containerId, ['/usr/local/bin/node', '-e', PROBE]);
  if (r.exitCode !== 0) throw new Error(`probe failed (${r.exitCode}): ${r.stderr}`);
  probe = JSON.parse(r.stdout) as Record<string, unknown>;
});
afterAll(async () => {
  if (sessionId) await p.client.sessions.cancel.mutate({ sessionId }).catch(() => undefined);
  if (sessionId) await follow(p.client, sessionId, 30_000).catch(() => undefined);
  await p?.close();
  writeReport();
});

interface Proc {
  pid: number;
  name: string;
  uid: string;
  capEff: string;
  capPrm: string;
  capBnd: string;
  capAmb: string;
  noNewPrivs: string;
  seccomp: string;
}

/** Records one attack surface: `checks` maps each probe to whether the container held. */
async function surface(fault: string, checks: Record<string, boolean>, note: string): Promise<void> {
  await measured({ area: 'security/escape', fault }, async (row) => {
    const failed = Object.entries(checks)
      .filter(([, held]) => !held)
      .map(([name]) => name);
    row.tries = Object.keys(checks).length;
    row.sessions = 1;
    row.completed = 1;
    row.leaks = failed.length;
    row.note = failed.length ? `escaped: ${failed.join(', ')}; ${note}` : note;
    expect(failed).toEqual([]);
  });
}

describe('from inside a running session container', () => {
  it('has no capabilities in any process, effective, permitted, bounding or ambient', async () => {
    const procs = probe.procs as Proc[];
    const zero = '0000000000000000';
    await surface(
      'capabilities of every process in the container',
      Object.fromEntries(
        procs.flatMap((pr) => [
          [`${pr.name}[${pr.pid}] CapEff`, pr.capEff === zero],
          [`${pr.name}[${pr.pid}] CapPrm`, pr.capPrm === zero],
          [`${pr.name}[${pr.pid}] CapBnd`, pr.capBnd === zero],
          [`${pr.name}[${pr.pid}] CapAmb`, pr.capAmb === zero],
        ]),
      ),
      `${procs.length} processes, all CapEff/CapPrm/CapBnd/CapAmb 0`,
    );
  });

  it('cannot gain privileges: NoNewPrivs 1 everywhere, setuid(0) refused, runs as 10001', async () => {
    const procs = probe.procs as Proc[];
    await surface(
      'privilege escalation: NoNewPrivs, setuid(0), uid',
      {
        ...Object.fromEntries(procs.map((pr) => [`${pr.name}[${pr.pid}] NoNewPrivs`, pr.noNewPrivs === '1'])),
        ...Object.fromEntries(procs.map((pr) => [`${pr.name}[${pr.pid}] uid`, pr.uid === '10001'])),
        'setuid(0)': probe.setuid === 'EPERM',
        'uid 10001': probe.uid === 10001,
        'gid 10001': probe.gid === 10001,
        'no root group': !(probe.groups as number[]).includes(0),
      },
      `uid ${String(probe.uid)}, setuid(0) → ${String(probe.setuid)}, seccomp ${procs.map((pr) => pr.seccomp).join('/')}`,
    );
  });

  it('has a read-only root: only /tmp and /workspace take writes', async () => {
    const w = probe.writes as Record<string, string>;
    await surface(
      'writes to the root filesystem and the socket mount',
      {
        '/': w.root === 'EROFS',
        '/etc/passwd': w.etc === 'EROFS',
        '/usr/local/bin/node': w.bin === 'EROFS',
        '/run/mgx': w.runMgx === 'EROFS',
        '/tmp writable': w.tmp === 'ok',
        '/workspace writable': w.workspace === 'ok',
      },
      Object.entries(w)
        .map(([k, v]) => `${k} ${v}`)
        .join(', '),
    );
  });

  it('has no network but lo', async () => {
    await surface(
      'network interfaces',
      {
        'os.networkInterfaces is lo only': JSON.stringify(probe.interfaces) === '["lo"]',
        '/proc/net/dev is lo only': JSON.stringify(probe.netDevs) === '["lo"]',
      },
      `interfaces ${JSON.stringify(probe.interfaces)}, /proc/net/dev ${JSON.stringify(probe.netDevs)}`,
    );
  });

  it("reaches no container engine socket, and no socket at all but its session's own (ingest, tunnel)", async () => {
    const connect = probe.connect as Record<string, string>;
    await surface(
      'engine sockets (podman, docker, containerd) and any other unix socket',
      {
        ...Object.fromEntries(Object.entries(connect).map(([s, r]) => [s, r === 'ENOENT'])),
        'only /run/mgx/ingest.sock and tunnel.sock in the filesystem':
          JSON.stringify([...(probe.sockets as string[])].sort()) === '["/run/mgx/ingest.sock","/run/mgx/tunnel.sock"]',
      },
      `connects: ${[...new Set(Object.values(connect))].join(', ')}; sockets found: ${JSON.stringify(probe.sockets)}`,
    );
  });

  it('sees tini as /proc/1 and only its own processes', async () => {
    const procs = probe.procs as Proc[];
    await surface(
      'PID namespace: /proc/1 and visible processes',
      {
        '/proc/1 is tini': probe.init === 'tini',
        'only the container processes are visible': procs.length <= 4 && procs.every((pr) => ['tini', 'node'].includes(pr.name)),
      },
      `/proc/1 ${String(probe.init)}; visible: ${procs.map((pr) => `${pr.name}[${pr.pid}]`).join(' ')}; /dev: ${(probe.devices as string[]).length} entries`,
    );
  });

  it('leaves no container behind once the session ends', async () => {
    await measured({ area: 'security/escape', fault: 'probed container torn down after cancel' }, async (row) => {
      row.tries = row.sessions = 1;
      await p.client.sessions.cancel.mutate({ sessionId });
      const events = await follow(p.client, sessionId, 30_000);
      if (events.at(-1)?.data.status === 'cancelled') row.completed = 1;
      row.orphans = (await ownedLeft(p.env.MGX_OWNER!)).length;
      row.note = `FINISH ${String(events.at(-1)?.data.status)}`;
      expect(row.completed).toBe(1);
      expect(row.orphans).toBe(0);
    });
  });
});
