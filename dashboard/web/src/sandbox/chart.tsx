// LineChart draws series over time with uPlot, in the stylesheet's
// colours, as wide as its box. The chart is a picture: the page states
// the same numbers in text beside it.
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';

export interface Line {
  label: string;
  // colour is a CSS custom property of the stylesheet (e.g. "--accent").
  colour: string;
  // dashed tells lines apart without their colour.
  dashed?: boolean;
}

const height = 180;

// css reads a custom property of the page's stylesheet, which switches
// with the colour scheme.
function css(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || 'gray';
}

// span is the time axis, [from, to] in unix seconds: the range asked
// for, not only where the points are (one point would fill the chart).
export function LineChart({ title, lines, data, span, format, max }: { title: string; lines: Line[]; data: uPlot.AlignedData; span: [number, number]; format: (v: number) => string; max?: number }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const spanRef = useRef(span);
  spanRef.current = span;

  // The chart is made once (again when the colour scheme changes, as the
  // page's key for it does); new data only replaces its points.
  useEffect(() => {
    const el = box.current!;
    const axis = { stroke: css('--muted'), grid: { stroke: css('--line'), width: 1 }, ticks: { stroke: css('--line'), width: 1 } };
    const opts: uPlot.Options = {
      width: Math.max(el.clientWidth, 200),
      height,
      scales: { x: { time: true, range: () => spanRef.current }, y: { range: (_u, _lo, hi) => [0, Math.max(max ?? 0, hi * 1.1, 1)] } },
      series: [
        {},
        ...lines.map((l) => ({
          label: l.label,
          stroke: css(l.colour),
          width: 2,
          dash: l.dashed ? [6, 4] : undefined,
          value: (_u: uPlot, v: number | null) => (v === null ? '—' : format(v)),
        })),
      ],
      axes: [axis, { ...axis, size: 72, values: (_u, ticks) => ticks.map(format) }],
      legend: { live: true },
    };
    const u = new uPlot(opts, data, el);
    plot.current = u;
    const ro = new ResizeObserver(() => u.setSize({ width: Math.max(el.clientWidth, 200), height }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      u.destroy();
      plot.current = null;
    };
  }, []);

  useEffect(() => {
    plot.current?.setData(data);
  }, [data]);

  return <div class="chart" ref={box} role="img" aria-label={title} />;
}
