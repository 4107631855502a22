import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { createHTTPHandler } from '@trpc/server/adapters/standalone';
import pino from 'pino';
import type { ModelCallData } from '@mgx/agent-sdk';
import {
  AuthConfigError,
  createAppRouter,
  DEFAULT_TENANT,
  SessionSse,
  TokenAuth,
  withoutSocket,
  WorkspaceAccess,
  type ApiDeps,
  type FrameworkInfo,
} from '@mgx/api';
import type { Logger, Settings } from '@mgx/config';
import { openStore, type SessionRecord, type Store } from '@mgx/event-store';
import { EgressProxy, ModelGateway } from '@mgx/gateway';
import { IngestHub, toStoredEvent } from '@mgx/ingest';
import { createPrometheusMetrics, type PrometheusMetrics } from '@mgx/metrics';
import { Monitor } from '@mgx/monitor';
import { catalogFromLabels, FRAMEWORK_CATALOG_LABEL, frameworkCatalog, secretsWanted } from '@mgx/runner/catalog';
import { DockerRuntime, discoverSocket, type ContainerRuntime, type EngineInfo } from '@mgx/runtime';
import { Reaper, Scheduler, WarmPool, WorkerLease } from '@mgx/scheduler';
import { WorkspaceFiles } from '@mgx/workspaces';
import rootPackage from '../../../package.json' with { type: 'json' };
import { CONSOLE_DIST, consoleRoutes } from './console-http.js';
import { corsFor } from './cors.js';
import { filesRoutes } from './files-http.js';
import { fleetMetricsRefresher } from './fleet-metrics.js';
import { previewRoutes } from './preview-routes.js';
import { MemorySecrets } from './secrets.js';
import { FORWARDED, holderCalls } from './worker-forward.js';

/** The version of mgx (the root package.json's). */
export const VERSION: string = rootPackage.version;

export class StartupError extends Error {
  override readonly name = 'StartupError';
  constructor(
    readonly code: 'UNSAFE_BIND' | 'LISTEN_FAILED' | 'BAD_TOKENS' | 'NO_ENGINE',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface RunningServer {
  url: string;
  port: number;
  settings: Settings;
  store: Store;
  /** The container engine; absent on an API node that has none (only workers need one). */
  runtime: ContainerRuntime | undefined;
  /** The session sockets (ingest, tunnel, services): `ingest.dial` reaches a port inside a session's container. */
  ingest: IngestHub;
  /** The model gateway, when MGX_MODEL_PROVIDERS names providers and this process runs sessions. */
  gateway: ModelGateway | undefined;
  /** The Prometheus adapter: the packages take it as their Metrics port, GET /metrics renders it. */
  metrics: PrometheusMetrics;
  scheduler: Scheduler | undefined;
  monitor: Monitor | undefined;
  /** The warm pool, when MGX_WARM_POOL_SIZE > 0 and this process runs sessions. */
  pool: WarmPool | undefined;
  /** Declares workers whose lease ran out dead and settles their sessions (every role). */
  reaper: Reaper;
  logger: Logger;
  /**
   * Stops taking requests and claiming sessions. Running sessions are left to the next
   * start (it reconciles them), and the worker keeps its lease in the store until it runs
   * out: a start within it adopts them, after it the fleet settles them as lost. Pass
   * `drain` to claim nothing more (state draining), wait for them to finish, then deregister.
   * A call without `drain` while a drain waits cuts it short into that hand-over; both calls
   * resolve when the server has stopped.
   */
  close(options?: { drain?: boolean }): Promise<void>;
}

export interface StartOptions {
  logger?: Logger;
  frameworks?: FrameworkInfo[];
  /** The engine to use instead of discovering one; null: this process has none (an API node). */
  runtime?: ContainerRuntime | null;
  /**
   * An operator asked this worker to drain (`system.drainWorker`, heard at a heartbeat). The
   * process drains and exits (main.ts); by default the server drains itself with `close`.
   */
  onDrainRequested?: () => void;
  /** The built web console to serve at `/` (default apps/console/dist); MGX_CONSOLE=false serves none. */
  consoleDir?: string;
}

/**
 * The frameworks of the agent image sessions run in, as its build recorded them (the label
 * FRAMEWORK_CATALOG_LABEL). This checkout's own, with a warning, when the image cannot tell.
 */
async function imageFrameworks(runtime: ContainerRuntime, image: string, logger: Logger): Promise<FrameworkInfo[]> {
  const fallback = (why: string, fields: Record<string, unknown> = {}) => {
    logger.warn({ image, label: FRAMEWORK_CATALOG_LABEL, ...fields }, `${why}; frameworks.list reports this checkout's frameworks`);
    return frameworkCatalog();
  };
  let labels: Record<string, string> | null;
  try {
    labels = await runtime.imageLabels(image);
  } catch (err) {
    return fallback('cannot read the agent image', { err });
  }
  if (labels === null) return fallback('the agent image is missing (build it: bash infra/build-agent.sh)');
  let catalog: FrameworkInfo[] | undefined;
  try {
    catalog = catalogFromLabels(labels);
  } catch (err) {
    return fallback('the agent image has a malformed framework label', { err });
  }
  return catalog ?? fallback('the agent image has no framework label: it was built before it existed (rebuild it)');
}

/** "podman 5.4.2 unix:///run/podman/podman.sock": the engine a worker drives, within 1 s, or its socket alone. */
function engineIdentity(runtime: ContainerRuntime): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    runtime.identity().then(
      (i) => `${i.engine} ${i.version} ${runtime.socket}`,
      () => runtime.socket,
    ),
    new Promise<string>((resolve) => (timer = setTimeout(() => resolve(runtime.socket), 1000))),
  ]).finally(() => clearTimeout(timer));
}

