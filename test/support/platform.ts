import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { loadSettings } from '@mgx/config';
import { createMgxClient, type MgxClient } from '@mgx/client';
import { startServer, type RunningServer } from '@mgx/server';
import { serverLogFile } from './server-log.js';

export interface Platform {
  server: RunningServer;
  client: MgxClient;
  dataDir: string;
  env: Record<string, string>;
  /** The file the server logs to (printed when a test fails). */
  logFile: string;
  close(): Promise<void>;
}

/**
 * A real all-in-one server on port 0 with its own data directory and owner label, so
 * parallel test files never see (or reconcile away) each other's containers. It logs to a
 * file of its own (MGX_TEST_LOG_LEVEL, default info), shown only when a test fails.
 */
export async function startPlatform(env: Record<string, string> = {}): Promise<Platform> {
  const dataDir = mkdtempSync(join(tmpdir(), 'mgx-e2e-'));
  const fullEnv: Record<string, string> = {
    MGX_DATA_DIR: dataDir,
    MGX_PORT: '0',
    MGX_OWNER: `mgx-test-${randomBytes(4).toString('hex')}`,
    AGENT_CONTAINER_MEMORY_LIMIT: '256m',
    AGENT_STOP_GRACE_SECONDS: '2',
    AGENT_MONITOR_POLL_SECONDS: '1',
    ...(process.env.CONTAINER_HOST ? { CONTAINER_HOST: process.env.CONTAINER_HOST } : {}),
    // the agent image under test (a branch's own tag), as ServerProcess passes it on too
    ...(process.env.AGENT_CONTAINER_IMAGE ? { AGENT_CONTAINER_IMAGE: process.env.AGENT_CONTAINER_IMAGE } : {}),
    // the end-to-end suite runs on MongoDB too when pointed at one
    ...(process.env.MGX_EVENT_STORE ? { MGX_EVENT_STORE: process.env.MGX_EVENT_STORE } : {}),
    ...(process.env.MONGODB_URI
      ? { MONGODB_URI: process.env.MONGODB_URI, MGX_MONGODB_DB: `mgx_e2e_${randomBytes(4).toString('hex')}` }
      : {}),
    ...env,
  };
  const settings = loadSettings(fullEnv, process.cwd());
  const logFile = serverLogFile(`server ${fullEnv.MGX_OWNER}`);
  // synchronous writes: the file is complete when a failing test reads it
  const logger = pino({ level: process.env.MGX_TEST_LOG_LEVEL ?? 'info' }, pino.destination({ dest: logFile, sync: true }));
  const server = await startServer(settings, { logger });
  const client = createMgxClient({ url: server.url });
  return {
    server,
    client,
    dataDir,
    env: fullEnv,
    logFile,
    async close() {
      await server.close({ drain: true });
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
