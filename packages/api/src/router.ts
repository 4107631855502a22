import { frameworksRouter } from './routers/frameworks.js';
import { sessionsRouter } from './routers/sessions.js';
import { systemRouter } from './routers/system.js';
import { workspacesRouter } from './routers/workspaces.js';
import { tenantsRouter } from './routers/tenants.js';
import { createTrpc, type RouterOptions } from './trpc.js';

/** The router's type, for typed clients (`@mgx/client`). */
export type AppRouter = ReturnType<typeof createAppRouter>;

/** The API. Built once per server, so its options (keep-alive) come from the settings. */
export function createAppRouter(options: RouterOptions) {
  const t = createTrpc(options);
  return t.router({
    sessions: sessionsRouter(t),
    frameworks: frameworksRouter(t),
    system: systemRouter(t),
    workspaces: workspacesRouter(t),
    tenants: tenantsRouter(t),
  });
}
