/**
 * The one shape of mgx's errors: a stable `code` from the throwing package's code table (what
 * callers branch on and map to transport codes), a message for people, and the `cause` kept for
 * logs. Each package's error class extends it with its own codes and name.
 */
export class CodedError<C extends string = string> extends Error {
  override readonly name: string = 'CodedError';
  constructor(
    readonly code: C,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Error codes of @mgx/config, one table. */
export const ConfigErrorCode = {
  INVALID: 'CONFIG_INVALID',
} as const;
export type ConfigErrorCode = (typeof ConfigErrorCode)[keyof typeof ConfigErrorCode];

export interface SettingProblem {
  /** The environment variable at fault. */
  variable: string;
  /** What was wrong with it, in words an operator can act on. */
  message: string;
}

/** Thrown once at start with every bad setting, each named by its variable. */
export class ConfigError extends CodedError<ConfigErrorCode> {
  override readonly name = 'ConfigError';
  constructor(readonly problems: SettingProblem[]) {
    super(ConfigErrorCode.INVALID, `invalid settings:\n${problems.map((p) => `  ${p.variable}: ${p.message}`).join('\n')}`);
  }
}
