import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  discoverSocket,
  DockerRuntime,
  LABELS,
  demuxLogs,
  identityOf,
  libpodStatsOf,
  parseSocketUrl,
  statsOf,
  type ContainerSpec,
} from '../src/index.js';

describe('socket discovery', () => {
  it('follows CONTAINER_HOST, DOCKER_HOST, rootful, rootless, docker, in that order', () => {
    const none = () => false;
    expect(discoverSocket({ containerHost: 'unix:///a.sock', dockerHost: 'unix:///b.sock' }, none)).toMatchObject({
      path: '/a.sock',
      source: 'CONTAINER_HOST',
    });
    expect(discoverSocket({ dockerHost: 'tcp://127.0.0.1:2375' }, none)).toMatchObject({ kind: 'tcp', host: '127.0.0.1', port: 2375 });
    const only = (p: string) => (q: string) => q === p;
    expect(discoverSocket({ xdgRuntimeDir: '/run/user/1000' }, only('/run/podman/podman.sock')).source).toBe('rootful podman');
    expect(discoverSocket({ xdgRuntimeDir: '/run/user/1000' }, only('/run/user/1000/podman/podman.sock')).source).toBe('rootless podman');
    expect(discoverSocket({}, only('/var/run/docker.sock')).source).toBe('docker');
    expect(() => discoverSocket({}, none)).toThrow(/no container engine socket found.*CONTAINER_HOST/);
    expect(() => parseSocketUrl('ftp://x', 'DOCKER_HOST')).toThrow(/DOCKER_HOST=ftp:\/\/x/);
  });
});

describe('engine identity from ping headers', () => {
  it('names Podman by its libpod header and Docker by its server header, and neither otherwise', () => {
    expect(identityOf({ 'api-version': '1.41', 'libpod-api-version': '4.3.1', server: 'Libpod/4.3.1 (linux)' })).toEqual({
      engine: 'podman',
      version: '4.3.1',
      apiVersion: '1.41',
    });
    expect(identityOf({ 'api-version': '1.47', server: 'Docker/27.3.1 (linux)' })).toEqual({
      engine: 'docker',
      version: '27.3.1',
      apiVersion: '1.47',
    });
    expect(identityOf({ 'api-version': '1.41', server: 'nginx' })).toBeUndefined();
  });
});

describe('log demultiplexing', () => {
  it('splits framed stdout and stderr into lines and keeps the tail within the budget', () => {
    const frame = (stream: number, text: string) => {
      const body = Buffer.from(text);
      const head = Buffer.alloc(8);
      head[0] = stream;
      head.writeUInt32BE(body.length, 4);
      return Buffer.concat([head, body]);
    };
    const buf = Buffer.concat([frame(1, 'one\ntwo\n'), frame(2, 'oops\n'), frame(1, 'three')]);
    expect(demuxLogs(buf, 1000)).toEqual([
      { stream: 'stdout', text: 'one' },
      { stream: 'stdout', text: 'two' },
      { stream: 'stderr', text: 'oops' },
      { stream: 'stdout', text: 'three' },
    ]);
    expect(demuxLogs(buf, 10).map((l) => l.text)).toEqual(['oops', 'three']);
  });
});

