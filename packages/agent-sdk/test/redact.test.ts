import { describe, expect, it } from 'vitest';
import { REDACTED, redactor } from '../src/redact.js';

describe('redactor', () => {
  it('replaces every occurrence of every value in a string', () => {
    const r = redactor(['sk-secret', 'hunter22']);
    expect(r.active).toBe(true);
    expect(r.text('key sk-secret and sk-secret, password hunter22')).toBe(`key ${REDACTED} and ${REDACTED}, password ${REDACTED}`);
    expect(r.text('nothing here')).toBe('nothing here');
  });

  it('ignores empty and undefined values and is inactive without any', () => {
    const r = redactor(['', undefined]);
    expect(r.active).toBe(false);
    const data = { a: 'x', b: ['y'] };
    expect(r.deep(data)).toBe(data);
    expect(r.text('abc')).toBe('abc');
    expect(r.excerpt('abc')).toBe('abc');
    const s = r.stream();
    expect(s.push('ab')).toBe('ab');
    expect(s.end()).toBe('');
  });

  it('redacts strings deep inside arrays and objects and keeps other values', () => {
    const r = redactor(['tok-123']);
    const input = { text: 'tok-123', n: 5, ok: true, none: null, nested: { list: ['a tok-123 b', 7, { deeper: 'tok-123tok-123' }] } };
    expect(r.deep(input)).toEqual({
      text: REDACTED,
      n: 5,
      ok: true,
      none: null,
      nested: { list: [`a ${REDACTED} b`, 7, { deeper: `${REDACTED}${REDACTED}` }] },
    });
    // a copy: the input is left as it was
    expect(input.text).toBe('tok-123');
  });

  it('catches a value split across streamed pieces', () => {
    const s = redactor(['sk-abcdef']).stream();
    const out = [s.push('the key is sk-'), s.push('abc'), s.push('def, done sk'), s.push(' and more'), s.end()].join('');
    expect(out).toBe(`the key is ${REDACTED}, done sk and more`);
  });

  it('holds back only what could start a value, and gives it back at the end', () => {
    const s = redactor(['secret']);
    expect(s.active).toBe(true);
    const stream = s.stream();
    expect(stream.push('a sec')).toBe('a ');
    expect(stream.end()).toBe('sec');
    expect(stream.end()).toBe('');
  });

  it('drops a cut-off start of a value from the end of an excerpt', () => {
    const r = redactor(['sk-abcdef']);
    expect(r.excerpt('body sk-abcdef then sk-ab')).toBe(`body ${REDACTED} then `);
    expect(r.excerpt('body without it')).toBe('body without it');
  });

  it('holds back the longest possible start among several values', () => {
    const stream = redactor(['xyz-long-value', 'z-1']).stream();
    expect(stream.push('abc xyz-lo')).toBe('abc ');
    expect(stream.push('ng-value z-')).toBe(`${REDACTED} `);
    expect(stream.push('1!')).toBe(`${REDACTED}!`);
  });
});
