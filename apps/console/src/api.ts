import { createMgxClient, type MgxClient } from '@mgx/client';

// The console calls the server it was served from, with the token the user signed in with.
// The token lives in sessionStorage (this tab only, gone when it closes) and travels only in
// the Authorization header: never in a URL, never in a cookie.

const TOKEN_KEY = 'mgx.token';

export function savedToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function saveToken(token: string): void {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function forgetToken(): void {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** The typed client for this server; queries, mutations and streams all carry the token as a header. */
export function clientFor(token: string): MgxClient {
  return createMgxClient({ url: location.origin, token: token || undefined });
}

/** The tRPC error code of a failed call (UNAUTHORIZED, FORBIDDEN, …), else its message. */
export function errorText(err: unknown): string {
  const e = err as { message?: string; data?: { code?: string } };
  return e.data?.code ? `${e.data.code}: ${e.message ?? ''}` : (e.message ?? String(err));
}

export const isUnauthorized = (err: unknown) => (err as { data?: { code?: string } }).data?.code === 'UNAUTHORIZED';

/**
 * Downloads a workspace file: fetched with the token in a header, handed to the browser as a
 * blob URL, so the token never appears in a link.
 */
export async function downloadFile(token: string, workspaceId: string, path: string): Promise<void> {
  const url = `/workspaces/${encodeURIComponent(workspaceId)}/files/${path.split('/').map(encodeURIComponent).join('/')}?download=1`;
  const res = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  if (!res.ok) throw new Error(`download failed: ${res.status} ${await res.text()}`);
  const blob = URL.createObjectURL(await res.blob());
  const a = document.createElement('a');
  a.href = blob;
  a.download = path.split('/').pop() ?? 'file';
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(blob), 60_000);
}
