import { z } from 'zod';
import { ID_PATTERN } from '@mgx/config';
import type { WorkspaceSummary } from '@mgx/event-store';
import type { FileEntry, ReadResult } from '@mgx/workspaces';
import type { Trpc } from '../trpc.js';
import { scopedTenant, tenantId } from './tenant-scope.js';

const workspaceId = z.string().regex(ID_PATTERN, 'workspaceId must be 1-64 letters, digits, _ or -');
// checked component by component by the files module (no `..`, no absolute path, no NUL)
const path = z.string().max(4096);

/** What clients see of a workspace. Size and file count only where this server holds its files. */
export interface WorkspaceView {
  id: string;
  /** For operators, who see every tenant's workspaces. */
  tenant?: string;
  createdAt: number;
  /** The worker whose disk holds its files; null before its first session or upload. */
  holder: string | null;
  lastSession: WorkspaceSummary['lastSession'];
  /** Bytes of regular files; null where this server does not hold the files. */
  sizeBytes: number | null;
  files: number | null;
}

/** A listing stops counting here: a workspace this large shows at least this many files. */
const USAGE_WALK_LIMIT = 100_000;

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
        const items: WorkspaceView[] = [];
        for (const ws of page.items) {
          let usage: { bytes: number; files: number } | null = null;
          if (workspaces.isLocal(ws)) {
            try {
              const { files } = await workspaces.readable(ctx, ws.id);
              usage = (await files.exists(ws.id)) ? await files.usage(ws.id, USAGE_WALK_LIMIT) : { bytes: 0, files: 0 };
            } catch (err) {
              ctx.deps.logger.warn({ err, workspaceId: ws.id }, 'cannot measure a workspace');
            }
          }
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
      .query(async ({ ctx, input }): Promise<{ entries: FileEntry[]; nextCursor: string | null }> => {
        const { files } = await ctx.deps.workspaces.readable(ctx, input.workspaceId);
        return files.list(input.workspaceId, input.path, {
          recursive: input.recursive,
          limit: input.limit,
          ...(input.cursor !== undefined ? { cursor: input.cursor } : {}),
        });
      }),

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
      .query(async ({ ctx, input }): Promise<ReadResult> => {
        const { files } = await ctx.deps.workspaces.readable(ctx, input.workspaceId);
        return files.read(input.workspaceId, input.path, input.offset, input.length);
      }),

    /** Deletes a file or symlink, or a directory (its contents too with `recursive`); not while a session is active. */
    delete: authed
      .input(z.strictObject({ workspaceId, path: path.min(1), recursive: z.boolean().default(false) }))
      .mutation(async ({ ctx, input }) => {
        return ctx.deps.workspaces.write(ctx, input.workspaceId, (files) =>
          files.remove(input.workspaceId, input.path, { recursive: input.recursive }),
        );
      }),

    /** Deletes the whole workspace, its files and its record; not while a session is active. */
    remove: authed.input(z.strictObject({ workspaceId })).mutation(async ({ ctx, input }) => {
      const removedFiles = await ctx.deps.workspaces.remove(ctx, input.workspaceId);
      ctx.deps.logger.info({ workspaceId: input.workspaceId, tenant: ctx.tenant }, 'workspace removed');
      return { workspaceId: input.workspaceId, removed: true, files: removedFiles };
    }),
  });
}
