import { describe, expect, it } from 'vitest';
import { envProblem, MAX_ENV_VALUE_BYTES, MAX_ENV_VARS } from '../src/index.js';

describe('envProblem', () => {
  it('accepts plain upper-case names and values', () => {
    expect(envProblem({})).toBeNull();
    expect(envProblem({ FOO: 'bar', _X1: '', API_KEY: 'x'.repeat(MAX_ENV_VALUE_BYTES) })).toBeNull();
  });

  it.each([
    ['lower-case', { foo: 'x' }, /^env name "foo" must be upper-case letters, digits and _/],
    ['a leading digit', { '1X': 'x' }, /must be upper-case/],
    ['an equals sign', { 'A=B': 'x' }, /must be upper-case/],
    ['a name over 64 characters', { ['A'.repeat(65)]: 'x' }, /must be upper-case/],
    ['PATH', { PATH: '/tmp' }, /^env name PATH is not allowed \(it changes how programs load or run\)$/],
    ['NODE_OPTIONS', { NODE_OPTIONS: '--require x' }, /NODE_OPTIONS is not allowed/],
    ['an LD_ prefix', { LD_PRELOAD: '/x.so' }, /LD_PRELOAD is not allowed/],
    ['a DYLD_ prefix', { DYLD_INSERT_LIBRARIES: 'x' }, /is not allowed/],
    ["the platform's own MGX_", { MGX_ROLE: 'all' }, /MGX_ROLE is not allowed/],
    ['an exported bash function', { BASH_FUNC_X: '() { :; }' }, /is not allowed/],
    ['a NUL', { A: 'a\0b' }, /^env A contains a NUL or newline$/],
    ['a newline', { A: 'a\nb' }, /contains a NUL or newline/],
    ['a carriage return', { A: 'a\rb' }, /contains a NUL or newline/],
    ['a value over the limit', { A: 'x'.repeat(MAX_ENV_VALUE_BYTES + 1) }, /^env A is longer than 32768 bytes$/],
    ['a value over the limit in bytes, not characters', { A: 'é'.repeat(MAX_ENV_VALUE_BYTES / 2 + 1) }, /is longer than/],
  ])('refuses %s', (_name, env: Record<string, string>, message) => {
    expect(envProblem(env)).toMatch(message);
  });

  it('refuses more than the allowed number of variables', () => {
    const env = Object.fromEntries(Array.from({ length: MAX_ENV_VARS + 1 }, (_, i) => [`V${i}`, 'x']));
    expect(envProblem(env)).toBe(`env has ${MAX_ENV_VARS + 1} variables; at most ${MAX_ENV_VARS} are allowed`);
    delete env.V0;
    expect(envProblem(env)).toBeNull();
  });

  it('reports the first problem in the order of the names', () => {
    expect(envProblem({ OK: 'x', PATH: '/', A: '\n' })).toMatch(/PATH/);
  });
});
