import { ID_PATTERN } from '@mgx/config';
import { PreviewError, PreviewErrorCode } from './errors.js';

/** Where a preview request goes, as its URL (or host name) says. */
export interface PreviewTarget {
  sessionId: string;
  port: number;
  /** Path and query to send to the app, without the preview prefix. */
  path: string;
  /** The prefix the app lives under: `/sessions/<id>/preview/<port>` or '' on its own host name. */
  base: string;
}

/** The query parameter that carries a signed link's token (removed before the app sees the URL). */
export const TOKEN_PARAM = 'mgx_preview_token';

const PATH_FORM = /^\/sessions\/([^/?#]+)\/preview\/([^/?#]+)(.*)$/s;

/**
 * The preview target of a request, or null when the request is not a preview's. `domain`
 * (MGX_PREVIEW_DOMAIN) enables the host-name form `<port>-<session>.<domain>`, for apps that
 * must live at `/`. Throws PreviewError BAD_TARGET for a preview address that is malformed.
 */
export function previewTargetOf(url: string, host: string | undefined, domain: string | undefined): PreviewTarget | null {
  if (domain && host) {
    const name = host.replace(/:\d+$/, '').toLowerCase();
    const suffix = `.${domain.toLowerCase()}`;
    if (name.endsWith(suffix)) {
      const m = /^(\d{1,5})-(.+)$/.exec(name.slice(0, -suffix.length));
      if (!m?.[1] || !m[2]) throw new PreviewError(PreviewErrorCode.BAD_TARGET, `preview host names are <port>-<session>${suffix}`);
      return { sessionId: checkedId(m[2]), port: checkedPort(m[1]), path: url.startsWith('/') ? url : `/${url}`, base: '' };
    }
  }
  const m = PATH_FORM.exec(url);
  if (!m?.[1] || !m[2]) return null;
  const sessionId = checkedId(m[1]);
  const port = checkedPort(m[2]);
  const rest = m[3] ?? '';
  return { sessionId, port, path: rest.startsWith('/') ? rest : `/${rest}`, base: `/sessions/${sessionId}/preview/${port}` };
}

function checkedId(id: string): string {
  if (!ID_PATTERN.test(id)) throw new PreviewError(PreviewErrorCode.BAD_TARGET, 'the session id must be 1-64 letters, digits, _ or -');
  return id;
}

function checkedPort(text: string): number {
  const port = /^\d{1,5}$/.test(text) ? Number(text) : NaN;
  if (!(port >= 1 && port <= 65535)) throw new PreviewError(PreviewErrorCode.BAD_TARGET, 'the port must be a number from 1 to 65535');
  return port;
}

/** The token of a signed link, and the URL without it (what the app is given). */
export function takeToken(path: string): { token: string | undefined; path: string } {
  const q = path.indexOf('?');
  if (q < 0) return { token: undefined, path };
  const params = new URLSearchParams(path.slice(q + 1));
  const token = params.get(TOKEN_PARAM) ?? undefined;
  if (token === undefined) return { token, path };
  params.delete(TOKEN_PARAM);
  const rest = params.toString();
  return { token, path: rest ? `${path.slice(0, q)}?${rest}` : path.slice(0, q) };
}
