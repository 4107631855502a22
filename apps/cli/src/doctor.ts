import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import type { MgxClient } from '@mgx/client';

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
  hint?: string;
}

const which = (bin: string): string | null => {
  try {
    return execFileSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
};

/** This machine: engine binaries, OCI runtime setting, cgroups. */
function localChecks(): Check[] {
  const checks: Check[] = [];
  const podman = which('podman');
  const docker = which('dockerd');
  checks.push({
    name: 'engine binary',
    ok: podman !== null || docker !== null,
    detail:
      [podman && `podman at ${podman}`, docker && `dockerd at ${docker}`].filter(Boolean).join(', ') || 'neither podman nor dockerd found',
    hint: 'sudo npm run setup (installs podman, runc and starts the API service)',
  });
  const runc = which('runc');
  checks.push({ name: 'runc', ok: runc !== null, detail: runc ?? 'not found', hint: 'sudo apt-get install -y runc' });
  if (podman) {
    const conf = ['/etc/containers/containers.conf', '/usr/share/containers/containers.conf'].find((p) => existsSync(p));
    const text = conf ? readFileSync(conf, 'utf8') : '';
    const runtime = /^\s*runtime\s*=\s*"([^"]+)"/m.exec(text)?.[1] ?? 'crun (default)';
    checks.push({
      name: 'podman OCI runtime',
      ok: runtime === 'runc' || existsSync('/sys/fs/cgroup/cgroup.controllers'),
      detail: `${runtime}${conf ? ` (${conf})` : ''}`,
      hint: 'crun fails on hybrid cgroup hosts: set [engine] runtime = "runc" (sudo npm run setup does)',
    });
  }
  const v2 = existsSync('/sys/fs/cgroup/cgroup.controllers');
  checks.push({
    name: 'cgroups',
    ok: true,
    detail: v2 ? 'v2 (unified)' : 'v1: OOM kills are told by exit 137 (the engine does not flag them)',
  });
  return checks;
}

/** The server and what it sees: engine, image, store. */
async function serverChecks(client: MgxClient, url: string): Promise<Check[]> {
  const checks: Check[] = [];
  try {
    const health = await client.system.health.query();
    checks.push({ name: 'server', ok: health.ready, detail: `${url} ${health.ready ? 'ready' : 'not ready'}` });
    const engineCheck = health.checks.engine;
    if (engineCheck)
      checks.push({
        name: 'engine socket',
        ok: engineCheck.ok,
        detail: engineCheck.detail ?? '',
        hint: 'start the API service: sudo npm run setup, or set CONTAINER_HOST',
      });
  } catch (err) {
    checks.push({
      name: 'server',
      ok: false,
      detail: `${url}: ${(err as Error).message}`,
      hint: 'start it with `npm start`, or set MGX_URL',
    });
    return checks;
  }
  try {
    const info = await client.system.info.query();
    const e = info.engine as { engine?: string; version?: string; cgroupVersion?: string; ociRuntime?: string; error?: string } | null;
    checks.push({
      name: 'engine',
      ok: Boolean(e && !e.error),
      detail: e?.error ?? `${e?.engine} ${e?.version}, cgroup v${e?.cgroupVersion}, OCI runtime ${e?.ociRuntime}`,
    });
    checks.push({
      name: 'agent image',
      ok: info.image.present === true,
      detail: `${info.image.name} ${info.image.present ? 'present' : 'missing'}`,
      hint: 'npx nx run runner:build-agent',
    });
    checks.push({ name: 'store', ok: true, detail: info.store });
    checks.push({
      name: 'limits',
      ok: true,
      detail: `${info.limits.maxConcurrent} concurrent, ${info.limits.defaultTimeoutSeconds} s deadline, ${Math.round(info.limits.memoryBytes / 1024 / 1024)} MiB`,
    });
  } catch (err) {
    checks.push({ name: 'server info', ok: false, detail: (err as Error).message, hint: 'check MGX_TOKEN' });
  }
  return checks;
}

export async function doctor(client: MgxClient, url: string): Promise<Check[]> {
  return [...localChecks(), ...(await serverChecks(client, url))];
}
