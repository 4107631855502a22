/**
 * The token bucket of one session's rate limit, shared by its connections: `rate` tokens a
 * second, up to a burst of twice that. Spending may take it below zero (the debt).
 */
export class TokenBucket {
  #tokens: number;
  #refilledAt: number;
  #warned = false;

  constructor(
    readonly rate: number,
    private readonly clock: () => number = Date.now,
  ) {
    this.#tokens = 2 * rate;
    this.#refilledAt = clock();
  }

  /** True when there is a limit (rate above 0). */
  get limited(): boolean {
    return this.rate > 0;
  }

  /** Takes `n` tokens; returns how long until the bucket is out of debt (0: it is not). */
  spend(n: number): number {
    this.#refill();
    this.#tokens -= n;
    return this.#debtMs();
  }

  /** How long until the bucket is out of debt, as of now (0: it is not). */
  waitMs(): number {
    this.#refill();
    return this.#debtMs();
  }

  /** True the first time it is asked after the bucket went into debt, false ever after. */
  firstThrottle(): boolean {
    if (this.#warned) return false;
    this.#warned = true;
    return true;
  }

  #refill(): void {
    const now = this.clock();
    this.#tokens = Math.min(2 * this.rate, this.#tokens + ((now - this.#refilledAt) / 1000) * this.rate);
    this.#refilledAt = now;
  }

  #debtMs(): number {
    return this.#tokens >= 0 ? 0 : Math.ceil((-this.#tokens / this.rate) * 1000);
  }
}

/**
 * The rate limit as one connection applies it: over the limit the connection is paused, and
 * resumed only once the session's bucket is really out of debt (one timer per connection).
 * The first time a session goes over, `throttled` is called (the hub stores a warning).
 */
export class ConnectionThrottle {
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly bucket: TokenBucket,
    private readonly hooks: { pause(): void; resume(): void; throttled(): void },
  ) {}

  /** Counts `n` events the connection received. */
  spend(n: number): void {
    if (!this.bucket.limited || n === 0) return;
    const waitMs = this.bucket.spend(n);
    if (waitMs === 0) return;
    if (this.bucket.firstThrottle()) this.hooks.throttled();
    this.hooks.pause();
    this.#timer ??= setTimeout(this.#recheck, waitMs);
  }

  /** The connection closed: no resume is pending any more. */
  close(): void {
    clearTimeout(this.#timer);
  }

  readonly #recheck = (): void => {
    this.#timer = undefined;
    const waitMs = this.bucket.waitMs();
    if (waitMs > 0) this.#timer = setTimeout(this.#recheck, waitMs);
    else this.hooks.resume();
  };
}
