import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import Docker from 'dockerode';
import { silentLogger, type Logger } from '@mgx/config';
import type {
  ContainerRuntime,
  ContainerSpec,
  ContainerState,
  ContainerStats,
  ContainerSummary,
  EngineIdentity,
  EngineInfo,
  ExecResult,
  ExitInfo,
  LogLine,
} from './container-runtime.js';
import { describeSocket, discoverSocket, type DiscoveryInput, type SocketAddress } from './discovery.js';
import { classifyEngineError, RuntimeError, RuntimeErrorCode } from './errors.js';
import { ExitEvents, type EngineEvent, type EventStream } from './exit-events.js';
import { waitForExit } from './exit-wait.js';
import { hardenedCreateOptions } from './hardening.js';

export interface DockerRuntimeOptions {
  address: SocketAddress;
  logger?: Logger;
  /** Attempts for idempotent calls when the engine is briefly unavailable. */
  retries?: number;
  /** Observes every engine call, for metrics. */
  onCall?: (op: string, seconds: number, error: RuntimeError | undefined) => void;
}

const ts = (iso: string | undefined): number | null => {
  if (!iso || iso.startsWith('0001-')) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
};

/**
 * The dockerode adapter: one client for Podman's Docker-compatible API and for Docker.
 * Which engine answers is found out by `info()`, not assumed.
 */
export class DockerRuntime implements ContainerRuntime {
  readonly socket: string;
  readonly #docker: Docker;
  readonly #log: Logger;
  readonly #retries: number;
  readonly #onCall: DockerRuntimeOptions['onCall'];
  readonly #exits: ExitEvents;
  readonly #address: SocketAddress;
  #info: Promise<EngineInfo> | undefined;
  #identity: Promise<EngineIdentity> | undefined;

