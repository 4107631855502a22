import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { dirname, join } from 'node:path';
import type { Duplex } from 'node:stream';
import type { Caller, PreviewLinks } from '@mgx/api';
import type { Logger, Settings } from '@mgx/config';
import type { SessionRecord, Store } from '@mgx/event-store';
import type { Metrics } from '@mgx/metrics';
import {
  PreviewError,
  PreviewErrorCode,
  PreviewProxy,
  PreviewSigner,
  previewTargetOf,
  refuse,
  refuseUpgrade,
  takeToken,
  TOKEN_PARAM,
  type PreviewDialer,
  type PreviewTarget,
} from '@mgx/preview';
import { FORWARDED, forwardToWorker, forwardUpgradeToWorker } from './worker-forward.js';

/** The cookie a signed link leaves, scoped to its preview's path (or host). */
const COOKIE = 'mgx_preview';

export interface PreviewRoutes extends PreviewLinks {
  /** Serves a preview request; false when the URL is not a preview's. */
  request(req: IncomingMessage, res: ServerResponse): Promise<boolean>;
  /** The same for an upgrade (WebSocket); false when it is not a preview's. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<boolean>;
  /** A session held here ended: its preview connections close. */
  endSession(sessionId: string): void;
  close(): void;
}

/**
 * The signing key of preview links: MGX_PREVIEW_KEY, or MGX_PREVIEW_KEY_FILE, or one made on
 * first start and kept in the data directory (a single node; a fleet sets the same key on all).
 */
export function previewKey(settings: Settings): Buffer {
  if (settings.preview.key) return Buffer.from(settings.preview.key);
  const file = settings.preview.keyFile ?? join(settings.store.dataDir, 'preview.key');
  try {
    const key = readFileSync(file, 'utf8').trim();
    if (key.length >= 32) return Buffer.from(key);
    if (settings.preview.keyFile) throw new Error(`${file} holds fewer than 32 characters`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || settings.preview.keyFile) throw err;
  }
  mkdirSync(dirname(file), { recursive: true });
  const key = randomBytes(32).toString('base64url');
  writeFileSync(file, `${key}\n`, { mode: 0o600, flag: 'w' });
  chmodSync(file, 0o600);
  return Buffer.from(key);
}

function cookieOf(req: IncomingMessage): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [name, ...value] = part.trim().split('=');
    if (name === COOKIE) return value.join('=');
  }
  return undefined;
}

/**
 * Previews in the composition: who may open one (a signed link, the cookie it leaves, or the
 * tenant's bearer token), whether the session runs here (dial its tunnel) or on another worker
 * (forward the request to the URL that worker advertises).
 */
