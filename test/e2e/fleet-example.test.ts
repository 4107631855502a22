import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { Script } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

// The fleet example in infra/fleet, checked without starting it: the compose file parses, every
// mgx service sets only real settings, the roles are wired as the README describes, and the
// files it mounts (nginx, Prometheus, the replica-set script) exist and agree with it.

const ROOT = resolve(process.cwd());
const FLEET = join(ROOT, 'infra', 'fleet');
const PROMTOOL = '/usr/bin/promtool';
const read = (path: string) => readFileSync(path, 'utf8');

interface Service {
  image?: string;
  build?: { context: string; dockerfile: string };
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
  command?: string[];
  depends_on?: Record<string, { condition: string }>;
  stop_grace_period?: string;
}

const compose = parse(read(join(FLEET, 'compose.yaml')), { merge: true }) as { services: Record<string, Service> };
const services = Object.entries(compose.services);
/** The mgx processes: every service that sets MGX_ROLE. */
const mgx = services.filter(([, s]) => s.environment?.MGX_ROLE !== undefined);
const role = (r: string) => mgx.filter(([, s]) => s.environment?.MGX_ROLE === r);

/** Every variable packages/config reads, by its read('NAME', …) calls. */
function settingNames(): Set<string> {
  const source = read(join(ROOT, 'packages', 'config', 'src', 'settings.ts'));
  return new Set([...source.matchAll(/read\(\s*'([A-Z][A-Z0-9_]*)'/g)].map((m) => m[1]!));
}

/** The names a compose file interpolates: ${NAME}, ${NAME:-default}, ${NAME:?message}. */
function interpolated(text: string): Set<string> {
  return new Set([...text.matchAll(/(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)/g)].map((m) => m[1]!));
}

/** NAME=value lines of an env file, set or commented out. */
function envFileNames(text: string): Set<string> {
  return new Set([...text.matchAll(/^#?([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]!));
}

describe('infra/fleet example', () => {
  it('runs two API nodes and a worker, all on one MongoDB replica set', () => {
    expect(role('api').map(([name]) => name)).toEqual(['api-1', 'api-2']);
    expect(role('worker').map(([name]) => name)).toEqual(['worker']);
    expect(role('all')).toEqual([]);
    const uris = new Set(mgx.map(([, s]) => s.environment?.MONGODB_URI));
    expect(uris.size).toBe(1);
    expect([...uris][0]).toMatch(/replicaSet=rs0/);
    for (const [name, s] of mgx) {
      expect(s.environment?.MGX_EVENT_STORE, name).toBe('mongodb');
      expect(s.depends_on?.['mongo-init']?.condition, name).toBe('service_completed_successfully');
    }
    expect(compose.services.mongo?.command).toEqual(expect.arrayContaining(['--replSet', 'rs0']));
  });

  it('sets only real settings on the mgx services', () => {
    const known = settingNames();
    expect(known.size).toBeGreaterThan(30);
    for (const name of ['MGX_ROLE', 'MGX_WORKER_LEASE_SECONDS', 'MGX_OPERATOR_TOKENS', 'MGX_WORKSPACES_SHARED'])
      expect(known).toContain(name);
    for (const [name, s] of mgx) {
      const unknown = Object.keys(s.environment ?? {}).filter((v) => !known.has(v));
      expect(unknown, `${name} sets variables mgx does not read`).toEqual([]);
    }
  });

  it('gives only the worker an engine socket and a name of its own', () => {
    const [, worker] = role('worker')[0]!;
    const socket = worker.environment?.CONTAINER_HOST?.replace(/^unix:\/\//, '');
    expect(socket).toBeTruthy();
    expect(worker.volumes?.some((v) => v.endsWith(`:${socket}`))).toBe(true);
    expect(worker.environment?.MGX_OWNER).toBeTruthy();
    // the engine mounts paths under the data dir into agent containers: same path on both sides
    const dataDir = worker.environment?.MGX_DATA_DIR;
    expect(worker.volumes).toContain(`${dataDir}:${dataDir}`);
    for (const [name, s] of role('api')) {
      expect(s.environment?.CONTAINER_HOST, name).toBeUndefined();
      expect(s.environment?.DOCKER_HOST, name).toBeUndefined();
      expect(s.volumes ?? [], name).toEqual([]);
    }
  });

  it('drains the worker on SIGTERM, with a stop grace above the default session deadline', () => {
    const [, worker] = role('worker')[0]!;
    expect(worker.environment?.MGX_STOP).toBe('drain');
    const grace = /^\$\{MGX_WORKER_STOP_GRACE:-(\d+)m\}$/.exec(worker.stop_grace_period ?? '');
    expect(grace, 'stop_grace_period: ${MGX_WORKER_STOP_GRACE:-<minutes>m}').not.toBeNull();
    const deadline = Number(worker.environment?.AGENT_TASK_TIMEOUT_SECONDS?.replace(/^\$\{AGENT_TASK_TIMEOUT_SECONDS:-(\d+)\}$/, '$1'));
    expect(Number(grace![1]) * 60).toBeGreaterThan(deadline);
    // API nodes run no sessions: nothing to drain
    for (const [name, s] of role('api')) expect(s.environment?.MGX_STOP, name).toBeUndefined();
  });

  it('documents every interpolated name in infra/fleet/.env.example, and only those', () => {
    const text = read(join(FLEET, 'compose.yaml'));
    const used = interpolated(text);
    const documented = envFileNames(read(join(FLEET, '.env.example')));
    expect(
      [...used].filter((n) => !documented.has(n)),
      'used in compose.yaml, missing from .env.example',
    ).toEqual([]);
    expect(
      [...documented].filter((n) => !used.has(n)),
      'in .env.example, unused by compose.yaml',
    ).toEqual([]);
    // no secret is committed: the tokens are empty in the example, and required by compose
    expect(read(join(FLEET, '.env.example'))).toMatch(/^MGX_API_TOKENS=$/m);
    expect(read(join(FLEET, '.env.example'))).toMatch(/^MGX_OPERATOR_TOKENS=$/m);
    expect(text).toContain('${MGX_API_TOKENS:?');
    expect(text).toContain('${MGX_OPERATOR_TOKENS:?');
  });

  it('mounts files that exist, and builds the server image from infra/Dockerfile.server', () => {
    for (const [name, s] of services) {
      for (const volume of s.volumes ?? []) {
        const [source = ''] = volume.split(':');
        if (source.startsWith('.')) expect(existsSync(resolve(FLEET, source)), `${name}: ${source}`).toBe(true);
      }
      if (s.build) expect(existsSync(resolve(FLEET, s.build.context, s.build.dockerfile)), name).toBe(true);
    }
    const dockerfile = read(join(ROOT, 'infra', 'Dockerfile.server'));
    expect(dockerfile).toMatch(/^FROM docker\.io\/library\/node:20-bookworm-slim/m);
    expect(dockerfile).toContain('npm ci');
    // the server runs as the bundle the image builds; the bundler (a development dependency) is gone after
    expect(dockerfile).toContain('node scripts/build-server.mjs');
    expect(dockerfile).toMatch(/^ENTRYPOINT \["node", "apps\/server\/dist\/server\.mjs"\]$/m);
    expect(existsSync(join(ROOT, 'apps', 'server', 'dist', 'server.mjs'))).toBe(true);
    // the CLI inside runs its sources with tsx: it must be a production dependency, or --omit=dev drops it
    const cli = JSON.parse(read(join(ROOT, 'apps', 'cli', 'package.json'))) as { dependencies: Record<string, string> };
    expect(cli.dependencies.tsx).toBeTruthy();
    // the replica-set script is plain JavaScript for mongosh
    expect(() => new Script(read(join(FLEET, 'mongo-init.mongodb')))).not.toThrow();
  });

  it('balances over every API node, unbuffered for SSE', () => {
    const nginx = read(join(FLEET, 'nginx.conf'));
    const upstream = [...nginx.matchAll(/^\s*server ([\w.-]+):(\d+)/gm)].map((m) => `${m[1]}:${m[2]}`);
    expect(upstream).toEqual(role('api').map(([name]) => `${name}:8080`));
    expect(nginx).toMatch(/proxy_buffering off;/);
    expect(nginx).toMatch(/proxy_read_timeout \d+[hm];/);
    expect(nginx).toMatch(/proxy_http_version 1\.1;/);
    expect(compose.services.lb?.volumes).toContain('./nginx.conf:/etc/nginx/nginx.conf:ro');
  });

  it('scrapes every mgx process and loads the shared alert rules', () => {
    const config = parse(read(join(FLEET, 'prometheus.yml'))) as {
      rule_files: string[];
      scrape_configs: Array<{ job_name: string; static_configs: Array<{ targets: string[] }> }>;
    };
    const targets = config.scrape_configs.flatMap((c) => c.static_configs.flatMap((s) => s.targets));
    expect(targets.sort()).toEqual(mgx.map(([name]) => `${name}:8080`).sort());
    expect(config.scrape_configs.map((c) => c.job_name)).toEqual(['mgx']); // alerts.yml selects job="mgx"
    expect(config.rule_files).toEqual(['alerts.yml']);
    const mounts = compose.services.prometheus?.volumes ?? [];
    expect(mounts).toContain('../prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro');
    expect(mounts).toContain('./prometheus.yml:/etc/prometheus/prometheus.yml:ro');
  });

  it('passes promtool check config, with alerts.yml beside it as in the container', () => {
    if (!existsSync(PROMTOOL))
      throw new Error(`${PROMTOOL} is missing: run \`apt-get install -y prometheus\` (CI installs it; it ships promtool)`);
    const dir = mkdtempSync(join(tmpdir(), 'mgx-fleet-prom-'));
    try {
      copyFileSync(join(FLEET, 'prometheus.yml'), join(dir, 'prometheus.yml'));
      copyFileSync(join(dirname(FLEET), 'prometheus', 'alerts.yml'), join(dir, 'alerts.yml'));
      const r = spawnSync(PROMTOOL, ['check', 'config', join(dir, 'prometheus.yml')], { encoding: 'utf8', timeout: 30_000 });
      expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('lists every setting in .env.example and the README', () => {
    const env = envFileNames(read(join(ROOT, '.env.example')));
    const readme = read(join(ROOT, 'README.md'));
    // XDG_RUNTIME_DIR is the session's own variable, read only to find a rootless Podman socket
    const settings = [...settingNames()].filter((n) => n !== 'XDG_RUNTIME_DIR');
    expect(
      settings.filter((n) => !env.has(n)),
      'missing from .env.example',
    ).toEqual([]);
    expect(
      settings.filter((n) => !readme.includes(`\`${n}\``)),
      'missing from the README',
    ).toEqual([]);
  });
});
