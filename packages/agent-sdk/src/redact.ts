/** What a redacted secret value is replaced with, wherever mgx redacts. */
export const REDACTED = '[REDACTED]';

/** Redacts text that arrives in pieces: a value split across two pieces is still caught. */
export interface StreamRedactor {
  /** Takes the next piece; returns what is safe to pass on now (the end of it may be held back). */
  push(piece: string): string;
  /** Returns what was held back (the stream ended, so it cannot be the start of a value). */
  end(): string;
}

/** Replaces known secret values in strings, in JSON-like data, and in streamed text. */
export interface Redactor {
  /** False when there is nothing to redact: every method returns its input unchanged. */
  readonly active: boolean;
  /** Replaces every occurrence of every value; a string without any is returned as is. */
  text(text: string): string;
  /** `text` applied to every string inside arrays and plain objects; other values are kept. */
  deep<T>(value: T): T;
  /** For text that was cut off: its end may hold the start of a value, which is dropped too. */
  excerpt(text: string): string;
  /** A redactor for one stream of pieces (e.g. MESSAGE deltas). */
  stream(): StreamRedactor;
}

/**
 * A redactor of `values`. Empty and undefined values are ignored (there is nothing to find);
 * values are replaced one after the other, in the order given.
 */
export function redactor(values: Iterable<string | undefined>): Redactor {
  const secrets = [...values].filter((v): v is string => typeof v === 'string' && v !== '');
  const text = (s: string) => secrets.reduce((out, secret) => (out.includes(secret) ? out.split(secret).join(REDACTED) : out), s);
  const deep = <T>(value: T): T => {
    if (typeof value === 'string') return text(value) as T;
    if (Array.isArray(value)) return value.map((v: unknown) => deep(v)) as T;
    if (typeof value === 'object' && value !== null) {
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, deep(v)])) as T;
    }
    return value;
  };
  /** Length of the longest end of `s` that could be the start of a value. */
  const prefixAtEnd = (s: string) => {
    let longest = 0;
    for (const secret of secrets) {
      for (let n = Math.min(secret.length - 1, s.length); n > longest; n--) {
        if (secret.startsWith(s.slice(s.length - n))) {
          longest = n;
          break;
        }
      }
    }
    return longest;
  };
  if (secrets.length === 0) {
    const same = <T>(v: T) => v;
    return { active: false, text: same, deep: same, excerpt: same, stream: () => ({ push: same, end: () => '' }) };
  }
  return {
    active: true,
    text,
    deep,
    excerpt: (s) => {
      const redacted = text(s);
      return redacted.slice(0, redacted.length - prefixAtEnd(redacted));
    },
    stream: () => {
      let held = '';
      return {
        push(piece) {
          const out = text(held + piece);
          const hold = prefixAtEnd(out);
          held = out.slice(out.length - hold);
          return out.slice(0, out.length - hold);
        },
        end() {
          const rest = held;
          held = '';
          return rest;
        },
      };
    },
  };
}
