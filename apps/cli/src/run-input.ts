/**
 * Turns `mgx run`'s flags into a session's create input: framework options, env, secrets and
 * the prompt. Everything here is checked before a session exists; bad input is a UsageError.
 */

/** Input the user got wrong; the CLI prints its message and exits 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** What the CLI needs to know of a framework (an entry of the server's frameworks.list). */
export interface FrameworkInfo {
  name: string;
  optionsSchema: Record<string, unknown>;
}

export interface RunFlags {
  framework: string;
  prompt?: string;
  promptFile?: string;
  option?: string[];
  options?: string;
  env?: string[];
  secret?: string[];
  secretFile?: string[];
}

export interface RunInput {
  prompt: string;
  options: Record<string, unknown>;
  env: Record<string, string>;
  secrets: Record<string, string>;
}

export interface RunInputDeps {
  /** The CLI's own environment, where `--secret NAME` and `-e NAME` read from. */
  env: Record<string, string | undefined>;
  readFile: (path: string) => string;
  readStdin: () => Promise<string>;
  listFrameworks: () => Promise<FrameworkInfo[]>;
}

/** Commander's collector for a repeatable flag. */
export const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

const splitPair = (flag: string, pair: string, shape: string): [string, string] => {
  const eq = pair.indexOf('=');
  if (eq < 0) throw new UsageError(`${flag} "${pair}" has no "=": write ${shape}`);
  const key = pair.slice(0, eq);
  if (key === '') throw new UsageError(`${flag} "${pair}" has an empty name: write ${shape}`);
  return [key, pair.slice(eq + 1)];
};

/** `--options JSON`, then each `--option KEY=VALUE` over it; VALUE is JSON when it parses, else a string. */
export function parseOptions(json: string | undefined, pairs: string[]): Record<string, unknown> {
  let options: Record<string, unknown> = {};
  if (json !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(json);
    } catch (err) {
      throw new UsageError(`--options is not valid JSON (${(err as Error).message}); write e.g. --options '{"model":"gpt-4o-mini"}'`);
    }
    if (!isRecord(parsed)) throw new UsageError(`--options must be a JSON object, e.g. --options '{"model":"gpt-4o-mini"}'`);
    options = { ...parsed };
  }
  for (const pair of pairs) {
    const [key, raw] = splitPair('--option', pair, 'KEY=VALUE, e.g. --option maxSteps=5 or --option model=gpt-4o-mini');
    let value: unknown = raw;
    try {
      value = JSON.parse(raw);
    } catch {
      // not JSON: the value is the string itself
    }
    options[key] = value;
  }
  return options;
}

/** `-e NAME=value`, or `-e NAME` for NAME's value in the CLI's own environment. */
export function parseEnv(pairs: string[], from: Record<string, string | undefined>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of pairs) {
    if (!pair.includes('=')) {
      const value = from[pair];
      if (pair === '' || value === undefined)
        throw new UsageError(`--env ${pair}: there is no variable "${pair}" in this environment to pass on; write NAME=value`);
      env[pair] = value;
      continue;
    }
    const [name, value] = splitPair('--env', pair, 'NAME=value');
    env[name] = value;
  }
  return env;
}

const secretFromArgv = (name: string) =>
  `--secret ${name}=…: a secret value is never taken from the command line, where ps and the shell history show it; ` +
  `export ${name} and pass --secret ${name}, or put it in a file and pass --secret ${name}=@path (or --secret-file ${name}=path)`;

/** A trailing newline of a secret file is the editor's, not the secret's. */
const trimNewline = (s: string) => s.replace(/\r?\n$/, '');

/**
 * `--secret NAME` (from the CLI's environment), `--secret NAME=@path` and `--secret-file NAME=path`
 * (from a file). `--secret NAME=value` is refused, and no error message repeats a value.
 */
