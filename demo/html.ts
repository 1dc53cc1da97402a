// The demo's Markdown (its tables, bold claims, lists and paragraphs, as demo/adaptivity.ts and
// demo/mnist-scenario.ts write them) as HTML for demo-output/index.html: tables as <table>, text
// in paragraphs that wrap. Only the Markdown the demo writes is understood; anything else is a
// paragraph of escaped text.

const escape = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

/** Escapes `text`, then renders `code` and **bold**. */
function inline(text: string): string {
  return escape(text)
    .replace(/`([^`]+)`/g, '<code>$1</code>')
    .replace(/\*\*([^*]+)\*\*/g, '<strong>$1</strong>')
}

const cells = (row: string) =>
  row
    .trim()
    .replace(/^\||\|$/g, '')
    .split('|')
    .map((cell) => cell.trim())

/** A Markdown table (header, alignment row, rows) as a <table>; `---:` columns are right-aligned. */
function table(lines: string[]): string {
  const [header, rule, ...rows] = lines
  const right = cells(rule).map((cell) => cell.endsWith(':') && !cell.startsWith(':'))
  const row = (line: string, tag: 'td' | 'th') =>
    `<tr>${cells(line)
      .map((cell, i) => `<${tag}${right[i] ? ' class="num"' : ''}>${inline(cell)}</${tag}>`)
      .join('')}</tr>`
  return `<table>\n<thead>${row(header, 'th')}</thead>\n<tbody>\n${rows.map((line) => row(line, 'td')).join('\n')}\n</tbody>\n</table>`
}

/** The demo's Markdown as HTML. */
export function markdownToHtml(markdown: string): string {
  const blocks: string[] = []
  let lines: string[] = []
  const flush = () => {
    if (lines.length === 0) return
    const isTable =
      lines.length >= 2 && lines.every((l) => l.trim().startsWith('|')) && /^\|?[\s:|-]+\|?$/.test(lines[1])
    if (isTable) blocks.push(table(lines))
    else if (lines.every((l) => l.startsWith('- '))) {
      blocks.push(`<ul>\n${lines.map((l) => `<li>${inline(l.slice(2))}</li>`).join('\n')}\n</ul>`)
    } else if (/^#{1,6} /.test(lines[0]) && lines.length === 1) {
      const level = Math.min(lines[0].indexOf(' ') + 2, 6)
      blocks.push(`<h${level}>${inline(lines[0].replace(/^#+ /, ''))}</h${level}>`)
    } else blocks.push(`<p>${inline(lines.join(' '))}</p>`)
    lines = []
  }
  for (const line of markdown.split('\n')) {
    // A block ends at a blank line, and where a table starts or ends.
    const tableLine = line.trim().startsWith('|')
    if (line.trim() === '') flush()
    else {
      if (lines.length > 0 && tableLine !== lines[lines.length - 1].trim().startsWith('|')) flush()
      lines.push(line)
    }
  }
  flush()
  return blocks.join('\n')
}

/** The page's style: text that wraps, tables with rules, numbers aligned right. */
export const PAGE_STYLE = `body { font-family: sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; line-height: 1.4; }
img { max-width: 100%; height: auto; }
p, li, td, th { overflow-wrap: break-word; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 14px; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 90%; }`
