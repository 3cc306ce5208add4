/**
 * A hand-written SVG line chart of delivered vs offered rate (no dependencies): one polyline
 * per series, a dashed "delivered = offered" diagonal, log-log axes (the sweep doubles its
 * rate, so its steps fall evenly and a slow path stays readable next to a fast one) with
 * 1-2-5 ticks, and a legend.
 */

export interface ChartPoint {
  /** Offered rate, Mbit/s. */
  x: number;
  /** Delivered rate, Mbit/s. */
  y: number;
}

export interface ChartSeries {
  name: string;
  color: string;
  /** Dashed line (e.g. the reverse direction). */
  dashed?: boolean;
  points: ChartPoint[];
}

const WIDTH = 760;
const HEIGHT = 480;
const MARGIN = { left: 70, right: 200, top: 40, bottom: 55 };

/** Escapes text for SVG/XML content and attribute values. */
export function escapeXml(text: string): string {
  return text
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");
}

/** Log-axis ticks: 1, 2 and 5 times each power of ten from `lo` to `hi` (both powers of 10). */
export function logTicks(lo: number, hi: number): number[] {
  const ticks: number[] = [];
  for (let decade = lo; decade < hi * 1.0001 && ticks.length < 100; decade *= 10) {
    for (const m of [1, 2, 5]) if (decade * m <= hi * 1.0001) ticks.push(decade * m);
  }
  return ticks;
}

/**
 * The powers of ten just below and above the positive values (a decade at least). A value a
 * few percent under a power of ten (99.9 delivered of 100 offered) does not open a decade
 * of its own: it is drawn on the axis.
 */
export function logRange(values: readonly number[]): [number, number] {
  const positive = values.filter((v) => v > 0);
  if (positive.length === 0) return [1, 10];
  const lo = 10 ** Math.floor(Math.log10(Math.min(...positive) * 1.05));
  let hi = 10 ** Math.ceil(Math.log10(Math.max(...positive)));
  if (hi <= lo) hi = lo * 10;
  return [lo, hi];
}

function fmt(n: number): string {
  return n >= 1 ? String(Math.round(n)) : String(Number(n.toPrecision(2)));
}

/** Renders the chart as a complete SVG document. */
export function renderRateChart(title: string, series: readonly ChartSeries[]): string {
  const all = series.flatMap((s) => s.points);
  const [lo, hi] = logRange(all.flatMap((p) => [p.x, p.y]));
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const span = Math.log10(hi / lo);
  // Values at or below the axis minimum (a path that delivered nothing) sit on the axis.
  const frac = (v: number) => Math.log10(Math.max(v, lo) / lo) / span;
  const sx = (v: number) => MARGIN.left + frac(v) * plotW;
  const sy = (v: number) => MARGIN.top + plotH - frac(v) * plotH;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="sans-serif" font-size="12">`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="white"/>`,
    `<text x="${WIDTH / 2 - MARGIN.right / 2}" y="22" text-anchor="middle" font-size="15">${escapeXml(title)}</text>`,
  );
  for (const v of logTicks(lo, hi)) {
    const x = sx(v).toFixed(1);
    const y = sy(v).toFixed(1);
    out.push(
      `<line x1="${MARGIN.left}" y1="${y}" x2="${MARGIN.left + plotW}" y2="${y}" stroke="#e5e5e5"/>`,
      `<line x1="${x}" y1="${MARGIN.top}" x2="${x}" y2="${MARGIN.top + plotH}" stroke="#e5e5e5"/>`,
      `<text x="${MARGIN.left - 6}" y="${(sy(v) + 4).toFixed(1)}" text-anchor="end">${fmt(v)}</text>`,
      `<text x="${x}" y="${MARGIN.top + plotH + 18}" text-anchor="middle">${fmt(v)}</text>`,
    );
  }
  out.push(
    `<rect x="${MARGIN.left}" y="${MARGIN.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#333"/>`,
    `<line x1="${sx(lo)}" y1="${sy(lo)}" x2="${sx(hi)}" y2="${sy(hi)}" stroke="#999" stroke-dasharray="4 4"/>`,
    `<text x="${MARGIN.left + plotW / 2}" y="${HEIGHT - 12}" text-anchor="middle">offered (Mbit/s, log scale)</text>`,
    `<text transform="translate(18 ${MARGIN.top + plotH / 2}) rotate(-90)" text-anchor="middle">delivered (Mbit/s, log scale)</text>`,
  );
  series.forEach((s, i) => {
    const pts = [...s.points].sort((a, b) => a.x - b.x);
    const dash = s.dashed ? ` stroke-dasharray="6 3"` : "";
    if (pts.length > 0) {
      const d = pts.map((p) => `${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(" ");
      out.push(`<polyline points="${d}" fill="none" stroke="${s.color}" stroke-width="2"${dash}/>`);
      for (const p of pts) {
        out.push(
          `<circle cx="${sx(p.x).toFixed(1)}" cy="${sy(p.y).toFixed(1)}" r="3" fill="${s.color}"/>`,
        );
      }
    }
    const ly = MARGIN.top + 10 + i * 20;
    const lx = MARGIN.left + plotW + 15;
    out.push(
      `<line x1="${lx}" y1="${ly}" x2="${lx + 25}" y2="${ly}" stroke="${s.color}" stroke-width="2"${dash}/>`,
      `<text x="${lx + 32}" y="${ly + 4}">${escapeXml(s.name)}</text>`,
    );
  });
  const ly = MARGIN.top + 10 + series.length * 20;
  const lx = MARGIN.left + plotW + 15;
  out.push(
    `<line x1="${lx}" y1="${ly}" x2="${lx + 25}" y2="${ly}" stroke="#999" stroke-dasharray="4 4"/>`,
    `<text x="${lx + 32}" y="${ly + 4}">delivered = offered</text>`,
    "</svg>",
  );
  return `${out.join("\n")}\n`;
}
