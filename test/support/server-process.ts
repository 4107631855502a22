import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serverLogFile, tail } from './server-log.js';

const ROOT = join(import.meta.dirname, '..', '..');

/** The server as it ships: the bundle scripts/build-server.mjs makes, run with plain node. */
export const SERVER_ENTRY = join(ROOT, 'apps/server/dist/server.mjs');

/** Bundles the server from its sources (under a second); the test run's global set-up and the bench call it first. */
export function buildServer(): void {
  execFileSync(process.execPath, [join(ROOT, 'scripts/build-server.mjs')], { cwd: ROOT, stdio: 'inherit' });
}

/** A free TCP port on loopback. */
export const freePort = () =>
  new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });

/**
 * The real server as its own process, so it can be killed like in production. Its stdout
 * and stderr go to a log file of its own (`logFile`), shown only when a test fails.
 */
export class ServerProcess {
  child: ChildProcess | undefined;
  readonly logFile: string;
  private probeFile: string | undefined;
  constructor(
    readonly env: Record<string, string>,
    readonly nodeArgs: string[] = [],
    options: { memoryProbe?: boolean } = {},
  ) {
    if (options.memoryProbe) {
      this.probeFile = join(tmpdir(), `mgx-memory-probe-${randomBytes(4).toString('hex')}.json`);
      this.nodeArgs = [...nodeArgs, '--expose-gc', '--require', join(import.meta.dirname, 'memory-probe.cjs')];
      this.env = { ...env, MGX_TEST_MEMORY_PROBE: this.probeFile };
    }
    this.logFile = serverLogFile(`server process ${env.MGX_OWNER ?? ''}`.trim());
  }
  get pid(): number | undefined {
    return this.child?.pid;
  }
  get url() {
    return `http://127.0.0.1:${this.env.MGX_PORT}`;
  }
  async start(): Promise<void> {
    // appended to across restarts: one log for every life of this server
    const log = openSync(this.logFile, 'a');
    try {
      this.child = spawn(process.execPath, [...this.nodeArgs, SERVER_ENTRY], {
        cwd: ROOT,
        env: { ...process.env, ...this.env },
        stdio: ['ignore', log, log],
      });
    } finally {
      closeSync(log);
    }
    // a test or bench that dies must not leave its server running (and its pool, its sessions)
    const child = this.child;
    const orphan = () => child.kill('SIGTERM');
    process.once('exit', orphan);
    child.once('exit', () => process.off('exit', orphan));
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (this.child.exitCode !== null || this.child.signalCode !== null)
        throw new Error(`server exited with ${this.child.exitCode ?? this.child.signalCode}; its log ends:\n${this.logTail()}`);
      const ok = await fetch(`${this.url}/healthz`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`server did not become ready in 30 s; its log ends:\n${this.logTail()}`);
  }
  private logTail(): string {
    return tail(this.logFile, 0, 20).join('\n');
  }
  /**
   * MB of heap and buffers still reachable after a full garbage collection in the server
   * (constructed with `memoryProbe`). Unlike RSS, it does not move with allocation rate.
   */
  async retainedMb(): Promise<number> {
    const file = this.probeFile;
    if (!file) throw new Error('retainedMb needs a ServerProcess constructed with { memoryProbe: true }');
    rmSync(file, { force: true });
    this.child!.kill('SIGUSR2');
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      try {
        const m = JSON.parse(readFileSync(file, 'utf8')) as { heapUsed: number; external: number };
        return (m.heapUsed + m.external) / 2 ** 20;
      } catch {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    throw new Error('the server wrote no memory probe within 10 s');
  }
  async stop(signal: 'SIGKILL' | 'SIGTERM'): Promise<number | null> {
    const child = this.child!;
    if (this.probeFile) rmSync(this.probeFile, { force: true });
    if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    child.kill(signal);
    return exited;
  }
}

/**
 * A ServerProcess on a free port with a fresh data directory and owner label
 * (`<prefix>-<random>`, the data directory named after the prefix too); `env` adds the rest.
 */
export async function newServerProcess(
  prefix: string,
  env: Record<string, string>,
  options: { memoryProbe?: boolean } = {},
): Promise<{ server: ServerProcess; dataDir: string; owner: string }> {
  const dataDir = mkdtempSync(join(tmpdir(), `${prefix}-`));
  const owner = `${prefix}-${randomBytes(4).toString('hex')}`;
  const server = new ServerProcess({ MGX_PORT: String(await freePort()), MGX_DATA_DIR: dataDir, MGX_OWNER: owner, ...env }, [], options);
  return { server, dataDir, owner };
}

/** CPU time (utime + stime) of a process in ms, from /proc/<pid>/stat (fields 14 and 15, 100 ticks a second). */
export function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8')
    .replace(/^.*\) /, '')
    .split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}
