import { describe, expect, it } from 'vitest';
import { poolSpecKey, ConfigError, formatMemory, loadSettings, parseMemory } from '../src/index.js';

describe('parseMemory', () => {
  it.each([
    ['2g', 2 * 1024 ** 3],
    ['512m', 512 * 1024 ** 2],
    ['512M', 512 * 1024 ** 2],
    ['1.5g', 1.5 * 1024 ** 3],
    ['64k', 64 * 1024],
    ['1048576', 1048576],
    ['256MiB', 256 * 1024 ** 2],
  ])('reads %s', (text, bytes) => expect(parseMemory(text)).toBe(bytes));

  it.each(['', 'g', '2x', '-1g', 'lots', '1 2g'])('refuses %j', (text) => expect(parseMemory(text)).toBeUndefined());

  it('formats back what it reads', () => {
    for (const t of ['2g', '512m', '64k']) expect(formatMemory(parseMemory(t)!)).toBe(t);
  });
});

describe('loadSettings', () => {
  it('gives the documented defaults', () => {
    const s = loadSettings({}, '/srv');
    expect(s.agent.image).toBe('mgx-agent:latest');
    expect(s.agent.memoryBytes).toBe(2 * 1024 ** 3);
    expect(s.agent.cpuQuota).toBe(100000);
    expect(s.agent.defaultTimeoutMs).toBe(1800_000);
    expect(s.monitor.pollMs).toBe(2000);
    expect(s.scheduler.maxConcurrent).toBeGreaterThanOrEqual(1);
    expect(s.store.kind).toBe('sqlite');
    expect(s.store.dataDir).toBe('/srv/data');
    expect(s.store.retentionDays).toBe(30);
    expect(s.server.port).toBe(8080);
    expect(s.server.host).toBe('127.0.0.1');
    expect(s.limits.maxEventBytes).toBe(256 * 1024);
  });

  it('reads the original settings names', () => {
    const s = loadSettings({
      AGENT_CONTAINER_IMAGE: 'custom:1',
      AGENT_CONTAINER_MEMORY_LIMIT: '512m',
      AGENT_CONTAINER_CPU_QUOTA: '50000',
      AGENT_TASK_TIMEOUT_SECONDS: '60',
      AGENT_MONITOR_POLL_SECONDS: '0.5',
      AGENT_MAX_CONCURRENT_CONTAINERS: '4',
    });
    expect(s.agent.image).toBe('custom:1');
    expect(s.agent.memoryBytes).toBe(512 * 1024 ** 2);
    expect(s.agent.maxMemoryBytes).toBe(512 * 1024 ** 2);
    expect(s.agent.cpuQuota).toBe(50000);
    expect(s.agent.defaultTimeoutMs).toBe(60_000);
    expect(s.monitor.pollMs).toBe(500);
    expect(s.scheduler.maxConcurrent).toBe(4);
  });

  it('reads MGX_USAGE_INTERVAL_SECONDS: 5 s by default, 0 to read only at the end, never faster than 0.5 s', () => {
    expect(loadSettings({}).monitor.usageIntervalMs).toBe(5000);
    expect(loadSettings({ MGX_USAGE_INTERVAL_SECONDS: '0' }).monitor.usageIntervalMs).toBe(0);
    expect(loadSettings({ MGX_USAGE_INTERVAL_SECONDS: '1.5' }).monitor.usageIntervalMs).toBe(1500);
    expect(() => loadSettings({ MGX_USAGE_INTERVAL_SECONDS: '0.1' })).toThrow(/MGX_USAGE_INTERVAL_SECONDS.*at least 0\.5 s/);
    expect(() => loadSettings({ MGX_USAGE_INTERVAL_SECONDS: 'often' })).toThrow(/MGX_USAGE_INTERVAL_SECONDS/);
  });

  it('names every bad variable and what was wrong, at once', () => {
    let err: unknown;
    try {
      loadSettings({
        AGENT_CONTAINER_MEMORY_LIMIT: '2x',
        AGENT_MAX_CONCURRENT_CONTAINERS: '0',
        MGX_PORT: 'http',
        MGX_EVENT_STORE: 'redis',
      });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const e = err as ConfigError;
    expect(e.code).toBe('CONFIG_INVALID');
    expect(e.problems.map((p) => p.variable).sort()).toEqual([
      'AGENT_CONTAINER_MEMORY_LIMIT',
      'AGENT_MAX_CONCURRENT_CONTAINERS',
      'MGX_EVENT_STORE',
      'MGX_PORT',
    ]);
    expect(e.message).toContain('AGENT_CONTAINER_MEMORY_LIMIT: "2x" is not a memory size');
    expect(e.message).toContain('AGENT_MAX_CONCURRENT_CONTAINERS: must be at least 1');
  });

  it('reads the event retention in whole days, 0 keeping events forever', () => {
    expect(loadSettings({ MGX_EVENT_RETENTION_DAYS: '7' }).store.retentionDays).toBe(7);
    expect(loadSettings({ MGX_EVENT_RETENTION_DAYS: '0' }).store.retentionDays).toBe(0);
    for (const bad of ['-1', '1.5', 'week', '36501']) {
      expect(() => loadSettings({ MGX_EVENT_RETENTION_DAYS: bad })).toThrow(/MGX_EVENT_RETENTION_DAYS: must be/);
    }
  });

  it('stops by hand-over unless MGX_STOP=drain, and names MGX_STOP when it is neither', () => {
    expect(loadSettings({}).server.stop).toBe('handover');
    expect(loadSettings({ MGX_STOP: 'drain' }).server.stop).toBe('drain');
    expect(loadSettings({ MGX_STOP: 'handover' }).server.stop).toBe('handover');
    expect(() => loadSettings({ MGX_STOP: 'graceful' })).toThrow(/MGX_STOP: must be handover or drain/);
  });

  it('reads the preview settings, and names a bad port range, domain, key or URL', () => {
    const d = loadSettings({});
    expect(d.preview).toMatchObject({ minPort: 1024, maxPort: 65535, maxConnections: 64, maxBytes: 1024 ** 3, maxLinkMs: 86_400_000 });
    expect(d.preview.domain).toBeUndefined();
    const s = loadSettings({
      MGX_PREVIEW_PORTS: '3000-3999',
      MGX_PREVIEW_DOMAIN: 'preview.example.com',
      MGX_PUBLIC_URL: 'https://mgx.example.com',
    });
    expect(s.preview).toMatchObject({ minPort: 3000, maxPort: 3999, domain: 'preview.example.com' });
    expect(s.server.publicUrl).toBe('https://mgx.example.com');
    for (const bad of ['3000', '4000-3000', '0-10', '1-70000', 'a-b']) {
      expect(() => loadSettings({ MGX_PREVIEW_PORTS: bad })).toThrow(/MGX_PREVIEW_PORTS: must be a port range/);
    }
    expect(() => loadSettings({ MGX_PREVIEW_DOMAIN: 'bad domain' })).toThrow(/MGX_PREVIEW_DOMAIN: must be a DNS name/);
    expect(() => loadSettings({ MGX_PREVIEW_KEY: 'short' })).toThrow(/MGX_PREVIEW_KEY: must be at least 32 characters/);
    expect(() => loadSettings({ MGX_PUBLIC_URL: 'mgx.example.com' })).toThrow(/MGX_PUBLIC_URL: must be an http\(s\) URL/);
  });

  it('reads the console switch and the CORS allow-list of exact origins, and names a bad origin', () => {
    const d = loadSettings({});
    expect(d.server.console).toBe(true);
    expect(d.server.corsOrigins).toEqual([]);
    expect(loadSettings({ MGX_CONSOLE: 'false' }).server.console).toBe(false);
    expect(() => loadSettings({ MGX_CONSOLE: 'maybe' })).toThrow(/MGX_CONSOLE: must be true or false/);
    const s = loadSettings({ MGX_CORS_ORIGINS: 'https://app.example.com, http://localhost:5173/,https://App.example.com' });
    expect(s.server.corsOrigins).toEqual(['https://app.example.com', 'http://localhost:5173']);
    for (const bad of [
      '*',
      'app.example.com',
      'https://app.example.com/path',
      'ftp://x.example.com',
      'https://app.example.com:443',
      'null',
    ]) {
      expect(() => loadSettings({ MGX_CORS_ORIGINS: bad })).toThrow(/MGX_CORS_ORIGINS: ".*" is not an origin/);
    }
  });

  it('reads the files limits as sizes, a quota of 0 meaning none, and names a bad one', () => {
    const s = loadSettings({});
    expect(s.files).toEqual({
      maxFileBytes: 100 * 1024 ** 2,
      maxUploadBytes: 1024 ** 3,
      maxUploadFiles: 100_000,
      quotaBytes: 10 * 1024 ** 3,
      maxReadBytes: 1024 ** 2,
    });
    expect(loadSettings({ MGX_WORKSPACE_QUOTA_BYTES: '0', MGX_MAX_FILE_BYTES: '5k' }).files).toMatchObject({
      quotaBytes: 0,
      maxFileBytes: 5120,
    });
    expect(() => loadSettings({ MGX_MAX_FILE_BYTES: '0', MGX_MAX_UPLOAD_FILES: 'many' })).toThrow(
      /MGX_MAX_FILE_BYTES[\s\S]*MGX_MAX_UPLOAD_FILES/,
    );
  });

  it('reads the URL a worker advertises, and refuses one with a path', () => {
    expect(loadSettings({}).server.workerUrl).toBeUndefined();
    expect(loadSettings({ MGX_WORKER_URL: 'http://10.0.0.5:8080/' }).server.workerUrl).toBe('http://10.0.0.5:8080');
    expect(() => loadSettings({ MGX_WORKER_URL: 'http://h:1/x' })).toThrow(/MGX_WORKER_URL/);
  });

  it('requires MONGODB_URI for the mongodb store', () => {
    expect(() => loadSettings({ MGX_EVENT_STORE: 'mongodb' })).toThrow(/MONGODB_URI: is required/);
  });

  it('refuses a root container user and a memory maximum below the default', () => {
    expect(() => loadSettings({ AGENT_CONTAINER_USER: '0:0' })).toThrow(/AGENT_CONTAINER_USER/);
    expect(() => loadSettings({ AGENT_CONTAINER_MEMORY_LIMIT: '1g', AGENT_CONTAINER_MEMORY_MAX: '512m' })).toThrow(
      /AGENT_CONTAINER_MEMORY_MAX/,
    );
  });

  it('refuses a timeout maximum below the default timeout', () => {
    expect(() => loadSettings({ AGENT_TASK_TIMEOUT_SECONDS: '100', AGENT_TASK_TIMEOUT_MAX_SECONDS: '50' })).toThrow(
      /AGENT_TASK_TIMEOUT_MAX_SECONDS/,
    );
  });

  it('keeps no warm pool by default, and one per listed spec besides the defaults', () => {
    const off = loadSettings({});
    expect(off.pool.size).toBe(0);
    const s = loadSettings({
      MGX_WARM_POOL_SIZE: '3',
      AGENT_CONTAINER_MEMORY_LIMIT: '1g',
      AGENT_CONTAINER_MEMORY_MAX: '4g',
      AGENT_CONTAINER_CPU_QUOTA: '200000',
      MGX_ALLOW_EGRESS: 'true',
      MGX_WARM_POOL_SPECS: 'memory=512m, cpus=0.5 ; network=egress;memory=1g',
    });
    expect(s.pool.size).toBe(3);
    // the last entry equals the defaults: one pool, not two
    expect(s.pool.specs).toEqual([
      { memoryBytes: 1024 ** 3, cpuQuota: 200000, network: 'none' },
      { memoryBytes: 512 * 1024 ** 2, cpuQuota: 50000, network: 'none' },
      { memoryBytes: 1024 ** 3, cpuQuota: 200000, network: 'egress' },
    ]);
    expect(s.pool.specs.map(poolSpecKey)).toEqual(['1024m-200mcpu-none', '512m-50mcpu-none', '1024m-200mcpu-egress']);
  });

  it('names the bad entry and field of MGX_WARM_POOL_SPECS', () => {
    expect(() => loadSettings({ MGX_WARM_POOL_SIZE: '65' })).toThrow(/MGX_WARM_POOL_SIZE: must be at most 64/);
    expect(() => loadSettings({ MGX_WARM_POOL_SPECS: 'memory=lots' })).toThrow(/MGX_WARM_POOL_SPECS: "memory=lots": memory must be a size/);
    expect(() => loadSettings({ MGX_WARM_POOL_SPECS: 'memory=8g' })).toThrow(
      /memory must be a size from 16m to AGENT_CONTAINER_MEMORY_MAX \(2g\)/,
    );
    expect(() => loadSettings({ MGX_WARM_POOL_SPECS: 'cpus=9' })).toThrow(/"cpus=9": cpus must be a number from 0.01 to 1/);
    expect(() => loadSettings({ MGX_WARM_POOL_SPECS: 'network=egress' })).toThrow(/network=egress needs MGX_ALLOW_EGRESS=true/);
    expect(() => loadSettings({ MGX_WARM_POOL_SPECS: 'image=evil:latest' })).toThrow(/unknown field "image"/);
  });
});
