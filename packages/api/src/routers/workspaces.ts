import { z } from 'zod';
import type { WorkspaceSummary } from '@mgx/event-store';
import type { FileEntry, ReadResult } from '@mgx/workspaces';
import type { HolderProcedure } from '../context.js';
import type { AuthedContext, Trpc } from '../trpc.js';
import { WorkspaceAccessError, WorkspaceAccessErrorCode } from '../workspace-access.js';
import { tenantId, workspaceId } from '../ids.js';
import { scopedTenant } from './tenant-scope.js';

// checked component by component by the files module (no `..`, no absolute path, no NUL)
const path = z.string().max(4096);

/** What clients see of a workspace. Size and file count as its holder measures them; null when it cannot say. */
export interface WorkspaceView {
  id: string;
  /** For operators, who see every tenant's workspaces. */
  tenant?: string;
  createdAt: number;
  /** The worker whose disk holds its files; null before its first session or upload. */
  holder: string | null;
  lastSession: WorkspaceSummary['lastSession'];
  /** Bytes of regular files; null when the worker holding the files did not answer. */
  sizeBytes: number | null;
  files: number | null;
}

/** A listing stops counting here: a workspace this large shows at least this many files. */
const USAGE_WALK_LIMIT = 100_000;

/** Size and file count of a workspace, measured by the worker that holds its files. */
export interface WorkspaceSize {
  id: string;
  sizeBytes: number;
  files: number;
}

/**
 * Runs `here` where this process holds the workspace's files; else has the worker that holds
 * them (any live worker for a workspace nobody holds yet) run the same procedure for the caller.
 * A forwarded call is never sent on: a workspace that moved meanwhile is refused.
 */
async function onHolder<T>(
  ctx: AuthedContext,
  procedure: HolderProcedure,
  input: { workspaceId: string },
  here: () => Promise<T>,
): Promise<T> {
  try {
    return await here();
  } catch (err) {
    const { holders } = ctx.deps;
    if (!(err instanceof WorkspaceAccessError) || err.code !== WorkspaceAccessErrorCode.ELSEWHERE || ctx.forwarded || !holders) throw err;
    // a record seen before it had a holder may have one now
    const holder = err.holder ?? (await ctx.deps.store.workspaces.get(input.workspaceId))?.holder ?? null;
    return (await holders.call(holder, procedure, input, ctx.authorization)) as T;
  }
}

/** Sizes of the listed workspaces this process does not hold, asked of their holders, one call each; null where one does not answer. */
async function remoteSizes(ctx: AuthedContext, ids: Map<string, string[]>): Promise<Map<string, WorkspaceSize>> {
  const sizes = new Map<string, WorkspaceSize>();
  const { holders } = ctx.deps;
  if (!holders || ctx.forwarded) return sizes;
  await Promise.all(
    [...ids].map(async ([worker, workspaceIds]) => {
      try {
        const answer = (await holders.call(worker, 'sizes', { workspaceIds }, ctx.authorization)) as WorkspaceSize[];
        for (const size of answer) sizes.set(size.id, size);
      } catch (err) {
        ctx.deps.logger.warn({ err, worker }, 'a worker did not tell the size of its workspaces');
      }
    }),
  );
  return sizes;
}

