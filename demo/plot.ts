import type { TopLevelSpec } from 'vega-lite' with { 'resolution-mode': 'import' }

import { seriesEncoding } from './series'

/**
 * Renders a Vega-Lite spec to a standalone SVG string, headless: Vega's 'none' renderer needs no
 * browser and no canvas (text widths are estimated). Vega is ESM-only with a top-level await, so
 * it is loaded with import(), not require().
 */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const vega = await import('vega')
  const vegaLite = await import('vega-lite')
  const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: 'none' })
  try {
    return await view.toSVG()
  } finally {
    view.finalize()
  }
}

/** A series' rows, with the series name in `optimizer`. */
export type Row = Record<string, number | string | null>

export interface LinePanel {
  title: string
  rows: Row[]
  /** `format`: a d3 number format for the tick labels ('~e' for 1e-6 rather than 0.000001). */
  x: { field: string; title: string; log?: boolean; format?: string }
  y: { field: string; title: string; log?: boolean; domain?: [number, number]; format?: string }
  /** Series names in legend order (fixes colours across panels). */
  series: readonly string[]
  /** Field holding the series name; 'optimizer' unless told. */
  seriesField?: string
  points?: boolean
  width?: number
  height?: number
}

/** One line chart, a series per optimizer. */
export function linePanel(panel: LinePanel): Record<string, unknown> {
  const seriesField = panel.seriesField ?? 'optimizer'
  return {
    title: panel.title,
    width: panel.width ?? 380,
    height: panel.height ?? 260,
    data: { values: panel.rows },
    mark: { type: 'line', point: panel.points ?? false, strokeWidth: 1.8, clip: true },
    encoding: {
      x: {
        field: panel.x.field,
        type: 'quantitative',
        title: panel.x.title,
        scale: panel.x.log ? { type: 'log' } : { zero: false },
        ...(panel.x.format ? { axis: { format: panel.x.format } } : {}),
      },
      y: {
        field: panel.y.field,
        type: 'quantitative',
        title: panel.y.title,
        scale: {
          ...(panel.y.log ? { type: 'log' } : { zero: false }),
          ...(panel.y.domain ? { domain: panel.y.domain } : {}),
        },
        ...(panel.y.format ? { axis: { format: panel.y.format } } : {}),
      },
      ...seriesEncoding(seriesField, panel.series, panel.points ?? false),
    },
  }
}

/** Panels side by side (`columns` per row) under one title, sharing one colour legend. */
export function figure(title: string, panels: Array<Record<string, unknown>>, columns = 2): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, fontSize: 15 },
    background: 'white',
    padding: 12,
    columns,
    concat: panels,
    resolve: { scale: { color: 'shared', strokeDash: 'shared', shape: 'shared' } },
    config: { legend: { orient: 'right' }, axis: { grid: true, gridOpacity: 0.5 } },
  } as unknown as TopLevelSpec
}