describe('stats answers', () => {
  const read = '2026-01-02T03:04:05.5Z';
  it('reads cgroup v1 (Docker): usage less the inactive page cache, the kernel high-water mark, the limit', () => {
    expect(
      statsOf({
        read,
        cpu_stats: { cpu_usage: { total_usage: 2_500_000_000 } },
        memory_stats: { usage: 300, max_usage: 400, limit: 1000, stats: { total_inactive_file: 100, cache: 150 } },
        pids_stats: { current: 7 },
      }),
    ).toEqual({ at: Date.parse(read), cpuSeconds: 2.5, memoryBytes: 200, memoryMaxBytes: 400, memoryLimitBytes: 1000, pids: 7 });
  });

  it('reads cgroup v2 and Podman: inactive_file or nothing to subtract, no high-water mark', () => {
    const v2 = statsOf({
      read,
      cpu_stats: { cpu_usage: { total_usage: 1e9 } },
      memory_stats: { usage: 300, limit: 1000, stats: { inactive_file: 50 } },
    });
    expect(v2).toMatchObject({ cpuSeconds: 1, memoryBytes: 250, memoryMaxBytes: null, pids: 0 });
    expect(statsOf({ read, memory_stats: { usage: 300, limit: 1000 }, pids_stats: { current: 3 } })).toMatchObject({
      memoryBytes: 300,
      pids: 3,
    });
  });

  it("reads Podman's libpod batch by container, leaves out containers not running, and refuses a failed batch", () => {
    const running = { ContainerID: 'a', CPUNano: 1.5e9, SystemNano: 1_700_000_000_123_456_000, MemUsage: 300, MemLimit: 1000, PIDs: 4 };
    const stopped = { ContainerID: 'b', CPUNano: 0, SystemNano: 0, MemUsage: 0, MemLimit: 0, PIDs: 0 };
    expect(libpodStatsOf({ Error: null, Stats: [running, stopped] })).toEqual(
      new Map([['a', { at: 1_700_000_000_123, cpuSeconds: 1.5, memoryBytes: 300, memoryMaxBytes: null, memoryLimitBytes: 1000, pids: 4 }]]),
    );
    // a container gone meanwhile fails the whole batch
    expect(libpodStatsOf({ Error: {}, Stats: null })).toBeNull();
  });

  it('is null for the empty answer an engine gives for a container that is not running', () => {
    expect(statsOf({ read: '0001-01-01T00:00:00Z', memory_stats: {} })).toBeNull();
    expect(statsOf({ read, memory_stats: {} })).toBeNull();
    expect(statsOf(undefined)).toBeNull();
  });
});

