import { describe, expect, it } from 'vitest';
import { parseEnv, parseOptions, parseSecrets, runInput, UsageError, type FrameworkInfo, type RunInputDeps } from '../src/run-input.js';

const FRAMEWORKS: FrameworkInfo[] = [
  { name: 'script', optionsSchema: { type: 'object', properties: {} } },
  {
    name: 'exec',
    optionsSchema: {
      type: 'object',
      properties: { command: { type: 'array', items: { type: 'string' } }, secretEnv: { type: 'array' } },
      required: ['command'],
    },
  },
  {
    name: 'openai',
    optionsSchema: { type: 'object', properties: { baseUrl: { type: 'string' }, model: {} }, required: ['baseUrl', 'model'] },
  },
];

const deps = (over: Partial<RunInputDeps> = {}): RunInputDeps => ({
  env: { MY_SECRET: 's3cr3t', HOME_DIR: '/home/x' },
  readFile: (path) => {
    if (path === '/secret.txt') return 'from-file\n';
    if (path === '/prompt.md') return 'do it\n';
    if (path === '/empty') return '\n';
    throw Object.assign(new Error('no such file'), { code: 'ENOENT' });
  },
  readStdin: () => Promise.resolve('from stdin'),
  listFrameworks: () => Promise.resolve(FRAMEWORKS),
  ...over,
});

const usage = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error('expected a UsageError');
};

describe('mgx run input, checked before a session exists', () => {
  describe('--option and --options', () => {
    it('parses values as JSON when they parse, else keeps the string; --option wins over --options', () => {
      expect(
        parseOptions('{"model":"a","maxSteps":3}', [
          'model=gpt-4o-mini',
          'maxSteps=5',
          'flag=true',
          'list=["a","b"]',
          'url=http://x/v1?a=b',
          'e=',
        ]),
      ).toEqual({ model: 'gpt-4o-mini', maxSteps: 5, flag: true, list: ['a', 'b'], url: 'http://x/v1?a=b', e: '' });
    });

    it('names what was wrong', () => {
      expect(usage(() => parseOptions(undefined, ['model']))).toMatch(/--option "model" has no "=": write KEY=VALUE/);
      expect(usage(() => parseOptions(undefined, ['=5']))).toMatch(/--option "=5" has an empty name/);
      expect(usage(() => parseOptions('{model:1}', []))).toMatch(/--options is not valid JSON/);
      expect(usage(() => parseOptions('[1,2]', []))).toMatch(/--options must be a JSON object/);
    });
  });

  describe('--env', () => {
    it('takes NAME=value, and NAME alone from this environment', () => {
      expect(parseEnv(['A=1', 'B=x=y', 'HOME_DIR'], deps().env)).toEqual({ A: '1', B: 'x=y', HOME_DIR: '/home/x' });
      expect(usage(() => parseEnv(['NOPE'], {}))).toMatch(/no variable "NOPE" in this environment/);
      expect(usage(() => parseEnv(['=x'], {}))).toMatch(/--env "=x" has an empty name/);
    });
  });

  describe('--secret and --secret-file', () => {
    const d = deps();
    it('reads a secret from the environment or a file, dropping one trailing newline', () => {
      expect(parseSecrets(['MY_SECRET', 'B=@/secret.txt'], ['C=/secret.txt'], d.env, d.readFile)).toEqual({
        MY_SECRET: 's3cr3t',
        B: 'from-file',
        C: 'from-file',
      });
    });

    it('refuses a value on the command line without repeating it', () => {
      const msg = usage(() => parseSecrets(['API_KEY=sk-live-123'], [], d.env, d.readFile));
      expect(msg).toMatch(/never taken from the command line, where ps and the shell history show it/);
      expect(msg).toMatch(/--secret API_KEY\b/);
      expect(msg).not.toContain('sk-live-123');
    });

    it('says which secret is missing, unreadable or empty', () => {
      expect(usage(() => parseSecrets(['NOPE'], [], d.env, d.readFile))).toMatch(/--secret NOPE: the variable NOPE is not set/);
      expect(usage(() => parseSecrets(['X'], [], { X: '' }, d.readFile))).toMatch(/--secret X: the variable X is empty/);
      expect(usage(() => parseSecrets(['K=@/missing'], [], d.env, d.readFile))).toMatch(/--secret K: cannot read \/missing \(ENOENT\)/);
      expect(usage(() => parseSecrets([], ['K=/empty'], d.env, d.readFile))).toMatch(/--secret-file K: \/empty is empty/);
      expect(usage(() => parseSecrets([], ['K'], d.env, d.readFile))).toMatch(/--secret-file "K" has no "="/);
    });
  });

  describe('runInput', () => {
    it('maps what follows -- to exec options.command, needs no prompt, and hands the secrets to the command', async () => {
      const input = await runInput({ framework: 'exec', env: ['A=1'], secret: ['MY_SECRET'] }, ['node', '-e', 'x'], deps());
      expect(input).toEqual({
        prompt: '',
        options: { command: ['node', '-e', 'x'], secretEnv: ['MY_SECRET'] },
        env: { A: '1' },
        secrets: { MY_SECRET: 's3cr3t' },
      });
      const explicit = await runInput({ framework: 'exec', secret: ['MY_SECRET'], option: ['secretEnv=[]'] }, ['true'], deps());
      expect(explicit.options.secretEnv).toEqual([]);
    });

    it('refuses a command for a framework that runs none, a command given twice, and missing options', async () => {
      await expect(runInput({ framework: 'script', prompt: 'hi' }, ['node'], deps())).rejects.toThrow(
        /framework "script" runs no command, so nothing may follow "--"/,
      );
      await expect(runInput({ framework: 'exec', option: ['command=["ls"]'] }, ['ls'], deps())).rejects.toThrow(
        /the command is given twice/,
      );
      await expect(runInput({ framework: 'exec' }, [], deps())).rejects.toThrow(
        /framework "exec" needs option command: give the command after "--"/,
      );
      await expect(runInput({ framework: 'openai', prompt: 'x', option: ['model=m'] }, [], deps())).rejects.toThrow(
        /framework "openai" needs option baseUrl: give --option baseUrl=…/,
      );
    });

    it('needs a prompt for a framework that runs no command: -p, -p - or --prompt-file', async () => {
      await expect(runInput({ framework: 'script' }, [], deps())).rejects.toThrow(/framework "script" needs a prompt/);
      expect((await runInput({ framework: 'script', prompt: '-' }, [], deps())).prompt).toBe('from stdin');
      expect((await runInput({ framework: 'script', promptFile: '/prompt.md' }, [], deps())).prompt).toBe('do it\n');
      await expect(runInput({ framework: 'script', promptFile: '/nope' }, [], deps())).rejects.toThrow(/--prompt-file: cannot read \/nope/);
      await expect(runInput({ framework: 'script', prompt: 'a', promptFile: '/prompt.md' }, [], deps())).rejects.toThrow(
        /give the prompt once/,
      );
    });

    it('leaves an unknown framework to the server, which names the ones it has', async () => {
      expect(await runInput({ framework: 'nope', prompt: 'x' }, [], deps())).toEqual({ prompt: 'x', options: {}, env: {}, secrets: {} });
    });
  });
});