export function workspacesRouter({ router, authed }: Trpc) {
  return router({
    /** The caller's workspaces, newest first (an operator's: every tenant's, or one `tenant`'s). */
    list: authed
      .input(
        z
          .strictObject({
            limit: z.number().int().min(1).max(200).default(50),
            cursor: z.string().max(32).optional(),
            tenant: tenantId.optional(),
          })
          .default({ limit: 50 }),
      )
      .query(async ({ ctx, input }) => {
        const tenant = scopedTenant(ctx, input.tenant);
        const { store, workspaces } = ctx.deps;
        const page = await store.workspaces.list({
          ...(tenant !== undefined ? { tenant } : {}),
          limit: input.limit,
          ...(input.cursor !== undefined ? { cursor: input.cursor } : {}),
        });
        const elsewhere = new Map<string, string[]>();
        for (const ws of page.items) {
          if (ws.holder !== null && !workspaces.isLocal(ws)) elsewhere.set(ws.holder, [...(elsewhere.get(ws.holder) ?? []), ws.id]);
        }
        const remote = await remoteSizes(ctx, elsewhere);
        const items: WorkspaceView[] = [];
        for (const ws of page.items) {
          const far = remote.get(ws.id);
          let usage: { bytes: number; files: number } | null = far ? { bytes: far.sizeBytes, files: far.files } : null;
          if (workspaces.isLocal(ws)) usage = await measure(ctx, ws.id);
          items.push({
            id: ws.id,
            ...(ctx.operator ? { tenant: ws.tenant } : {}),
            createdAt: ws.createdAt,
            holder: ws.holder,
            lastSession: ws.lastSession,
            sizeBytes: usage?.bytes ?? null,
            files: usage?.files ?? null,
          });
        }
        return { items, nextCursor: page.nextCursor };
      }),

    /** Entries of a directory (or its whole tree with `recursive`), in a stable order, paged. */
    files: authed
      .input(
        z.strictObject({
          workspaceId,
          path: path.default(''),
          recursive: z.boolean().default(false),
          limit: z.number().int().min(1).max(5000).default(1000),
          cursor: path.optional(),
        }),
      )
      .query(({ ctx, input }): Promise<{ entries: FileEntry[]; nextCursor: string | null }> =>
        onHolder(ctx, 'files', input, async () => {
          const { files } = await ctx.deps.workspaces.readable(ctx, input.workspaceId);
          return files.list(input.workspaceId, input.path, {
            recursive: input.recursive,
            limit: input.limit,
            ...(input.cursor !== undefined ? { cursor: input.cursor } : {}),
          });
        }),
      ),

    /** Up to MGX_MAX_READ_BYTES of a file from `offset`: text as utf8, anything else as base64. */
    read: authed
      .input(
        z.strictObject({
          workspaceId,
          path: path.min(1),
          offset: z.number().int().min(0).default(0),
          length: z.number().int().min(0).optional(),
        }),
      )
      .query(({ ctx, input }): Promise<ReadResult> =>
        onHolder(ctx, 'read', input, async () => {
          const { files } = await ctx.deps.workspaces.readable(ctx, input.workspaceId);
          return files.read(input.workspaceId, input.path, input.offset, input.length);
        }),
      ),

    /** Deletes a file or symlink, or a directory (its contents too with `recursive`); not while a session is active. */
    delete: authed
      .input(z.strictObject({ workspaceId, path: path.min(1), recursive: z.boolean().default(false) }))
      .mutation(({ ctx, input }) =>
        onHolder(ctx, 'delete', input, () =>
          ctx.deps.workspaces.write(ctx, input.workspaceId, (files) =>
            files.remove(input.workspaceId, input.path, { recursive: input.recursive }),
          ),
        ),
      ),

    /** Deletes the whole workspace, its files and its record; not while a session is active. */
    remove: authed.input(z.strictObject({ workspaceId })).mutation(({ ctx, input }) =>
      onHolder(ctx, 'remove', input, async () => {
        const removedFiles = await ctx.deps.workspaces.remove(ctx, input.workspaceId);
        ctx.deps.logger.info({ workspaceId: input.workspaceId, tenant: ctx.tenant }, 'workspace removed');
        return { workspaceId: input.workspaceId, removed: true, files: removedFiles };
      }),
    ),

    /** Size and file count of the given workspaces whose files this process holds (the others are left out). */
    sizes: authed
      .input(z.strictObject({ workspaceIds: z.array(workspaceId).max(200) }))
      .query(async ({ ctx, input }): Promise<WorkspaceSize[]> => {
        const out: WorkspaceSize[] = [];
        for (const id of input.workspaceIds) {
          const ws = await ctx.deps.workspaces.visible(ctx, id).catch(() => null);
          if (!ws || !ctx.deps.workspaces.isLocal(ws)) continue;
          const usage = await measure(ctx, id);
          if (usage) out.push({ id, sizeBytes: usage.bytes, files: usage.files });
        }
        return out;
      }),
  });
}

/** Bytes and files of a workspace this process holds; null when it cannot be walked. */
async function measure(ctx: AuthedContext, id: string): Promise<{ bytes: number; files: number } | null> {
  try {
    const { files } = await ctx.deps.workspaces.readable(ctx, id);
    return (await files.exists(id)) ? await files.usage(id, USAGE_WALK_LIMIT) : { bytes: 0, files: 0 };
  } catch (err) {
    ctx.deps.logger.warn({ err, workspaceId: id }, 'cannot measure a workspace');
    return null;
  }
}
