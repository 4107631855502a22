/**
 * What a client may put in a session's environment. Names follow a strict pattern, values
 * are bounded, and variables that change how programs load or where they look (the dynamic
 * loader, Node's and other runtimes' option and path variables, the platform's own) are
 * refused, so a session cannot turn its own tools against itself or the runner.
 */
export const ENV_NAME = /^[A-Z_][A-Z0-9_]{0,63}$/;
export const MAX_ENV_VARS = 64;
export const MAX_ENV_VALUE_BYTES = 32 * 1024;

const REFUSED_NAMES = new Set([
  'PATH',
  'HOME',
  'USER',
  'SHELL',
  'PWD',
  'TMPDIR',
  'IFS',
  'ENV',
  'BASH_ENV',
  'NODE_OPTIONS',
  'NODE_PATH',
  'NODE_EXTRA_CA_CERTS',
  'NODE_TLS_REJECT_UNAUTHORIZED',
  'PYTHONPATH',
  'PYTHONSTARTUP',
  'PYTHONHOME',
  'PERL5LIB',
  'PERL5OPT',
  'RUBYOPT',
  'RUBYLIB',
  'JAVA_TOOL_OPTIONS',
  'GCONV_PATH',
  'SSL_CERT_FILE',
  'SSL_CERT_DIR',
]);
const REFUSED_PREFIXES = ['LD_', 'DYLD_', 'MGX_', 'BASH_FUNC_'];

/** The first problem with `env`, or null when it is acceptable. */
export function envProblem(env: Record<string, string>): string | null {
  const entries = Object.entries(env);
  if (entries.length > MAX_ENV_VARS) return `env has ${entries.length} variables; at most ${MAX_ENV_VARS} are allowed`;
  for (const [name, value] of entries) {
    if (!ENV_NAME.test(name))
      return `env name ${JSON.stringify(name.slice(0, 80))} must be upper-case letters, digits and _ (not starting with a digit)`;
    if (REFUSED_NAMES.has(name) || REFUSED_PREFIXES.some((p) => name.startsWith(p)))
      return `env name ${name} is not allowed (it changes how programs load or run)`;
    if (/[\0\n\r]/.test(value)) return `env ${name} contains a NUL or newline`;
    if (Buffer.byteLength(value) > MAX_ENV_VALUE_BYTES) return `env ${name} is longer than ${MAX_ENV_VALUE_BYTES} bytes`;
  }
  return null;
}
