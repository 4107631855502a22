/**
 * Cuts a connection's byte stream into lines (NDJSON). A line that grows past `maxLine`
 * characters without its newline is reported once through `onOverflow` and the rest of it,
 * up to its newline, is dropped as it arrives: memory stays bounded whatever the runner sends.
 */
export class LineFramer {
  #buffered = '';
  #skipping = false;

  constructor(
    private readonly maxLine: number,
    private readonly onLine: (line: string) => void,
    private readonly onOverflow: () => void,
  ) {}

  /** Feeds one chunk: calls `onLine` for every line it completes, in order (empty lines too). */
  push(chunk: string): void {
    const text = this.#buffered + chunk;
    let start = 0;
    let nl: number;
    // scan by index: slicing the rest after every line would copy it once per line
    while ((nl = text.indexOf('\n', start)) >= 0) {
      const line = text.slice(start, nl);
      start = nl + 1;
      if (this.#skipping) {
        // the end of a line already refused
        this.#skipping = false;
        continue;
      }
      this.onLine(line);
    }
    this.#buffered = start === 0 ? text : text.slice(start);
    if (this.#buffered.length > this.maxLine) {
      // an unbounded line: refuse it now and drop the rest of it as it arrives
      if (!this.#skipping) this.onOverflow();
      this.#skipping = true;
      this.#buffered = '';
    }
  }
}