/**
 * The container engine. A process that runs sessions needs one (no socket fails the start); an
 * API node uses one only if it finds one, for the image's frameworks and engine health.
 */
function engineOf(settings: Settings, worker: boolean, metrics: PrometheusMetrics, logger: Logger): ContainerRuntime | undefined {
  let address: ReturnType<typeof discoverSocket>;
  try {
    address = discoverSocket(settings.runtime);
  } catch (err) {
    if (worker) throw err;
    logger.info({ err }, "no container engine here: this API node serves without one (frameworks.list reports this checkout's frameworks)");
    return undefined;
  }
  return new DockerRuntime({
    address,
    logger: logger.child({ component: 'runtime' }),
    onCall: (op, _s, err) => {
      if (err) metrics.runtimeErrors.inc({ op });
    },
  });
}

/**
 * The secrets a session's runner receives: those its framework asks for with these options
 * and this prompt (an exec command's secretEnv, a direct provider key), and no other.
 */
function secretsFor(session: SessionRecord, all: Record<string, string>): Record<string, string> {
  const wanted = secretsWanted(session.framework, session.options, session.prompt);
  return Object.fromEntries(wanted.filter((name) => all[name] !== undefined).map((name) => [name, all[name] ?? '']));
}

const isLoopback = (host: string) => host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));

/**
 * Composes the platform: store, runtime, ingest, monitor, scheduler, tRPC API, /metrics and
 * /healthz, in the roles the settings ask for (all-in-one by default).
 */
