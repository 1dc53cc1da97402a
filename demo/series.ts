// How the plots tell their series apart: colour, and a dash pattern and point shape for readers
// who cannot rely on colour (or print in grey).

/**
 * Dash patterns, one per series in legend order, so that every line can be told apart without
 * its colour (and a line drawn over another, AdamW's over Adam's, leaves the one beneath visible).
 */
export const DASHES: readonly (readonly number[])[] = [
  [1, 0],
  [7, 3],
  [2, 2],
  [10, 3, 2, 3],
  [1, 4],
  [14, 4],
  [6, 2, 1, 2, 1, 2],
  [4, 5],
  [12, 2, 2, 2, 2, 2],
  [3, 1],
]

/** Point shapes, likewise, for the panels drawn with points. */
export const SHAPES = [
  'circle',
  'square',
  'triangle-up',
  'diamond',
  'cross',
  'triangle-down',
  'triangle-right',
  'triangle-left',
  'stroke',
  'arrow',
] as const

/** The series' legend entries: colour, dash and (with points) shape, from one domain so they merge. */
export function seriesEncoding(field: string, series: readonly string[], points: boolean): Record<string, unknown> {
  const domain = [...series]
  const channel = (range: unknown) => ({ field, type: 'nominal', title: field, sort: domain, scale: { domain, range } })
  return {
    color: { field, type: 'nominal', title: field, sort: domain, scale: { domain, scheme: 'category10' } },
    strokeDash: channel(domain.map((_, i) => DASHES[i % DASHES.length])),
    ...(points ? { shape: channel(domain.map((_, i) => SHAPES[i % SHAPES.length])) } : {}),
  }
}