export function parseSecrets(
  specs: string[],
  files: string[],
  from: Record<string, string | undefined>,
  readFile: (path: string) => string,
): Record<string, string> {
  const secrets: Record<string, string> = {};
  const fromFile = (flag: string, name: string, path: string) => {
    if (path === '') throw new UsageError(`${flag} ${name}: the file path is empty`);
    let value: string;
    try {
      value = trimNewline(readFile(path));
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new UsageError(`${flag} ${name}: cannot read ${path} (${e.code ?? e.message})`);
    }
    if (value === '') throw new UsageError(`${flag} ${name}: ${path} is empty`);
    secrets[name] = value;
  };
  for (const spec of specs) {
    const eq = spec.indexOf('=');
    if (eq < 0) {
      const value = from[spec];
      if (spec === '') throw new UsageError('--secret needs a NAME');
      if (value === undefined) throw new UsageError(`--secret ${spec}: the variable ${spec} is not set in this environment`);
      if (value === '') throw new UsageError(`--secret ${spec}: the variable ${spec} is empty`);
      secrets[spec] = value;
      continue;
    }
    const name = spec.slice(0, eq);
    const rest = spec.slice(eq + 1);
    if (name === '') throw new UsageError('--secret needs a NAME before "="');
    if (!rest.startsWith('@')) throw new UsageError(secretFromArgv(name));
    fromFile('--secret', name, rest.slice(1));
  }
  for (const pair of files) {
    const [name, path] = splitPair('--secret-file', pair, 'NAME=path');
    fromFile('--secret-file', name, path);
  }
  return secrets;
}

const schemaProperties = (f: FrameworkInfo): Record<string, unknown> =>
  isRecord(f.optionsSchema.properties) ? f.optionsSchema.properties : {};

/** The option a framework takes its argv in: `command`, when its schema has one as an array. */
const commandOption = (f: FrameworkInfo): string | undefined => {
  const prop = schemaProperties(f).command;
  return isRecord(prop) && prop.type === 'array' ? 'command' : undefined;
};

async function readPrompt(flags: RunFlags, deps: RunInputDeps): Promise<string | undefined> {
  if (flags.prompt !== undefined && flags.promptFile !== undefined) throw new UsageError('give the prompt once: --prompt or --prompt-file');
  if (flags.prompt === '-' || flags.promptFile === '-') return deps.readStdin();
  if (flags.promptFile !== undefined) {
    try {
      return deps.readFile(flags.promptFile);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new UsageError(`--prompt-file: cannot read ${flags.promptFile} (${e.code ?? e.message})`);
    }
  }
  return flags.prompt;
}

/**
 * The session input of `mgx run`. `command` is what followed `--`: the argv of a framework with
 * a `command` option (exec), refused for any other. A framework with a `secretEnv` option gets the
 * `--secret` names as its default, so `mgx run -f exec --secret KEY -- cmd` hands KEY to cmd.
 */
export async function runInput(flags: RunFlags, command: string[], deps: RunInputDeps): Promise<RunInput> {
  const options = parseOptions(flags.options, flags.option ?? []);
  const env = parseEnv(flags.env ?? [], deps.env);
  const secrets = parseSecrets(flags.secret ?? [], flags.secretFile ?? [], deps.env, deps.readFile);
  const frameworks = await deps.listFrameworks();
  const framework = frameworks.find((f) => f.name === flags.framework);
  // the server names the frameworks it has when it refuses this one
  if (!framework) return { prompt: (await readPrompt(flags, deps)) ?? '', options, env, secrets };
  const argvOption = commandOption(framework);
  if (command.length > 0) {
    if (argvOption === undefined) {
      throw new UsageError(
        `framework "${framework.name}" runs no command, so nothing may follow "--" (got "${command.join(' ')}"); ` +
          'set its options with --option KEY=VALUE',
      );
    }
    if (options[argvOption] !== undefined) throw new UsageError(`the command is given twice: after "--" and as --option ${argvOption}`);
    options[argvOption] = command;
  }
  const secretNames = Object.keys(secrets);
  if (secretNames.length > 0 && 'secretEnv' in schemaProperties(framework) && options.secretEnv === undefined) {
    options.secretEnv = secretNames;
  }
  const required = Array.isArray(framework.optionsSchema.required) ? framework.optionsSchema.required.map(String) : [];
  const missing = required.filter((k) => options[k] === undefined);
  if (missing.length > 0) {
    const hint = missing.includes(argvOption ?? '')
      ? `give the command after "--", e.g. mgx run -f ${framework.name} -- node build.js`
      : `give ${missing.map((k) => `--option ${k}=…`).join(' ')}`;
    throw new UsageError(`framework "${framework.name}" needs option${missing.length > 1 ? 's' : ''} ${missing.join(', ')}: ${hint}`);
  }
  const prompt = await readPrompt(flags, deps);
  // a framework that runs a command does not read the prompt; every other one needs it
  if (prompt === undefined && argvOption === undefined) {
    throw new UsageError(`framework "${framework.name}" needs a prompt: give -p TEXT, -p - (read from stdin) or --prompt-file PATH`);
  }
  return { prompt: prompt ?? '', options, env, secrets };
}
