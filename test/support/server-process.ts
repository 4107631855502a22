import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '..', '..');

/** A free TCP port on loopback. */
export const freePort = () =>
  new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });

/** The real server as its own process, so it can be killed like in production. */
export class ServerProcess {
  child: ChildProcess | undefined;
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
  }
  get pid(): number | undefined {
    return this.child?.pid;
  }
  get url() {
    return `http://127.0.0.1:${this.env.MGX_PORT}`;
  }
  async start(): Promise<void> {
    this.child = spawn(process.execPath, [...this.nodeArgs, '--import', 'tsx', join(ROOT, 'apps/server/src/main.ts')], {
      cwd: ROOT,
      env: { ...process.env, ...this.env },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    // a test or bench that dies must not leave its server running (and its pool, its sessions)
    const child = this.child;
    const orphan = () => child.kill('SIGTERM');
    process.once('exit', orphan);
    child.once('exit', () => process.off('exit', orphan));
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (this.child.exitCode !== null || this.child.signalCode !== null)
        throw new Error(`server exited with ${this.child.exitCode ?? this.child.signalCode}`);
      const ok = await fetch(`${this.url}/healthz`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('server did not become ready in 30 s');
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
