/**
 * A one-line progress bar on stderr. On a terminal it redraws in place; elsewhere (a pipe, CI,
 * a test) it prints only the finished line, so logs stay readable.
 */
export class ProgressBar {
  readonly #label: string
  readonly #total: number
  readonly #stream: NodeJS.WriteStream
  readonly #live: boolean
  readonly #width = 28
  #lastDraw = 0

  constructor(label: string, total: number, stream: NodeJS.WriteStream = process.stderr) {
    this.#label = label
    this.#total = total
    this.#stream = stream
    this.#live = stream.isTTY === true
  }

  /** Shows `done` of `total` with a note (loss, accuracy, time); redraws at most 10 times a second. */
  update(done: number, note: string): void {
    if (!this.#live) return
    const now = Date.now()
    if (now - this.#lastDraw < 100 && done < this.#total) return
    this.#lastDraw = now
    this.#stream.write(`\r${this.#line(done, note)}\x1b[K`)
  }

  /** Leaves the bar at its last state on its own line. */
  finish(done: number, note: string): void {
    this.#stream.write(`${this.#live ? '\r' : ''}${this.#line(done, note)}${this.#live ? '\x1b[K' : ''}\n`)
  }

  #line(done: number, note: string): string {
    const filled = Math.round((this.#width * Math.min(done, this.#total)) / this.#total)
    const bar = '█'.repeat(filled) + '░'.repeat(this.#width - filled)
    return `${this.#label.padEnd(13)} ${bar} ${note}`
  }
}

/** Cells of numbers, percentages, times, ratios and dashes: right-aligned in tables. */
const NUMERIC = /^[-+]?[\d.,%e×x—<>≈ s*-]*$/

/** A plain-text table with a header rule; numbers (and dashes) are right-aligned. */
export function formatTable(header: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((row) => row[c].length)))
  const numeric = header.map((_, c) => rows.every((row) => NUMERIC.test(row[c])))
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, c) => (numeric[c] ? cell.padStart(widths[c]) : cell.padEnd(widths[c])))
      .join('  ')
      .trimEnd()
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n')
}

/** A Markdown table of the same rows, for README and the HTML page. */
export function formatMarkdownTable(header: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const numeric = header.map((_, c) => rows.every((row) => NUMERIC.test(row[c])))
  const line = (cells: readonly string[]) => `| ${cells.join(' | ')} |`
  return [line(header), `|${numeric.map((n) => (n ? ' ---: ' : ' --- ')).join('|')}|`, ...rows.map(line)].join('\n')
}
