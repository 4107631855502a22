import { readFileSync, rmSync } from 'node:fs';
import { get, type IncomingMessage } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMgxClient, type MgxClient } from '@mgx/client';
import { newServerProcess, type ServerProcess } from '../support/server-process.js';
import { collect, sleep } from '../support/sessions.js';

// The archive of a large workspace streams with bounded memory: the server is its own process,
// its RSS read from /proc while a slow client downloads 10,000 incompressible files.

const FILES = 10_000;
const FILE_BYTES = 16 * 1024;
const TOTAL_MB = (FILES * FILE_BYTES) / 2 ** 20;

let server: ServerProcess;
let dataDir: string;
let client: MgxClient;
beforeAll(async () => {
  ({ server, dataDir } = await newServerProcess(
    'mgx-files-archive',
    { AGENT_CONTAINER_MEMORY_LIMIT: '256m', MGX_LOG_LEVEL: 'warn' },
    { memoryProbe: true },
  ));
  await server.start();
  client = createMgxClient({ url: server.url });
});
afterAll(async () => {
  await server?.stop('SIGTERM');
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024;

describe('the archive of a 10,000-file workspace', () => {
  it(`streams ${TOTAL_MB} MB to a slow client with the server's memory bounded`, async () => {
    const workspaceId = 'ws-ten-thousand';
    // the agent makes the files, 100 directories of 100, random so gzip cannot shrink them
    const make = `const fs = require('fs'), c = require('crypto'); for (let d = 0; d < ${FILES / 100}; d++) { fs.mkdirSync('d' + d); for (let f = 0; f < 100; f++) fs.writeFileSync('d' + d + '/f' + f + '.bin', c.randomBytes(${FILE_BYTES})); }`;
    const s = await client.sessions.create.mutate({
      framework: 'exec',
      prompt: 'make files',
      workspaceId,
      timeoutSeconds: 600,
      options: { command: ['/usr/local/bin/node', '-e', make] },
    });
    expect((await collect(client, s.id)).at(-1)?.data).toMatchObject({ status: 'succeeded' });
    const listed = await client.workspaces.list.query({});
    expect(listed.items.find((w) => w.id === workspaceId)).toMatchObject({ files: FILES, sizeBytes: FILES * FILE_BYTES });

    const pid = server.pid!;
    // the first archive loads what streaming needs (zlib, tar-stream): measured from after it
    await new Promise<void>((resolve, reject) =>
      get(`${server.url}/workspaces/${workspaceId}/archive.tar.gz?path=d0`, (res) => res.resume().on('end', resolve)).on('error', reject),
    );
    const baseline = rssMb(pid);
    let peak = baseline;
    // what the server holds live (heap and buffers after a full collection): an archive piled up
    // in memory would show here, whatever the collector's timing does to RSS
    const retainedBefore = await server.retainedMb();
    let retainedPeak = retainedBefore;
    let files = 0;
    let bytes = 0;
    let received = 0;
    let nextPause = 8 * 2 ** 20;
    const res = await new Promise<IncomingMessage>((resolve, reject) =>
      get(`${server.url}/workspaces/${workspaceId}/archive.tar.gz`, resolve).on('error', reject),
    );
    expect(res.statusCode).toBe(200);
    const extract = tar.extract();
    extract.on('entry', (header, stream, next) => {
      if (header.type === 'file') files++;
      stream.on('data', (b: Buffer) => (bytes += b.length));
      stream.on('end', next);
    });
    await pipeline(
      res,
      // a slow reader: every 8 MB it stops for a while, so a server without backpressure would pile the archive up in memory
      async function* (source: AsyncIterable<Buffer>) {
        for await (const chunk of source) {
          received += chunk.length;
          if (received >= nextPause) {
            nextPause += 8 * 2 ** 20;
            await sleep(300);
            peak = Math.max(peak, rssMb(pid));
            retainedPeak = Math.max(retainedPeak, await server.retainedMb());
          }
          yield chunk;
        }
      },
      createGunzip(),
      extract,
    );
    peak = Math.max(peak, rssMb(pid));
    console.log(
      `archive of ${FILES} files (${TOTAL_MB} MB, ${(received / 2 ** 20).toFixed(1)} MB gzipped): server RSS ${baseline.toFixed(1)} MB before, peak ${peak.toFixed(1)} MB (+${(peak - baseline).toFixed(1)} MB); retained heap and buffers ${retainedBefore.toFixed(1)} MB before, peak ${retainedPeak.toFixed(1)} MB (+${(retainedPeak - retainedBefore).toFixed(1)} MB)`,
    );
    expect(files).toBe(FILES);
    expect(bytes).toBe(FILES * FILE_BYTES);
    // the archive is 156 MB: a server that buffered it would hold about that much more (measured
    // here: +21 to +52 MB RSS, +37 MB retained, whatever the workspace's size); RSS also moves with
    // the collector's timing on a shared machine
    expect(retainedPeak - retainedBefore).toBeLessThan(64);
    expect(peak - baseline).toBeLessThan(100);
    // making 156 MB of random files in a container and reading them back slowly takes minutes
    // on a loaded 2-core machine: the bound is on memory, not on time
  }, 300_000);
});
