import type { ResourceData, SessionUsage, WarningData } from '@mgx/agent-sdk';
import type { ContainerStats } from '@mgx/runtime';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

/** Memory at this share of the limit raises `memory_near_limit`. */
export const MEMORY_WARN_RATIO = 0.9;
/** A sample at this share of the CPU quota or more counts as saturated (a full quota reads a little under 100 %). */
export const CPU_SATURATED_PERCENT = 95;

export interface UsageMeterOptions {
  /** When the container started (ms, on the same clock as the engine's readings). */
  startedAt: number;
  memoryLimitBytes: number;
  /** CPU microseconds per `cpuPeriod`; 0 means no quota (one CPU is the reference then). */
  cpuQuota: number;
  cpuPeriod: number;
  /** How long a session must be CPU-saturated before `cpu_saturated` is raised; default one minute. */
  cpuSaturatedMs?: number;
}

/** What one sample produced: a RESOURCE event when it changed materially, and warnings raised for the first time. */
export interface SampleResult {
  resource: ResourceData | undefined;
  warnings: WarningData[];
  /** The sample, as RESOURCE would report it, emitted or not. */
  current: ResourceData;
}

/**
 * A session's resource use from the engine's readings: the rate of CPU since the previous one,
 * peaks, memory over time, and the two warnings, each at most once. Pure bookkeeping: the
 * monitor does the reading and stores what this returns.
 */
export class UsageMeter {
  readonly #o: Required<UsageMeterOptions>;
  #prev: ContainerStats | undefined;
  #emitted: ResourceData | undefined;
  #cpuSeconds = 0;
  #memoryPeak = 0;
  #pidsPeak = 0;
  #memoryByteMs = 0;
  #saturatedSince: number | undefined;
  readonly #warned = new Set<WarningData['kind']>();
  #latest: ResourceData | undefined;

  constructor(options: UsageMeterOptions) {
    this.#o = { cpuSaturatedMs: 60_000, ...options };
  }

  /** The last sample, as RESOURCE reports it; undefined before the first. */
  get latest(): ResourceData | undefined {
    return this.#latest;
  }

  get samples(): boolean {
    return this.#prev !== undefined;
  }

  add(s: ContainerStats): SampleResult {
    const { startedAt, memoryLimitBytes, cpuQuota, cpuPeriod } = this.#o;
    const limit = memoryLimitBytes > 0 ? memoryLimitBytes : s.memoryLimitBytes;
    const prev = this.#prev;
    if (prev && s.at <= prev.at) {
      // a reading that crossed a later one in flight, or taken in the same instant: its peaks
      // and its CPU total (a running count) still count, its rate not
      this.#cpuSeconds = Math.max(this.#cpuSeconds, s.cpuSeconds);
      this.#memoryPeak = Math.max(this.#memoryPeak, s.memoryBytes, s.memoryMaxBytes ?? 0);
      this.#pidsPeak = Math.max(this.#pidsPeak, s.pids);
      const current = this.#latest ?? { cpuPercent: 0, cpuSeconds: 0, memoryBytes: 0, memoryLimitBytes: limit, pids: 0 };
      return { resource: undefined, warnings: [], current };
    }
    const from = prev ? prev.at : startedAt;
    const dt = Math.max(0, s.at - from);
    const cores = cpuQuota > 0 && cpuPeriod > 0 ? cpuQuota / cpuPeriod : 1;
    const cpuUsed = Math.max(0, s.cpuSeconds - (prev?.cpuSeconds ?? 0));
    const cpuPercent = dt > 0 ? round1((cpuUsed / (dt / 1000) / cores) * 100) : 0;
    // the trapezoid between readings; the first interval at the first reading
    this.#memoryByteMs += (((prev?.memoryBytes ?? s.memoryBytes) + s.memoryBytes) / 2) * dt;
    this.#cpuSeconds = Math.max(this.#cpuSeconds, s.cpuSeconds);
    // the kernel's own high-water mark (cgroup v1) also catches a spike between readings
    this.#memoryPeak = Math.max(this.#memoryPeak, s.memoryBytes, s.memoryMaxBytes ?? 0);
    this.#pidsPeak = Math.max(this.#pidsPeak, s.pids);
    this.#prev = s;

    const current: ResourceData = {
      cpuPercent,
      cpuSeconds: round3(s.cpuSeconds),
      memoryBytes: s.memoryBytes,
      memoryLimitBytes: limit,
      pids: s.pids,
    };
    this.#latest = current;
    const warnings: WarningData[] = [];
    if (limit > 0 && s.memoryBytes >= MEMORY_WARN_RATIO * limit) {
      this.#warn(warnings, {
        kind: 'memory_near_limit',
        message: `memory at ${Math.round((s.memoryBytes / limit) * 100)} % of the ${Math.round(limit / MiB)} MiB limit`,
        memoryBytes: s.memoryBytes,
        memoryLimitBytes: limit,
      });
    }
    // only a measured rate counts: the first reading's covers the runner's boot
    if (prev && cpuPercent >= CPU_SATURATED_PERCENT) {
      this.#saturatedSince ??= prev.at;
      const forMs = s.at - this.#saturatedSince;
      if (forMs >= this.#o.cpuSaturatedMs) {
        this.#warn(warnings, {
          kind: 'cpu_saturated',
          message: `at 100 % of its CPU quota (${cores} CPU) for ${Math.round(forMs / 1000)} s`,
          cpus: cores,
          forSeconds: Math.round(forMs / 1000),
        });
      }
    } else {
      this.#saturatedSince = undefined;
    }
    const resource = this.#material(current) ? current : undefined;
    if (resource) this.#emitted = resource;
    return { resource, warnings, current };
  }

  /**
   * The totals at the end. `endedAt`: when the container exited (memory over time runs to it).
   * An OOM-killed container reached its limit, whatever the last reading before the kill said.
   */
  totals(endedAt: number, oomKilled: boolean): SessionUsage {
    const { startedAt, memoryLimitBytes } = this.#o;
    const wallMs = Math.max(0, Math.round(endedAt - startedAt));
    let byteMs = this.#memoryByteMs;
    const last = this.#prev;
    if (last) byteMs += last.memoryBytes * Math.max(0, endedAt - last.at);
    const memoryPeakBytes = oomKilled && memoryLimitBytes > 0 ? Math.max(this.#memoryPeak, memoryLimitBytes) : this.#memoryPeak;
    // never read (a session shorter than one reading): the peak over the whole run, an upper bound
    if (!last) byteMs = memoryPeakBytes * wallMs;
    return {
      cpuSeconds: round3(this.#cpuSeconds),
      memoryPeakBytes,
      memoryGiBSeconds: round3(byteMs / 1000 / GiB),
      pidsPeak: this.#pidsPeak,
      wallMs,
    };
  }

  #warn(into: WarningData[], w: WarningData): void {
    if (this.#warned.has(w.kind)) return;
    this.#warned.add(w.kind);
    into.push(w);
  }

  /** The first reading, then a change of 10 CPU points, of 5 % of the limit (at least 8 MiB) in memory, or of the pids. */
  #material(c: ResourceData): boolean {
    const e = this.#emitted;
    if (!e) return true;
    const memStep = Math.max(8 * MiB, 0.05 * c.memoryLimitBytes);
    return Math.abs(c.cpuPercent - e.cpuPercent) >= 10 || Math.abs(c.memoryBytes - e.memoryBytes) >= memStep || c.pids !== e.pids;
  }
}

const round1 = (n: number) => Math.round(n * 10) / 10;
const round3 = (n: number) => Math.round(n * 1000) / 1000;
