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
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly code: ConfigErrorCode = ConfigErrorCode.INVALID;
  constructor(readonly problems: SettingProblem[]) {
    super(`invalid settings:\n${problems.map((p) => `  ${p.variable}: ${p.message}`).join('\n')}`);
  }
}
