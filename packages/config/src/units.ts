/** The smallest memory limit a session's container may have: below it the runner cannot start. */
export const MIN_MEMORY_BYTES = 16 * 1024 ** 2;

/** The smallest CPU share a session's container may have, in CPUs. */
export const MIN_CPUS = 0.01;

/** MIN_CPUS as a CFS quota (microseconds of CPU time per `cpuPeriod`). */
export function minCpuQuota(cpuPeriod: number): number {
  return Math.round(MIN_CPUS * cpuPeriod);
}

const MEMORY_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1024 ** 4,
  tib: 1024 ** 4,
};

/**
 * Parses a memory size as Docker and Podman write it (`512m`, `2g`, `1.5g`, `1048576`)
 * into bytes. Units are binary, as the engines treat them. Returns undefined when the
 * text is not a size.
 */
export function parseMemory(text: string): number | undefined {
  const m = /^\s*(?<amount>\d+(?:\.\d+)?)\s*(?<unit>[a-z]*)\s*$/i.exec(text)?.groups;
  if (!m) return undefined;
  // both groups always take part in a match (the suffix may be empty)
  const { amount = '', unit: suffix = '' } = m;
  const unit = MEMORY_UNITS[suffix.toLowerCase()];
  if (unit === undefined) return undefined;
  const bytes = Math.floor(Number(amount) * unit);
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

/** Formats bytes the way parseMemory reads them back, for logs and messages. */
export function formatMemory(bytes: number): string {
  for (const [unit, size] of [
    ['g', 1024 ** 3],
    ['m', 1024 ** 2],
    ['k', 1024],
  ] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return `${bytes}b`;
}
