import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { discoverSocket, DockerRuntime, LABELS } from '../src/index.js';

// Checks every security default on a real running container: first as the engine reports
// it (inspect), then from inside the container itself.
const address = discoverSocket({ containerHost: process.env.CONTAINER_HOST, dockerHost: process.env.DOCKER_HOST });
const runtime = new DockerRuntime({ address });
const docker = address.kind === 'unix' ? new Docker({ socketPath: address.path }) : new Docker({ host: address.host, port: address.port });
const owner = `mgx-hard-${randomBytes(4).toString('hex')}`;
const workspace = mkdtempSync(join(tmpdir(), 'mgx-ws-'));
let id: string;

const PROBE = `
const fs = require('fs'), os = require('os');
const status = (pid) => Object.fromEntries(fs.readFileSync('/proc/' + pid + '/status', 'utf8').split('\\n').filter(Boolean).map((l) => l.split(':\\t')));
const tryWrite = (p) => { try { fs.writeFileSync(p, 'x'); return 'ok'; } catch (e) { return e.code; } };
const self = status('self'), init = status(1);
console.log(JSON.stringify({
  uid: process.getuid(), gid: process.getgid(),
  capEff: self.CapEff, capPrm: self.CapPrm, capBnd: self.CapBnd, noNewPrivs: self.NoNewPrivs,
  initCapEff: init.CapEff, initName: init.Name,
  interfaces: Object.keys(os.networkInterfaces()),
  writeRoot: tryWrite('/evil'), writeEtc: tryWrite('/etc/passwd'), writeTmp: tryWrite('/tmp/ok'), writeWorkspace: tryWrite('/workspace/ok'),
  sockets: ['/var/run/docker.sock', '/run/docker.sock', '/run/podman/podman.sock', '/var/run/podman/podman.sock'].filter((p) => fs.existsSync(p)),
  mounts: fs.readFileSync('/proc/self/mounts', 'utf8').split('\\n').filter((l) => / \\/(workspace|run\\/mgx|tmp) /.test(l)).map((l) => l.split(' ').slice(1, 4).join(' ')),
}));`;

beforeAll(async () => {
  id = await runtime.create({
    name: `mgx-hard-${randomBytes(6).toString('hex')}`,
    image: process.env.AGENT_CONTAINER_IMAGE ?? 'mgx-agent:latest',
    env: { MGX_INGEST_SOCKET: '/run/mgx/ingest.sock' },
    labels: { [LABELS.owner]: owner },
    user: '10001:10001',
    workingDir: '/workspace',
    mounts: [
      { hostPath: workspace, containerPath: '/workspace', readOnly: false },
      { hostPath: mkdtempSync(join(tmpdir(), 'mgx-run-')), containerPath: '/run/mgx', readOnly: true },
    ],
    memoryBytes: 128 * 1024 ** 2,
    cpuQuota: 50000,
    cpuPeriod: 100000,
    pidsLimit: 64,
    network: 'none',
    tmpfsBytes: 16 * 1024 ** 2,
  });
  // the workspace belongs to the container's user, as prepareWorkspace makes it
  const { chownSync } = await import('node:fs');
  if (process.getuid?.() === 0) chownSync(workspace, 10001, 10001);
  await runtime.start(id);
});

afterAll(async () => {
  if (id) await runtime.remove(id);
});

describe('security defaults of an agent container', () => {
  it('are what the engine reports', async () => {
    const c = await docker.getContainer(id).inspect();
    const h = c.HostConfig;
    expect(c.Config.User).toBe('10001:10001');
    // Docker echoes ALL; Podman lists every capability it dropped
    const dropped = ((h.CapDrop ?? []) as string[]).map((x: string) => x.toUpperCase().replace(/^CAP_/, ''));
    if (!dropped.includes('ALL'))
      expect(dropped).toEqual(
        expect.arrayContaining([
          'CHOWN',
          'DAC_OVERRIDE',
          'FOWNER',
          'KILL',
          'NET_BIND_SERVICE',
          'NET_RAW',
          'SETGID',
          'SETUID',
          'SYS_CHROOT',
        ]),
      );
    expect(h.CapAdd ?? []).toEqual([]);
    expect((h.SecurityOpt ?? []).join(',')).toMatch(/no-new-privileges/);
    expect(h.ReadonlyRootfs).toBe(true);
    expect(Object.keys(h.Tmpfs ?? {})).toContain('/tmp');
    expect(h.Memory).toBe(128 * 1024 ** 2);
    expect(h.MemorySwap).toBe(128 * 1024 ** 2);
    expect(h.CpuQuota).toBe(50000);
    expect(h.PidsLimit).toBe(64);
    expect(h.NetworkMode).toBe('none');
    expect(h.Privileged).toBe(false);
    expect(c.Config.Labels?.[LABELS.owner]).toBe(owner);
    // only the workspace and the session's socket directory come from the host
    const binds = c.Mounts.filter((m) => m.Type === 'bind');
    expect(binds.map((m) => m.Destination).sort()).toEqual(['/run/mgx', '/workspace']);
    expect(binds.find((m) => m.Destination === '/run/mgx')?.RW).toBe(false);
    expect(binds.find((m) => m.Destination === '/workspace')?.RW).toBe(true);
  });

  it('hold inside the container: non-root, no capabilities, no new privileges, read-only root, only lo, no engine socket', async () => {
    const r = await runtime.exec(id, ['/usr/local/bin/node', '-e', PROBE]);
    expect(r.exitCode).toBe(0);
    const p = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(p.uid).toBe(10001);
    expect(p.gid).toBe(10001);
    expect(p.capEff).toBe('0000000000000000');
    expect(p.capPrm).toBe('0000000000000000');
    expect(p.capBnd).toBe('0000000000000000');
    expect(p.initCapEff).toBe('0000000000000000');
    expect(p.noNewPrivs).toBe('1');
    // tini is PID 1 and reaps zombies
    expect(p.initName).toBe('tini');
    expect(p.interfaces).toEqual(['lo']);
    expect(p.writeRoot).toBe('EROFS');
    expect(p.writeEtc).toBe('EROFS');
    expect(p.writeTmp).toBe('ok');
    expect(p.writeWorkspace).toBe('ok');
    expect(p.sockets).toEqual([]);
    const mounts = p.mounts as string[];
    expect(mounts.find((m) => m.startsWith('/run/mgx '))).toMatch(/ ro[, ]|\bro\b/);
    expect(mounts.find((m) => m.startsWith('/tmp '))).toMatch(/tmpfs/);
  });

  it('caps processes at the pids limit', async () => {
    const r = await runtime.exec(id, [
      '/usr/local/bin/node',
      '-e',
      "const {spawn}=require('child_process');let n=0,err='';for(let i=0;i<200;i++){try{const c=spawn('/usr/local/bin/node',['-e','setTimeout(()=>{},3000)']);c.on('error',e=>{err=e.code});n++}catch(e){err=e.code;break}}setTimeout(()=>{console.log(JSON.stringify({n,err}));process.exit(0)},1500)",
    ]);
    const p = JSON.parse(r.stdout || '{}') as { err?: string };
    expect(p.err).toMatch(/EAGAIN|ENOMEM/);
  });
});