  constructor(options: DockerRuntimeOptions) {
    const a = options.address;
    this.#address = a;
    this.#docker =
      a.kind === 'unix' ? new Docker({ socketPath: a.path }) : new Docker({ host: a.host, port: a.port, protocol: a.protocol });
    this.socket = describeSocket(a);
    this.#log = options.logger ?? silentLogger;
    this.#retries = options.retries ?? 4;
    this.#onCall = options.onCall;
    this.#exits = new ExitEvents({
      subscribe: (onEvent, onEnd, signal) => this.#subscribe(onEvent, onEnd, signal),
      inspect: (id) => this.inspect(id),
      logger: this.#log,
    });
  }

  /** Discovers the socket (see discoverSocket) and builds the adapter. */
  static discover(input: DiscoveryInput, options: Omit<DockerRuntimeOptions, 'address'> = {}): DockerRuntime {
    return new DockerRuntime({ ...options, address: discoverSocket(input) });
  }

  /**
   * One engine call, classified, observed, and retried with backoff when transient.
   * `retry: 'unsent'` (create, start) retries only when the request cannot have reached the
   * engine, so a call that may have happened is never repeated.
   */
  async #call<T>(
    op: string,
    fn: () => Promise<T>,
    opts: { subject?: string; retry?: boolean | 'unsent'; signal?: AbortSignal } = {},
  ): Promise<T> {
    const attempts = opts.retry === false ? 1 : this.#retries;
    for (let attempt = 1; ; attempt++) {
      const started = performance.now();
      try {
        const result = await fn();
        this.#onCall?.(op, (performance.now() - started) / 1000, undefined);
        return result;
      } catch (cause) {
        // called off by the caller (another path answered first): not an engine failure
        if (opts.signal?.aborted) throw cause;
        const err = classifyEngineError(op, cause, opts.subject);
        this.#onCall?.(op, (performance.now() - started) / 1000, err);
        if (!err.transient || attempt >= attempts || (opts.retry === 'unsent' && !err.unsent)) throw err;
        const delay = 100 * 4 ** (attempt - 1);
        this.#log.warn({ op, attempt, delayMs: delay, code: err.code, err }, 'container engine call failed; retrying');
        await sleep(delay);
      }
    }
  }

  async ping(): Promise<void> {
    await this.#call('ping', () => this.#docker.ping(), { retry: false });
  }

  info(): Promise<EngineInfo> {
    // Podman answers version and info in a second or two (it runs its helpers to say theirs):
    // asked once, shared by concurrent callers, asked again only after a failure
    this.#info ??= this.#readInfo().catch((err: unknown) => {
      this.#info = undefined;
      throw err;
    });
    return this.#info;
  }

  async #readInfo(): Promise<EngineInfo> {
    const [version, info] = await this.#call('info', () => Promise.all([this.#docker.version(), this.#docker.info() as Promise<unknown>]));
    const v = version as unknown as { Version: string; ApiVersion: string; Components?: Array<{ Name: string; Version: string }> };
    const i = info as { CgroupVersion?: string; DefaultRuntime?: string; OCIRuntime?: { name?: string } };
    const podman = v.Components?.find((c) => /podman/i.test(c.Name));
    return {
      engine: podman ? 'podman' : 'docker',
      version: podman?.Version ?? v.Version,
      apiVersion: v.ApiVersion,
      cgroupVersion: i.CgroupVersion ?? 'unknown',
      ociRuntime: i.DefaultRuntime ?? i.OCIRuntime?.name ?? 'unknown',
      socket: this.socket,
    };
  }

  identity(): Promise<EngineIdentity> {
    this.#identity ??= this.#call('ping', () => pingHeaders(this.#address))
      .then((h) => identityOf(h) ?? this.info())
      .catch((err: unknown) => {
        this.#identity = undefined;
        throw err;
      });
    return this.#identity;
  }

  async imageExists(image: string): Promise<boolean> {
    return (await this.imageLabels(image)) !== null;
  }

  async imageLabels(image: string): Promise<Record<string, string> | null> {
    try {
      const inspected = await this.#call('image_inspect', () => this.#docker.getImage(image).inspect(), { subject: image });
      return inspected.Config.Labels ?? {};
    } catch (err) {
      if (
        err instanceof RuntimeError &&
        (err.code === RuntimeErrorCode.IMAGE_NOT_FOUND || err.code === RuntimeErrorCode.CONTAINER_NOT_FOUND)
      ) {
        return null;
      }
      throw err;
    }
  }

  async create(spec: ContainerSpec): Promise<string> {
    const options = hardenedCreateOptions(spec);
    const container = await this.#call('create', () => this.#docker.createContainer(options), { subject: spec.image, retry: 'unsent' });
    this.#log.debug({ containerId: container.id, name: spec.name }, 'container created');
    return container.id;
  }

  async start(id: string): Promise<void> {
    await this.#call('start', () => this.#docker.getContainer(id).start(), { subject: id, retry: 'unsent' });
  }

  async rename(id: string, name: string): Promise<void> {
    await this.#call('rename', () => this.#docker.getContainer(id).rename({ name }), { subject: id });
  }

  /**
   * The engine's `die` event, confirmed by inspect (see ExitEvents, whose sweep also inspects
   * every watched container now and then, for an event lost with the stream still open). No
   * request is held open per container: Podman answers a wait only after its `cleanup` (~300 ms
   * after the exit), and checks each waited container every 250 ms meanwhile, which with
   * hundreds of sessions running keeps the engine busy.
   */
  async wait(id: string): Promise<ExitInfo> {
    return this.#exits.exited(id);
  }

  /** `wait` with a signal that calls it off (its promise then rejects with the signal's reason). */
  exited(id: string, signal?: AbortSignal): Promise<ExitInfo> {
    return this.#exits.exited(id, signal);
  }

  /** The engine's container events, as ExitEvents takes them; the stream never holds the process open. */
  async #subscribe(onEvent: (e: EngineEvent) => void, onEnd: (err?: unknown) => void, signal?: AbortSignal): Promise<EventStream> {
    const ac = new AbortController();
    // given up by ExitEvents (it did not open in time): the request goes too
    signal?.addEventListener('abort', () => ac.abort(), { once: true });
    // Podman names the exit `died`, Docker `die`; each ignores the other's name
    const stream = (await this.#docker.getEvents({
      filters: { type: ['container'], event: ['die', 'died'] },
      abortSignal: ac.signal,
    } as Docker.GetEventsOptions)) as NodeJS.ReadableStream & { socket?: { unref?: () => void } };
    stream.socket?.unref?.();
    let buf = '';
    stream.on('data', (chunk: Buffer | string) => {
      buf += chunk.toString();
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        try {
          const e = JSON.parse(line) as { id?: unknown; status?: unknown; Action?: unknown; Actor?: { ID?: unknown } };
          const id = e.Actor?.ID ?? e.id;
          const action = e.Action ?? e.status;
          if (typeof id === 'string' && typeof action === 'string') onEvent({ id, action });
        } catch (err) {
          this.#log.debug({ err }, 'unreadable engine event');
        }
      }
    });
    stream.on('error', (err: unknown) => onEnd(err));
    stream.on('end', () => onEnd());
    stream.on('close', () => onEnd());
    return { close: () => ac.abort() };
  }

  async inspect(id: string): Promise<ContainerState | null> {
    try {
      const c = await this.#call('inspect', () => this.#docker.getContainer(id).inspect(), { subject: id });
      return {
        id: c.Id,
        running: c.State.Running,
        exitCode: c.State.Running ? null : c.State.ExitCode,
        oomKilled: c.State.OOMKilled,
        startedAt: ts(c.State.StartedAt),
        finishedAt: ts(c.State.FinishedAt),
        labels: c.Config.Labels ?? {},
        memoryBytes: c.HostConfig.Memory ?? 0,
      };
    } catch (err) {
      if (err instanceof RuntimeError && err.code === RuntimeErrorCode.CONTAINER_NOT_FOUND) return null;
      throw err;
    }
  }

  async kill(id: string, signal: 'SIGTERM' | 'SIGKILL'): Promise<void> {
    try {
      await this.#call('kill', () => this.#docker.getContainer(id).kill({ signal }), { subject: id });
    } catch (err) {
      // an exited or removed container has nothing left to signal
      if (err instanceof RuntimeError && (err.code === RuntimeErrorCode.CONTAINER_NOT_FOUND || err.code === RuntimeErrorCode.NAME_CONFLICT))
        return;
      if (err instanceof RuntimeError && /not running|is not running|container state improper/i.test(err.message)) return;
      throw err;
    }
  }

  /** The container's exit (see waitForExit), given up after 10 minutes. */
  #exited(id: string): Promise<ExitInfo> {
    const ac = new AbortController();
    const timer = setTimeout(
      () =>
        ac.abort(
          new RuntimeError(RuntimeErrorCode.ENGINE_TIMEOUT, `container ${id} did not exit within 10 minutes of being stopped`, 'wait'),
        ),
      10 * 60_000,
    );
    timer.unref();
    return waitForExit(this, id, { pollMs: 500, signal: ac.signal }).finally(() => clearTimeout(timer));
  }

  async stop(id: string, graceMs: number): Promise<ExitInfo> {
    const exited = this.#exited(id);
    exited.catch(() => {});
    await this.kill(id, 'SIGTERM');
    const winner = await Promise.race([exited.then(() => 'exited' as const), sleep(graceMs).then(() => 'grace' as const)]);
    if (winner === 'grace') {
      this.#log.info({ containerId: id, graceMs }, 'container ignored SIGTERM; sending SIGKILL');
      await this.kill(id, 'SIGKILL');
    }
    return exited;
  }

  async remove(id: string): Promise<void> {
    try {
      await this.#call('remove', () => this.#docker.getContainer(id).remove({ force: true, v: true }), { subject: id });
    } catch (err) {
      if (err instanceof RuntimeError && err.code === RuntimeErrorCode.CONTAINER_NOT_FOUND) return;
      if (!(err instanceof RuntimeError && /already in progress/i.test(err.message))) throw err;
    }
    // Docker can answer while the container is still "removing": gone means gone
    for (let i = 0; i < 100; i++) {
      if ((await this.inspect(id)) === null) return;
      await sleep(50);
    }
    throw new RuntimeError(RuntimeErrorCode.ENGINE_REJECTED, `container ${id} was still there 5 s after its removal`, 'remove');
  }

  async logs(id: string, maxBytes: number): Promise<LogLine[]> {
    if (maxBytes <= 0) return [];
    const raw = await this.#call('logs', () => this.#docker.getContainer(id).logs({ stdout: true, stderr: true, follow: false }), {
      subject: id,
    });
    return demuxLogs(Buffer.isBuffer(raw) ? raw : Buffer.from(String(raw)), maxBytes);
  }

  async exec(id: string, cmd: string[]): Promise<ExecResult> {
    const container = this.#docker.getContainer(id);
    const exec = await this.#call('exec', () => container.exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true, Tty: false }), {
      subject: id,
      retry: false,
    });
    const stream = await this.#call('exec', () => exec.start({ hijack: true, stdin: false }), { subject: id, retry: false });
    const chunks: Buffer[] = [];
    let size = 0;
    await new Promise<void>((resolve, reject) => {
      stream.on('data', (c: Buffer) => {
        if (size < 2 * 1024 * 1024) chunks.push(c);
        size += c.length;
      });
      stream.on('end', resolve);
      stream.on('close', resolve);
      stream.on('error', reject);
    });
    const lines = demuxLogs(Buffer.concat(chunks), 2 * 1024 * 1024);
    const info = await this.#call('exec', () => exec.inspect(), { subject: id });
    const join = (s: 'stdout' | 'stderr') =>
      lines
        .filter((l) => l.stream === s)
        .map((l) => l.text)
        .join('\n');
    return { exitCode: info.ExitCode ?? -1, stdout: join('stdout'), stderr: join('stderr') };
  }

  /**
   * The stats API with `stream=false` and `one-shot=true`: one reading, without Docker's wait
   * for a second sample to fill `precpu_stats` (rates are the caller's, from its own readings).
   */
  async stats(id: string): Promise<ContainerStats | null> {
    let raw: unknown;
    try {
      raw = await this.#call('stats', () => this.#docker.getContainer(id).stats({ stream: false, 'one-shot': true }), { subject: id });
    } catch (err) {
      if (err instanceof RuntimeError && err.code === RuntimeErrorCode.CONTAINER_NOT_FOUND) return null;
      // Podman refuses a stopped container
      if (err instanceof RuntimeError && /not running|container state improper|stopped/i.test(err.message)) return null;
      throw err;
    }
    return statsOf(raw);
  }

  /**
   * Podman: one request for all of them (its libpod API; ~10× less CPU per container here than a
   * request each). Docker, or a batch Podman refused (a container gone meanwhile fails all of it):
   * one request per container, four at a time.
   */
  async statsMany(ids: readonly string[]): Promise<Map<string, ContainerStats>> {
    const out = new Map<string, ContainerStats>();
    if (ids.length === 0) return out;
    const engine = await this.identity().then(
      (i) => i.engine,
      () => undefined,
    );
    if (engine === 'podman') {
      try {
        const batch = await this.#call('stats', () => this.#libpodStats(ids), { subject: `${ids.length} containers` });
        if (batch) return batch;
      } catch (err) {
        this.#log.debug({ err }, 'batched stats failed; reading each container');
      }
    }
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < ids.length; i = next++) {
        const id = ids[i] ?? '';
        try {
          const s = await this.stats(id);
          if (s) out.set(id, s);
        } catch (err) {
          this.#log.debug({ err, containerId: id }, 'reading container stats failed');
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(4, ids.length) }, worker));
    return out;
  }

  /** Podman's libpod stats of `ids` in one request; null when it refused the batch. */
  #libpodStats(ids: readonly string[]): Promise<Map<string, ContainerStats> | null> {
    return new Promise((resolve, reject) => {
      this.#docker.modem.dial(
        {
          // any v4 or later libpod API answers under this prefix
          path: '/v4.0.0/libpod/containers/stats?',
          method: 'GET',
          options: { stream: false, containers: [...ids] },
          statusCodes: { 200: true, 404: 'no such container', 500: 'server error' },
        },
        (err, data) => {
          if (err) return reject(err instanceof Error ? err : new Error(String(err)));
          resolve(libpodStatsOf(data));
        },
      );
    });
  }

  async running(ids: readonly string[]): Promise<Set<string>> {
    if (ids.length === 0) return new Set();
    const items = await this.#call('list', () => this.#docker.listContainers({ filters: { id: [...ids], status: ['running'] } }));
    return new Set(items.map((c) => c.Id));
  }

  async list(labels: Record<string, string>): Promise<ContainerSummary[]> {
    const filters = { label: Object.entries(labels).map(([k, v]) => `${k}=${v}`) };
    const items = await this.#call('list', () => this.#docker.listContainers({ all: true, filters }));
    return items.map((c) => ({ id: c.Id, name: (c.Names?.[0] ?? '').replace(/^\//, ''), state: c.State, labels: c.Labels ?? {} }));
  }
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/**
 * A stats answer in the port's terms; null for the empty answer an engine gives for a container
 * that is not running (Docker: no read time, no memory). Memory is usage less the inactive page
 * cache, as `docker stats` counts it: `total_inactive_file` on cgroup v1, `inactive_file` on v2.
 */
export function statsOf(raw: unknown): ContainerStats | null {
  const r = (raw ?? {}) as {
    read?: unknown;
    cpu_stats?: { cpu_usage?: { total_usage?: unknown } };
    memory_stats?: { usage?: unknown; max_usage?: unknown; limit?: unknown; stats?: Record<string, unknown> };
    pids_stats?: { current?: unknown };
  };
  const at = typeof r.read === 'string' ? ts(r.read) : null;
  const usage = num(r.memory_stats?.usage);
  if (at === null || usage === null) return null;
  const cache = r.memory_stats?.stats ?? {};
  const inactive = num(cache.total_inactive_file) ?? num(cache.inactive_file) ?? 0;
  const max = num(r.memory_stats?.max_usage);
  return {
    at,
    cpuSeconds: (num(r.cpu_stats?.cpu_usage?.total_usage) ?? 0) / 1e9,
    memoryBytes: inactive < usage ? usage - inactive : usage,
    memoryMaxBytes: max !== null && max > 0 ? max : null,
    memoryLimitBytes: num(r.memory_stats?.limit) ?? 0,
    pids: num(r.pids_stats?.current) ?? 0,
  };
}

/**
 * A libpod batch answer (`{ Error, Stats: [...] }`) by container id; null when Podman refused
 * the batch. A container that is not running has all zeros and is left out. Memory is
 * `MemUsage`, what Podman's Docker-compatible stats report as usage; `SystemNano` is when it
 * read them.
 */
export function libpodStatsOf(raw: unknown): Map<string, ContainerStats> | null {
  const r = (raw ?? {}) as { Error?: unknown; Stats?: unknown };
  if (r.Error !== null && r.Error !== undefined) return null;
  if (!Array.isArray(r.Stats)) return null;
  const out = new Map<string, ContainerStats>();
  for (const item of r.Stats as Array<Record<string, unknown>>) {
    const id = item.ContainerID;
    const limit = num(item.MemLimit) ?? 0;
    const cpuNano = num(item.CPUNano) ?? 0;
    if (typeof id !== 'string' || (limit === 0 && cpuNano === 0)) continue;
    const readAt = num(item.SystemNano);
    out.set(id, {
      at: readAt !== null && readAt > 0 ? Math.round(readAt / 1e6) : Date.now(),
      cpuSeconds: cpuNano / 1e9,
      memoryBytes: num(item.MemUsage) ?? 0,
      memoryMaxBytes: null,
      memoryLimitBytes: limit,
      pids: num(item.PIDs) ?? 0,
    });
  }
  return out;
}

/**
 * Splits the engine's multiplexed log stream (8-byte frame headers: stream, size) into
 * lines, keeping the last `maxBytes` of text per stream order.
 */
export function demuxLogs(buf: Buffer, maxBytes: number): LogLine[] {
  const chunks: Array<{ stream: 'stdout' | 'stderr'; data: Buffer }> = [];
  let off = 0;
  const framed = buf.length >= 8 && (buf[0] === 1 || buf[0] === 2) && buf[1] === 0 && buf[2] === 0 && buf[3] === 0;
  if (!framed) {
    chunks.push({ stream: 'stdout', data: buf });
  } else {
    while (off + 8 <= buf.length) {
      const stream = buf[off] === 2 ? 'stderr' : 'stdout';
      const size = buf.readUInt32BE(off + 4);
      chunks.push({ stream, data: buf.subarray(off + 8, off + 8 + size) });
      off += 8 + size;
    }
  }
  // keep the tail: the end of a log is what explains a failure
  let budget = maxBytes;
  const kept: typeof chunks = [];
  for (const c of chunks.toReversed()) {
    if (budget <= 0) break;
    const data = c.data.length > budget ? c.data.subarray(c.data.length - budget) : c.data;
    budget -= data.length;
    kept.unshift({ stream: c.stream, data });
  }
  const lines: LogLine[] = [];
  const partial: Record<'stdout' | 'stderr', string> = { stdout: '', stderr: '' };
  for (const c of kept) {
    const text = partial[c.stream] + c.data.toString('utf8');
    const parts = text.split('\n');
    partial[c.stream] = parts.pop() ?? '';
    for (const line of parts) lines.push({ stream: c.stream, text: line });
  }
  for (const stream of ['stdout', 'stderr'] as const) if (partial[stream]) lines.push({ stream, text: partial[stream] });
  return lines;
}

/** The headers of the engine's `GET /_ping` (dockerode gives its body only). */
function pingHeaders(a: SocketAddress): Promise<IncomingHttpHeaders> {
  return new Promise((resolve, reject) => {
    const request = a.kind === 'unix' || a.protocol === 'http' ? httpRequest : httpsRequest;
    const where = a.kind === 'unix' ? { socketPath: a.path } : { host: a.host, port: a.port };
    const req = request({ ...where, path: '/_ping', method: 'GET', timeout: 5000 }, (res) => {
      res.resume();
      if (res.statusCode === 200) resolve(res.headers);
      else reject(new Error(`GET /_ping: ${res.statusCode}`));
    });
    req.on('timeout', () => req.destroy(new Error('GET /_ping: no answer in 5 s')));
    req.on('error', reject);
    req.end();
  });
}

/** Podman names itself (Libpod-Api-Version), Docker its version (Server: Docker/27.3.1); undefined when neither does. */
export function identityOf(h: IncomingHttpHeaders): EngineIdentity | undefined {
  const apiVersion = String(h['api-version'] ?? '');
  const libpod = h['libpod-api-version'];
  if (typeof libpod === 'string' && libpod) return { engine: 'podman', version: libpod, apiVersion };
  const docker = /^Docker\/([^\s]+)/.exec(String(h.server ?? ''))?.[1];
  if (docker) return { engine: 'docker', version: docker, apiVersion };
  return undefined;
}
