/**
 * Reading a MongoDB connection string for messages, without ever showing its credentials.
 *
 * The connection string format wants `:/?#[]@` in a user name or password percent-encoded, but
 * operators paste raw passwords, and a message must not show part of one whatever it holds. A
 * host list holds none of `@/?#`, so the credentials are everything before the last `@` that is
 * followed by something shaped like a host list (and then the end, `/`, `?` or `#`). When an
 * option value holds an `@` too, that rule may show a wrong host; it never shows a password.
 */

const SCHEME = /^mongodb(\+srv)?:\/\//i;
/** Hosts, IPv6 literals, ports and percent-encoded socket paths, comma separated. */
const HOST_LIST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%-]+)(?::\d{1,5})?(?:,(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%-]+)(?::\d{1,5})?)*$/;
/** A password shorter than this is not scrubbed on its own: its letters would garble the message. */
const MIN_SCRUBBED = 3;

export interface MongoUriParts {
  /** `mongodb://` or `mongodb+srv://`, as written. */
  scheme: string;
  /** Everything before the `@` that ends the credentials; empty when there are none. */
  userinfo: string;
  /** The host list; empty when none could be told apart from the rest. */
  hosts: string;
}

/** The parts of a connection string, or null when it does not start with a MongoDB scheme. */
export function splitMongoUri(uri: string): MongoUriParts | null {
  const scheme = SCHEME.exec(uri)?.[0];
  if (!scheme) return null;
  const body = uri.slice(scheme.length);
  const segment = (from: number) => body.slice(from).split(/[/?#]/, 1)[0] ?? '';
  for (let at = body.lastIndexOf('@'); at >= 0; at = at === 0 ? -1 : body.lastIndexOf('@', at - 1)) {
    const hosts = segment(at + 1);
    if (HOST_LIST.test(hosts)) return { scheme, userinfo: body.slice(0, at), hosts };
  }
  if (!body.includes('@')) return { scheme, userinfo: '', hosts: segment(0) };
  // an `@` but no host list after any of them: all of it may be credentials
  return { scheme, userinfo: body, hosts: '' };
}

/** Where a connection string points, for messages: scheme and hosts, never a user name or password. */
export function describeMongoUri(uri: string): string {
  const parts = splitMongoUri(uri);
  if (!parts) return '(not a mongodb:// URI)';
  return `${parts.scheme}${parts.hosts || '(no host list)'}`;
}

/**
 * Removes a connection string's credentials from a message (a driver error may echo them): the
 * user information, and the password alone, raw and percent-decoded. Every `@` could end the
 * credentials when the password holds one, so each candidate is removed, the longest first.
 */
export function scrubMongoUri(message: string, uri: string): string {
  const scheme = SCHEME.exec(uri)?.[0];
  if (!scheme) return message;
  const body = uri.slice(scheme.length);
  const secrets = new Set<string>();
  const add = (s: string, min: number) => {
    if (s.length < min) return;
    secrets.add(s);
    try {
      const decoded = decodeURIComponent(s);
      if (decoded.length >= min) secrets.add(decoded);
    } catch {
      // not percent-encoded text: the raw form is enough
    }
  };
  for (let at = body.indexOf('@'); at >= 0; at = body.indexOf('@', at + 1)) {
    if (at === 0) continue;
    const userinfo = body.slice(0, at);
    add(userinfo, 1);
    const colon = userinfo.indexOf(':');
    if (colon >= 0) add(userinfo.slice(colon + 1), MIN_SCRUBBED);
  }
  // a body with an `@` and no host list after it is credentials through and through
  const parts = splitMongoUri(uri);
  if (parts && parts.hosts === '' && parts.userinfo !== '') add(parts.userinfo, 1);
  let out = message;
  for (const secret of [...secrets].sort((a, b) => b.length - a.length)) out = out.split(secret).join('***');
  return out;
}
