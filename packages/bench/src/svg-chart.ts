/**
 * A hand-written SVG line chart of delivered vs offered rate (no dependencies): one polyline
 * per series, a dashed "delivered = offered" diagonal, axes with round ticks and a legend.
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

/** A "nice" tick step (1, 2 or 5 times a power of ten) giving about `count` ticks up to max. */
export function niceStep(max: number, count = 5): number {
  if (!(max > 0)) return 1;
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const unit = raw / power;
  const nice = unit <= 1 ? 1 : unit <= 2 ? 2 : unit <= 5 ? 5 : 10;
  return nice * power;
}

function fmt(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

/** Renders the chart as a complete SVG document. */
export function renderRateChart(title: string, series: readonly ChartSeries[]): string {
  const all = series.flatMap((s) => s.points);
  const dataMax = Math.max(1, ...all.map((p) => Math.max(p.x, p.y)));
  const step = niceStep(dataMax);
  const axisMax = Math.ceil(dataMax / step) * step;
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const sx = (v: number) => MARGIN.left + (v / axisMax) * plotW;
  const sy = (v: number) => MARGIN.top + plotH - (v / axisMax) * plotH;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="sans-serif" font-size="12">`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="white"/>`,
    `<text x="${WIDTH / 2 - MARGIN.right / 2}" y="22" text-anchor="middle" font-size="15">${escapeXml(title)}</text>`,
  );
  for (let v = 0; v <= axisMax + step / 1e6; v += step) {
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
    `<line x1="${sx(0)}" y1="${sy(0)}" x2="${sx(axisMax)}" y2="${sy(axisMax)}" stroke="#999" stroke-dasharray="4 4"/>`,
    `<text x="${MARGIN.left + plotW / 2}" y="${HEIGHT - 12}" text-anchor="middle">offered (Mbit/s)</text>`,
    `<text transform="translate(18 ${MARGIN.top + plotH / 2}) rotate(-90)" text-anchor="middle">delivered (Mbit/s)</text>`,
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