describe('dockerode adapter on the real engine', () => {
  const runtime = new DockerRuntime({ address: discoverSocket({ containerHost: process.env.CONTAINER_HOST }) });
  const owner = `mgx-rt-${randomBytes(4).toString('hex')}`;
  const ids: string[] = [];
  const spec = (over: Partial<ContainerSpec> = {}): ContainerSpec => {
    const dir = mkdtempSync(join(tmpdir(), 'mgx-rt-'));
    return {
      name: `mgx-rt-${randomBytes(6).toString('hex')}`,
      image: process.env.AGENT_CONTAINER_IMAGE ?? 'mgx-agent:latest',
      // the runner waits for a socket that never comes: a container that stays up
      env: { MGX_INGEST_SOCKET: '/run/mgx/ingest.sock' },
      labels: { [LABELS.owner]: owner, [LABELS.sessionId]: 'rt-test' },
      user: '10001:10001',
      workingDir: '/workspace',
      mounts: [{ hostPath: dir, containerPath: '/run/mgx', readOnly: true }],
      memoryBytes: 128 * 1024 ** 2,
      cpuQuota: 50000,
      cpuPeriod: 100000,
      pidsLimit: 64,
      network: 'none',
      tmpfsBytes: 16 * 1024 ** 2,
      ...over,
    };
  };

  beforeAll(async () => {
    await runtime.ping();
  });
  afterAll(async () => {
    for (const id of ids) await runtime.remove(id);
  });

  it('identifies the engine: in full once for concurrent callers, and from its ping alike', async () => {
    const fresh = new DockerRuntime({
      address: discoverSocket({ containerHost: process.env.CONTAINER_HOST, dockerHost: process.env.DOCKER_HOST }),
    });
    const calls: string[] = [];
    const counted = new DockerRuntime({
      address: discoverSocket({ containerHost: process.env.CONTAINER_HOST, dockerHost: process.env.DOCKER_HOST }),
      onCall: (op) => calls.push(op),
    });
    const [a, b] = await Promise.all([counted.info(), counted.info()]);
    expect(a).toBe(b);
    expect(calls.filter((op) => op === 'info')).toEqual(['info']);
    const info = await runtime.info();
    expect(['podman', 'docker']).toContain(info.engine);
    expect(info.version).toMatch(/^\d+\./);
    expect(info.cgroupVersion).toMatch(/^(1|2)$/);
    // the ping's headers say the same, without asking for the rest
    expect(await fresh.identity()).toEqual({ engine: info.engine, version: info.version, apiVersion: info.apiVersion });
  });

  it('creates a hardened container, lists it by label, stops it with grace, and removes it', async () => {
    const id = await runtime.create(spec());
    ids.push(id);
    await runtime.start(id);
    const state = await runtime.inspect(id);
    expect(state).toMatchObject({ running: true, memoryBytes: 128 * 1024 ** 2 });
    // one request says which of several containers run: not a gone one
    expect(await runtime.running([id, 'f'.repeat(64)])).toEqual(new Set([id]));
    expect((await runtime.list({ [LABELS.owner]: owner })).map((c) => c.id)).toEqual([id]);
    const exit = await runtime.stop(id, 2000);
    expect(exit.exitCode).not.toBe(0);
    expect((await runtime.inspect(id))?.running).toBe(false);
    expect(await runtime.running([id])).toEqual(new Set());
    await runtime.remove(id);
    expect(await runtime.inspect(id)).toBeNull();
    // removing twice is not an error
    await runtime.remove(id);
  });

  it("tells a container's exit from the engine's die event, confirmed by inspect, while the container still exists", async () => {
    const id = await runtime.create(spec());
    ids.push(id);
    await runtime.start(id);
    // the events path alone (no engine wait, no poll): it must see this exit by itself
    const announced = runtime.exited(id);
    await runtime.kill(id, 'SIGKILL');
    expect(await announced).toEqual({ exitCode: 137, oomKilled: false });
    // announced before the engine's clean-up: the container and its logs are still there
    expect((await runtime.inspect(id))?.running).toBe(false);
    // a container that exited before it was watched is found by the first inspect
    expect(await runtime.exited(id)).toEqual({ exitCode: 137, oomKilled: false });
    // and wait agrees
    expect(await runtime.wait(id)).toMatchObject({ exitCode: 137 });
    await runtime.remove(id);
    await expect(runtime.exited(id)).rejects.toMatchObject({ code: 'RUNTIME_CONTAINER_NOT_FOUND' });
  });

  it("reads a running container's CPU, memory and pids in one call, and nothing once it has stopped", async () => {
    const id = await runtime.create(spec());
    ids.push(id);
    await runtime.start(id);
    const stats = await runtime.stats(id);
    expect(stats).toMatchObject({ memoryLimitBytes: 128 * 1024 ** 2, at: expect.any(Number) });
    expect(stats!.memoryBytes).toBeGreaterThan(0);
    expect(stats!.memoryBytes).toBeLessThan(128 * 1024 ** 2);
    expect(stats!.pids).toBeGreaterThan(0);
    expect(stats!.cpuSeconds).toBeGreaterThan(0);
    // several at once (Podman: one request), the stopped and the missing left out
    const other = await runtime.create(spec());
    ids.push(other);
    await runtime.start(other);
    const many = await runtime.statsMany([id, other]);
    expect([...many.keys()].sort()).toEqual([id, other].sort());
    expect(many.get(other)).toMatchObject({ memoryLimitBytes: 128 * 1024 ** 2 });
    await runtime.stop(other, 2000);
    expect([...(await runtime.statsMany([id, other])).keys()]).toEqual([id]);
    await runtime.remove(other);
    expect([...(await runtime.statsMany([id, other])).keys()]).toEqual([id]);
    await runtime.stop(id, 2000);
    expect(await runtime.stats(id)).toBeNull();
    await runtime.remove(id);
    expect(await runtime.stats(id)).toBeNull();
  });

  it('classifies a missing image with a hint on how to build it', async () => {
    await expect(runtime.create(spec({ image: 'localhost/mgx-missing:none' }))).rejects.toMatchObject({
      code: 'RUNTIME_IMAGE_NOT_FOUND',
      message: expect.stringContaining('nx run runner:build-agent'),
    });
    expect(await runtime.imageExists('localhost/mgx-missing:none')).toBe(false);
  });

  it('refuses to create a container that would run as root', async () => {
    await expect(runtime.create(spec({ user: '0:0' }))).rejects.toThrow(/as root/);
  });
});