export function previewRoutes(o: {
  settings: Settings;
  store: Store;
  callerOf: (authorization: string | undefined) => Caller | null;
  /** The tunnels of sessions this process runs; absent on an API node. */
  dialer: PreviewDialer | undefined;
  metrics: Metrics;
  logger: Logger;
}): PreviewRoutes {
  const { settings, store, logger } = o;
  const signer = new PreviewSigner(previewKey(settings));
  const proxy = o.dialer
    ? new PreviewProxy({ dialer: o.dialer, limits: settings.preview, metrics: o.metrics, logger, cookieName: COOKIE })
    : undefined;

  /** Who may open this target, and what the request says about it; throws PreviewError. */
  async function admit(req: IncomingMessage, target: PreviewTarget): Promise<{ session: SessionRecord; token?: string; path: string }> {
    const { token, path } = takeToken(target.path);
    let allowed = false;
    for (const candidate of [token, cookieOf(req)]) {
      if (candidate === undefined) continue;
      const verdict = signer.verify(candidate, target.sessionId, target.port);
      if (verdict === 'ok') allowed = true;
      else if (candidate === token) {
        throw new PreviewError(
          PreviewErrorCode.UNAUTHORIZED,
          verdict === 'expired' ? 'the preview link has expired' : 'the preview link is not valid',
        );
      }
    }
    let tenant: string | undefined;
    if (!allowed && req.headers.authorization) {
      const caller = o.callerOf(req.headers.authorization);
      if (!caller) throw new PreviewError(PreviewErrorCode.UNAUTHORIZED, 'unknown bearer token');
      allowed = true;
      if (!caller.operator) tenant = caller.tenant;
    }
    if (!allowed) {
      throw new PreviewError(
        PreviewErrorCode.UNAUTHORIZED,
        "a preview needs the tenant's bearer token or a signed link (sessions.previewUrl)",
      );
    }
    const session = await store.sessions.getSession(target.sessionId);
    if (!session || (tenant !== undefined && session.tenant !== tenant)) {
      throw new PreviewError(PreviewErrorCode.NOT_FOUND, `session ${target.sessionId} not found`);
    }
    if (session.status !== 'running') {
      throw new PreviewError(PreviewErrorCode.NOT_RUNNING, `session ${target.sessionId} is ${session.status}, not running`);
    }
    return { session, ...(token !== undefined ? { token } : {}), path };
  }

  const forwarding = {
    self: settings.owner,
    keepHost: true,
    unreachable: (res: ServerResponse, err: Error) =>
      refuse(res, new PreviewError(PreviewErrorCode.UNREACHABLE, `the worker running the session did not answer: ${err.message}`)),
  };

  /** How to reach the session: undefined when it runs here (its tunnel), else its worker's URL. */
  async function route(req: IncomingMessage, session: SessionRecord): Promise<string | undefined> {
    if (proxy && session.workerId === settings.owner) return undefined;
    if (req.headers[FORWARDED]) {
      throw new PreviewError(PreviewErrorCode.UNREACHABLE, `session ${session.id} is not running on the worker it was sent to`);
    }
    const worker = session.workerId ? await store.workers.get(session.workerId) : null;
    if (!worker?.url) {
      throw new PreviewError(
        PreviewErrorCode.UNREACHABLE,
        `worker ${session.workerId ?? '?'} of session ${session.id} advertises no URL (MGX_WORKER_URL), so this node cannot reach it`,
      );
    }
    return worker.url;
  }

  function targetOf(req: IncomingMessage): PreviewTarget | null {
    return previewTargetOf(req.url ?? '/', req.headers.host, settings.preview.domain);
  }

  return {
    async request(req, res) {
      let target: PreviewTarget | null;
      try {
        target = targetOf(req);
        if (!target) return false;
        const { session, token, path } = await admit(req, target);
        if (token !== undefined) {
          // the link's token becomes a cookie on the preview's own path: the app's later
          // requests carry it, and the token leaves the address bar (and the app's Referer)
          const secure = settings.server.publicUrl?.startsWith('https:') || req.headers['x-forwarded-proto'] === 'https';
          const maxAge = Math.max(0, Math.floor((signer.expiresAt(token) - Date.now()) / 1000));
          res.writeHead(302, {
            location: `${target.base}${path}`,
            'set-cookie': `${COOKIE}=${token}; Path=${target.base || '/'}; Max-Age=${maxAge}; HttpOnly; SameSite=Lax${secure ? '; Secure' : ''}`,
            'cache-control': 'no-store',
          });
          res.end();
          return true;
        }
        const where = await route(req, session);
        if (where === undefined && proxy) await proxy.request(req, res, { ...target, path });
        else if (where !== undefined) await forwardToWorker(req, res, where, forwarding);
      } catch (err) {
        if (!(err instanceof PreviewError)) throw err;
        logger.debug({ url: req.url, code: err.code }, 'preview refused');
        refuse(res, err);
      }
      return true;
    },

    async upgrade(req, socket, head) {
      let target: PreviewTarget | null;
      try {
        target = targetOf(req);
        if (!target) return false;
        const { session, path } = await admit(req, target);
        const where = await route(req, session);
        if (where === undefined && proxy) await proxy.upgrade(req, socket, head, { ...target, path });
        else if (where !== undefined) {
          await forwardUpgradeToWorker(req, socket, head, where, forwarding).catch((err: Error) => {
            throw new PreviewError(PreviewErrorCode.UNREACHABLE, `cannot reach the worker at ${where}: ${err.message}`, { cause: err });
          });
        }
      } catch (err) {
        if (!(err instanceof PreviewError)) throw err;
        refuseUpgrade(socket, err);
      }
      return true;
    },

    link(sessionId, port, ttlMs, origin, form) {
      const expiresAt = Date.now() + Math.min(ttlMs, settings.preview.maxLinkMs);
      const token = signer.sign(sessionId, port, expiresAt);
      const base = settings.server.publicUrl ?? origin;
      const domain = settings.preview.domain;
      let url: string;
      if (form === 'host' && domain) {
        // the same scheme and port as the API, on the preview's own host name
        const own = new URL(base);
        own.hostname = `${port}-${sessionId}.${domain}`;
        url = `${own.origin}/?${TOKEN_PARAM}=${token}`;
      } else url = `${base}/sessions/${sessionId}/preview/${port}/?${TOKEN_PARAM}=${token}`;
      return { url, expiresAt: signer.expiresAt(token) };
    },

    endSession: (id) => proxy?.endSession(id),
    close: () => proxy?.closeAll(),
  };
}
