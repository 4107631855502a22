import type { Trpc } from '../trpc.js';

export function frameworksRouter({ router, authed }: Trpc) {
  return router({
    list: authed.query(({ ctx }) => ctx.deps.frameworks),
  });
}
