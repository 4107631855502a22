/**
 * Collects what one read of a connection produced and hands it on as one batch, on the next
 * turn of the event loop (so the lines of several chunks that arrive together are stored in
 * one write), or at once with `flush`.
 */
export class Batcher<T> {
  #items: T[] = [];
  #scheduled = false;

  constructor(
    private readonly deliver: (items: T[]) => void,
    private readonly defer: (fn: () => void) => void = (fn) => void setImmediate(fn),
  ) {}

  get size(): number {
    return this.#items.length;
  }

  push(item: T): void {
    this.#items.push(item);
  }

  /** Delivers on the next turn, when there is something to deliver and nothing is scheduled yet. */
  schedule(): void {
    if (this.#scheduled || this.#items.length === 0) return;
    this.#scheduled = true;
    this.defer(() => this.flush());
  }

  /** Delivers what is collected now, if anything. */
  flush(): void {
    this.#scheduled = false;
    const items = this.#items;
    this.#items = [];
    if (items.length > 0) this.deliver(items);
  }
}