export async function startServer(settings: Settings, options: StartOptions = {}): Promise<RunningServer> {
  const logger: Logger = options.logger ?? pino({ level: settings.logLevel, base: { svc: 'mgx' } });
  let auth: TokenAuth;
  try {
    auth = TokenAuth.fromSettings(settings.server);
  } catch (cause) {
    if (cause instanceof AuthConfigError) throw new StartupError('BAD_TOKENS', cause.message, { cause });
    throw cause;
  }
  if (!auth.enabled && !isLoopback(settings.server.host)) {
    throw new StartupError(
      'UNSAFE_BIND',
      `refusing to listen on ${settings.server.host} without API tokens: set MGX_API_TOKENS (tenant:token,…) or bind MGX_HOST to 127.0.0.1`,
    );
  }

  // usage is labelled per tenant only for the tenants the tokens name (a bounded set); without
  // tokens there is one caller, the default tenant
  const tenants = auth.enabled ? auth.tenants : [DEFAULT_TENANT];
  const metrics = createPrometheusMetrics({ version: VERSION, node: process.version }, { tenants });
  const known = new Set(tenants);
  const worker = settings.server.role !== 'api';
  if (options.runtime === null && worker) {
    throw new StartupError('NO_ENGINE', `MGX_ROLE=${settings.server.role} runs sessions and needs a container engine`);
  }
  const runtime = options.runtime === null ? undefined : (options.runtime ?? engineOf(settings, worker, metrics, logger));
  // read while the store opens and sessions are reconciled: a slow engine delays start once
  const frameworks = options.frameworks
    ? Promise.resolve(options.frameworks)
    : runtime
      ? imageFrameworks(runtime, settings.agent.image, logger.child({ component: 'frameworks' }))
      : Promise.resolve(frameworkCatalog());
  // the engine this worker registers with, from its ping while the store opens (registration
  // waits for it only briefly, and names the socket alone after); its full info, which Podman
  // takes a second or two to give, is asked now for /healthz and kept
  const engine = worker && runtime ? engineIdentity(runtime) : Promise.resolve('');
  let engineInfo: EngineInfo | undefined;
  // asked again by /healthz while unknown (an engine down at start); concurrent asks share one request
  const learnEngine = () =>
    void runtime?.info().then(
      (i) => (engineInfo = i),
      () => undefined,
    );
  learnEngine();
  const store = await openStore(settings);
  // the fleet's workers are read from the store at each scrape
  metrics.onRender(fleetMetricsRefresher(store, metrics, logger.child({ component: 'metrics' })));

  let monitor: Monitor | undefined;
  let scheduler: Scheduler | undefined;
  let pool: WarmPool | undefined;
  const secrets = worker ? new MemorySecrets() : undefined;
  // the worker calls model providers for its sessions: their keys never leave this process
  const gateway: ModelGateway | undefined =
    worker && settings.models.providers.length > 0
      ? new ModelGateway({
          providers: settings.models.providers,
          metrics,
          logger: logger.child({ component: 'gateway' }),
          record: (sessionId, events) => ingest.record(sessionId, events),
          budgetExceeded: (sessionId, message) => {
            if (!monitor?.budgetExceeded(sessionId, message))
              logger.warn({ sessionId }, 'a session over its model budget is not watched here');
          },
        })
      : undefined;
  // connections to the allow-listed domains of sessions that have a list, made by the worker
  const egress = worker
    ? new EgressProxy({
        metrics,
        logger: logger.child({ component: 'egress' }),
        record: (sessionId, events) => ingest.record(sessionId, events),
      })
    : undefined;
  const ingest: IngestHub = new IngestHub({
    services: { ...(gateway ? { model: gateway } : {}), ...(egress ? { proxy: egress } : {}) },
    baseDir: join(settings.store.dataDir, 'run', 'sessions'),
    maxEventBytes: settings.limits.maxEventBytes,
    maxEventsPerSecond: settings.limits.maxEventsPerSecond,
    containerUser: settings.agent.user,
    logger: logger.child({ component: 'ingest' }),
    sink: {
      lastRid: (sessionId) => store.events.lastRid(sessionId),
      append: async (sessionId, events) => {
        const redact = secrets?.redactor(sessionId);
        const res = await store.events.append(
          sessionId,
          events.map((e) => toStoredEvent(redact ? { ...e, data: redact(e.data) } : e)),
        );
        metrics.ingestEvents.inc(res.stored.length);
        monitor?.activity(sessionId);
        const rejected = res.stored.filter((e) => e.type === 'ERROR' && e.data.code === 'EVENT_REJECTED').length;
        if (rejected > 0) metrics.ingestRejected.inc(rejected);
      },
      finish: async (sessionId, ev) => {
        metrics.ingestEvents.inc();
        const redact = secrets?.redactor(sessionId);
        const data = (redact ? redact(ev.data) : ev.data) as typeof ev.data;
        if (monitor) await monitor.agentFinished(sessionId, ev.rid, data, ev.ts);
      },
    },
  });

  const preview = previewRoutes({
    settings,
    store,
    callerOf: (header) => auth.callerOf(header),
    dialer: worker ? { dial: (id, port) => ingest.dial(id, port) } : undefined,
    metrics,
    logger: logger.child({ component: 'preview' }),
  });

  // a worker without an engine does not get here: engineOf failed the start
  if (worker && runtime) {
    monitor = new Monitor({
      store,
      runtime,
      ingest,
      metrics,
      logger: logger.child({ component: 'monitor' }),
      stopGraceMs: settings.agent.stopGraceMs,
      finishGraceMs: settings.agent.finishGraceMs,
      pollMs: settings.monitor.pollMs,
      usageIntervalMs: settings.monitor.usageIntervalMs,
      cpuPeriod: settings.agent.cpuPeriod,
      tenantLabel: (tenant) => (known.has(tenant) ? tenant : 'other'),
      logCaptureBytes: settings.limits.logCaptureBytes,
      // the id the scheduler claims under
      workerId: settings.owner,
      usage: (id) => {
        const model = gateway?.usage(id);
        return model ? { model } : undefined;
      },
    });
    if (settings.pool.size > 0) pool = new WarmPool({ runtime, settings, metrics, logger: logger.child({ component: 'pool' }) });
    const lease = new WorkerLease({
      workers: store.workers,
      info: {
        id: settings.owner,
        hostname: hostname(),
        engine: await engine,
        capacity: settings.scheduler.maxConcurrent,
        version: VERSION,
        ...(settings.server.workerUrl !== undefined ? { url: settings.server.workerUrl } : {}),
      },
      heartbeatMs: settings.fleet.heartbeatMs,
      leaseMs: settings.fleet.leaseMs,
      inUse: () => scheduler?.inUse ?? 0,
      renewed: () => scheduler?.notify(),
      drainRequested: () => (options.onDrainRequested ?? (() => void running.close({ drain: true })))(),
      logger: logger.child({ component: 'lease' }),
    });
    scheduler = new Scheduler({
      lease,
      pool,
      store,
      runtime,
      ingest,
      monitor,
      metrics,
      settings,
      logger: logger.child({ component: 'scheduler' }),
      secrets: (session) => secretsFor(session, secrets?.get(session.id) ?? {}),
      opening: (s) => {
        gateway?.admit({
          id: s.id,
          tenant: s.tenant,
          maxModelTokens: s.limits.maxModelTokens,
          maxModelCalls: s.limits.maxModelCalls,
          recordContent: s.limits.recordModelContent === true,
        });
        egress?.admit({ id: s.id, allow: s.limits.egressAllow ?? [] });
      },
      resuming: async (s) => {
        // the model budget counts what the session used under the worker it had before
        if (!gateway) return;
        const last = await store.events.lastOfType(s.id, 'MODEL_CALL');
        const total = (last?.data as ModelCallData | undefined)?.total;
        if (total) gateway.resume(s.id, total);
      },
      ended: (id) => {
        secrets?.forget(id);
        gateway?.forget(id);
        egress?.forget(id);
        preview.endSession(id);
      },
    });
    // before reconcile: the record it replaces says whether there is anything left to adopt
    await scheduler.register();
    try {
      await scheduler.reconcile();
    } catch (err) {
      // an engine that is down must not keep the API from answering; the poll retries claims
      logger.error({ err }, 'reconcile failed; continuing');
    }
  }

  const reaper = new Reaper({
    store,
    metrics,
    intervalMs: settings.fleet.heartbeatMs,
    workspacesShared: settings.fleet.workspacesShared,
    logger: logger.child({ component: 'reaper' }),
  });

  // the files of this host's workspaces: only a process that runs sessions keeps them
  const workspaces = new WorkspaceAccess({
    store,
    files: worker
      ? new WorkspaceFiles({ root: settings.store.workspaceRoot, user: settings.agent.user, limits: settings.files })
      : undefined,
    workerId: settings.owner,
    shared: settings.fleet.workspacesShared,
    // a session queued behind an upload is claimed as it ends, not at the next poll
    written: () => scheduler?.notify(),
    logger: logger.child({ component: 'workspaces' }),
  });
  const files = filesRoutes({
    auth,
    access: workspaces,
    workers: store.workers,
    self: settings.owner,
    logger: logger.child({ component: 'files' }),
  });

  let ready = false;
  const deps: ApiDeps = {
    settings,
    store,
    runtime,
    metrics,
    logger: logger.child({ component: 'api' }),
    frameworks: await frameworks,
    version: VERSION,
    secrets,
    workspaces,
    ready: () => ready,
    preview,
    holders: holderCalls(store.workers, settings.owner),
    worker: {
      queued: () => scheduler?.notify(),
      cancelRunning: (id) => monitor?.cancel(id) ?? false,
    },
  };

  /** A call's context: its caller from the bearer token (or the `token` connection param), its origin. */
  const contextOf = (req: IncomingMessage, connectionParams: Record<string, unknown> | null) => {
    const fromParams = connectionParams?.token;
    const header = req.headers.authorization ?? (typeof fromParams === 'string' ? `Bearer ${fromParams}` : undefined);
    const caller = auth.callerOf(header);
    const proto = req.headers['x-forwarded-proto'] === 'https' ? 'https' : 'http';
    const origin = req.headers.host ? `${proto}://${req.headers.host}` : undefined;
    return {
      deps,
      tenant: caller?.tenant ?? null,
      operator: caller?.operator ?? false,
      origin,
      authorization: header,
      forwarded: req.headers[FORWARDED] !== undefined,
    };
  };
  const trpc = createHTTPHandler({
    router: createAppRouter({ ssePingMs: settings.server.ssePingMs }),
    basePath: '/trpc/',
    maxBodySize: settings.limits.maxPromptBytes + 64 * 1024,
    createContext: ({ req, info }) => contextOf(req, info.connectionParams as Record<string, unknown> | null),
    onError: ({ error, path }) => {
      if (error.code === 'INTERNAL_SERVER_ERROR') logger.error({ path, err: error }, 'request failed');
    },
    // tRPC sets its own Vary, over the one CORS set: Origin is added to it (answers depend on it)
    responseMeta: () => ({ headers: { vary: ['Origin'] } }),
  });

  const cors = corsFor(settings.server.corsOrigins);
  const webConsole = settings.server.console
    ? consoleRoutes({ dir: options.consoleDir ?? CONSOLE_DIST, previewDomain: settings.preview.domain })
    : undefined;

  const sessionSse = new SessionSse({ ssePingMs: settings.server.ssePingMs });
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    // first: on a preview host name (MGX_PREVIEW_DOMAIN) every path is the app's
    if (await preview.request(req, res)) return;
    const [path = '/'] = (req.url ?? '/').split('?');
    // pages of other origins (MGX_CORS_ORIGINS) call the API and its files, never the rest
    if ((path.startsWith('/trpc/') || path.startsWith('/workspaces/')) && cors(req, res)) return;
    if (path.startsWith('/trpc/')) {
      // session streams: one store read and one serialization per batch for all subscribers
      if (await sessionSse.serve(req, res, '/trpc/', (params) => contextOf(req, params))) return;
      return trpc(req, res);
    }
    if (await files(req, res)) return;
    if (path === '/metrics' && req.method === 'GET') {
      const body = await metrics.render();
      res.writeHead(200, { 'content-type': metrics.contentType });
      return res.end(body);
    }
    if (path === '/healthz' && req.method === 'GET') {
      let engine: unknown = null;
      let ok = ready;
      if (runtime) {
        try {
          // ping is never retried: a health check must answer fast when the engine is down; the
          // engine in full once known, its ping's identity until then (Podman's info is slow)
          await runtime.ping();
          if (!engineInfo) learnEngine();
          engine = engineInfo ?? { ...(await runtime.identity()), socket: runtime.socket };
        } catch (err) {
          ok = false;
          engine = { error: (err as Error).message };
        }
      }
      res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' });
      // no token here: no server paths (engine socket, store file) either
      return res.end(
        JSON.stringify({ ok, ready, version: VERSION, role: settings.server.role, engine: withoutSocket(engine), store: store.kind }),
      );
    }
    // last: the console's pages and assets, and its client routes
    if (await webConsole?.(req, res)) return;
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: 'not found' }));
  };

  const http: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      logger.error({ err, url: req.url }, 'http handler failed');
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  // WebSockets: only previews take upgrades
  http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    preview.upgrade(req, socket, head).then(
      (served) => {
        if (!served) socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      },
      (err: unknown) => {
        logger.error({ err, url: req.url }, 'upgrade failed');
        socket.destroy();
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    http.once('error', (cause) =>
      reject(
        new StartupError('LISTEN_FAILED', `cannot listen on ${settings.server.host}:${settings.server.port}: ${cause.message}`, { cause }),
      ),
    );
    http.listen(settings.server.port, settings.server.host, () => resolve());
  });
  const address = http.address();
  const port = typeof address === 'object' && address ? address.port : settings.server.port;
  const host = settings.server.host.includes(':') ? `[${settings.server.host}]` : settings.server.host;
  const url = `http://${host}:${port}`;
  // after reconcile: it removed the containers an earlier pool left
  await pool?.start().catch((err: unknown) => logger.error({ err }, 'warm pool did not start; sessions start cold'));
  scheduler?.start();
  reaper.start();
  ready = true;
  logger.info(
    { url, role: settings.server.role, store: store.describe(), engine: runtime?.socket ?? null, owner: settings.owner },
    'mgx server ready',
  );

  let closing: Promise<void> | undefined;
  /** Ends a drain's wait for running sessions early (a hand-over asked during the drain). */
  let cutDrain: (() => void) | undefined;
  const drainCut = new Promise<void>((resolve) => (cutDrain = resolve));
  const running: RunningServer = {
    url,
    port,
    settings,
    store,
    runtime,
    ingest,
    gateway,
    metrics,
    scheduler,
    monitor,
    pool,
    reaper,
    logger,
    close: (opts = {}) => {
      if (closing && !opts.drain) cutDrain?.();
      return (closing ??= (async () => {
        ready = false;
        await reaper.stop();
        await scheduler?.stop({ drain: opts.drain === true });
        await pool?.close();
        // a hand-over asked meanwhile stops the wait: what still runs is left to the next start
        const idle = scheduler ? scheduler.idle() : Promise.resolve();
        const drained = opts.drain === true && (await Promise.race([idle.then(() => true), drainCut.then(() => false)]));
        await scheduler?.release({ deregister: drained });
        monitor?.detachAll();
        // containers of sessions that finished are removed after their FINISH: let those end
        await monitor?.removals();
        preview.close();
        sessionSse.close();
        await ingest.closeAll();
        gateway?.close();
        egress?.close();
        http.closeAllConnections();
        await new Promise<void>((resolve) => http.close(() => resolve()));
        await store.close();
        logger.info({}, 'mgx server stopped');
      })());
    },
  };
  return running;
}
