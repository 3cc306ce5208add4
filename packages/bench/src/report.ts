/**
 * The run as text: the comparison table (printed and written to docs/benchmarks.md), the
 * headline ratio, and the chart's series.
 */
import { renderKeyedRounds } from "./keyed-rounds.js";
import type { BenchRun, ModeResult } from "./results.js";
import type { ChartSeries } from "./svg-chart.js";
import { cpuPerGigabit, type SweepResult } from "./throughput.js";

const NA = "–";

function mbitText(bps: number): string {
  return (bps / 1e6).toFixed(bps >= 1e9 ? 0 : 1);
}

function bestText(s: SweepResult | null): string {
  if (!s) return NA;
  if (!s.best) return `none under 1 % loss (${s.end})`;
  const b = s.best;
  const limited =
    s.end === "sender-limited"
      ? ", sender-limited"
      : s.end === "time-budget"
        ? ", sweep cut short by its time budget"
        : "";
  const failed = s.failedRuns ? `; ${s.failedRuns} iperf3 run(s) failed and were repeated` : "";
  return `${mbitText(b.deliveredBps)} (offered ${mbitText(b.offeredBps)}, loss ${b.lossPercent.toFixed(2)} %${limited}${failed})`;
}

/** tunnel/direct of the highest delivered rate under the loss limit (see RateSweep.best). */
export function rateRatio(direct: SweepResult | null, tunnel: SweepResult | null): number | null {
  const d = direct?.best?.deliveredBps;
  const t = tunnel?.best?.deliveredBps;
  return d && t !== undefined ? t / d : null;
}

function ratioText(r: number | null): string {
  return r === null ? NA : r.toFixed(2);
}

function usText(v: number | null | undefined): string {
  return v === null || v === undefined || Number.isNaN(v) ? NA : `${Math.round(v)}`;
}

function addedText(tunnel: number | undefined, direct: number | undefined): string {
  if (tunnel === undefined || direct === undefined) return NA;
  const d = tunnel - direct;
  return `${d >= 0 ? "+" : ""}${Math.round(d)} µs`;
}

function mib(bytes: number | null): string {
  return bytes === null ? "?" : (bytes / 1048576).toFixed(1);
}

function rssText(pair: [number | null, number | null] | undefined): string {
  return pair ? `${mib(pair[0])} → ${mib(pair[1])}` : NA;
}

function cpuText(s: SweepResult | null): string {
  const v = cpuPerGigabit(s?.best ?? null);
  return v === null ? NA : v.toFixed(2);
}

/** CPU per gigabit at a fixed offered rate (comparable between runs whatever their best). */
function cpuAtText(s: SweepResult | null, offeredBps: number): string {
  const v = cpuPerGigabit(s?.steps.find((p) => p.offeredBps === offeredBps) ?? null);
  return v === null ? NA : v.toFixed(2);
}

function scaleText(m: ModeResult): string {
  const s = m.scale;
  if (!s) return NA;
  const opened = s.connectionsOpened;
  const sent =
    `${s.datagramsSent} datagrams sent` +
    (opened
      ? `; connections opened: client ${opened.client ?? "?"}, server ${opened.server ?? "?"}`
      : "");
  if (s.flowsPerSecond === null) return `only ${s.answered}/${s.flows} flows answered (${sent})`;
  return (
    `${Math.round(s.flowsPerSecond)} flows/s (all ${s.flows} in ${s.allAnsweredMs} ms; ` +
    `median first echo ${s.medianFirstReplyMs} ms; ${sent})`
  );
}

function lossText(l: { sent: number; received: number } | null): string {
  return l ? ` (${l.sent - l.received} lost)` : "";
}

/** `rows` as a Markdown table, the first row its header. */
function markdownTable(rows: string[][]): string {
  const lines = rows.map((r) => `| ${r.join(" | ")} |`);
  lines.splice(1, 0, `|${"---|".repeat(rows[0].length)}`);
  return lines.join("\n");
}

/** The "highest rate under 1 % loss" rows, A→B and B→A: `base`, `other`, and other/base. */
function bestRateRows(base: ModeResult, other: ModeResult): string[][] {
  return (["forward", "reverse"] as const).map((dir) => [
    `highest rate under 1 % loss, ${dir === "forward" ? "A→B" : "B→A"} (Mbit/s delivered)`,
    bestText(base[dir]),
    bestText(other[dir]),
    ratioText(rateRatio(base[dir], other[dir])),
  ]);
}

/** The comparison table as Markdown rows. */
export function renderTable(run: BenchRun): string {
  const { direct: d, tunnel: t } = run;
  const fixed = run.settings.startBps;
  const rows: string[][] = [
    ["Measurement", "direct UDP", "tunnel", "tunnel vs direct"],
    ...bestRateRows(d, t),
    [
      "tunnel CPU s per Gbit delivered at that rate, A→B (client + server)",
      NA,
      cpuText(t.forward),
      NA,
    ],
    [
      "tunnel CPU s per Gbit delivered at that rate, B→A (client + server)",
      NA,
      cpuText(t.reverse),
      NA,
    ],
    [
      `same, at ${fixed / 1e6} Mbit/s offered (the first step), A→B / B→A`,
      NA,
      `${cpuAtText(t.forward, fixed)} / ${cpuAtText(t.reverse, fixed)}`,
      NA,
    ],
  ];
  const lat = (label: string, pick: (m: ModeResult) => number | undefined, loaded: boolean) => {
    const lossD = loaded ? d.latencyLoaded : d.latencyIdle;
    const lossT = loaded ? t.latencyLoaded : t.latencyIdle;
    rows.push([
      label,
      usText(pick(d)) + (label.includes("p50") ? lossText(lossD) : ""),
      usText(pick(t)) + (label.includes("p50") ? lossText(lossT) : ""),
      addedText(pick(t), pick(d)),
    ]);
  };
  lat("echo RTT p50, idle (µs)", (m) => m.latencyIdle?.p50Us, false);
  lat("echo RTT p99, idle (µs)", (m) => m.latencyIdle?.p99Us, false);
  const load = `${run.settings.loadBps / 1e6} Mbit/s load`;
  lat(`echo RTT p50, ${load} (µs)`, (m) => m.latencyLoaded?.p50Us, true);
  lat(`echo RTT p99, ${load} (µs)`, (m) => m.latencyLoaded?.p99Us, true);
  // The warm-up probes are left out of the figures above; the first one shows a new peer's
  // set-up (the tunnel's handshake), which those figures no longer include.
  if (d.latencyIdle?.firstUs !== undefined || t.latencyIdle?.firstUs !== undefined) {
    lat("echo RTT of a new peer's first probe, idle (µs)", (m) => m.latencyIdle?.firstUs, false);
  }
  const sd = d.scale?.flowsPerSecond ?? null;
  const st = t.scale?.flowsPerSecond ?? null;
  rows.push(
    [
      `${run.settings.flows} concurrent flows: set-up (until every first echo)`,
      scaleText(d),
      scaleText(t),
      sd && st ? ratioText(st / sd) : NA,
    ],
    ["fake-tcp-client RSS before → after the flows (MiB)", NA, rssText(t.scale?.rss?.client), NA],
    ["fake-tcp-server RSS before → after the flows (MiB)", NA, rssText(t.scale?.rss?.server), NA],
  );
  return markdownTable(rows);
}

/** How a path is named in the buffers table: "tunnel", or "tunnel --udp-run 8". */
export function pathName(m: ModeResult): string {
  return m.programArgs?.length ? `${m.mode} ${m.programArgs.join(" ")}` : m.mode;
}

/** Each step's receiver `RcvbufErrors` as "offered Mbit/s: errors", in the order measured. */
function rcvbufStepsText(s: SweepResult | null): string {
  if (!s) return NA;
  const parts = s.steps.map(
    (p) =>
      `${Math.round(p.offeredBps / 1e6)}: ${p.receiverRcvbufErrors ?? "?"}` +
      (p.tunnelRcvbufErrors ? ` (+${p.tunnelRcvbufErrors} in C/S)` : ""),
  );
  return parts.length ? parts.join(", ") : NA;
}

/**
 * Direct vs tunnel (and the `--udp-run` variants) with 4 MiB and with the kernel's default
 * receiver buffers, as Markdown rows, with the receiver's `RcvbufErrors` of every step;
 * empty when the run measured neither default buffers nor variants.
 */
export function renderBuffersTable(run: BenchRun): string {
  const variants = run.variants ?? [];
  const hasDefault = run.direct.defaultBuffers || run.tunnel.defaultBuffers;
  if (!hasDefault && variants.length === 0) return "";
  const tunnels = [run.tunnel, ...variants];
  const header = [
    "Receiver buffers, direction",
    "direct UDP",
    ...tunnels.map(pathName),
    `${tunnels.map(pathName).join(" / ")} vs direct`,
  ];
  const rows: string[][] = [header];
  const sizes: [
    string,
    (
      m: ModeResult,
    ) => { forward: SweepResult | null; reverse: SweepResult | null } | null | undefined,
  ][] = [
    ["4 MiB", (m) => m],
    ["default (net.core.rmem_default)", (m) => m.defaultBuffers],
  ];
  for (const [size, pick] of sizes) {
    if (size !== "4 MiB" && !hasDefault) continue;
    for (const dir of ["forward", "reverse"] as const) {
      const arrow = dir === "forward" ? "A→B" : "B→A";
      const d = pick(run.direct)?.[dir] ?? null;
      const ts = tunnels.map((t) => pick(t)?.[dir] ?? null);
      rows.push([
        `${size}, ${arrow}: highest rate under 1 % loss (Mbit/s delivered)`,
        bestText(d),
        ...ts.map(bestText),
        ts.map((t) => ratioText(rateRatio(d, t))).join(" / "),
      ]);
      rows.push([
        `${size}, ${arrow}: receiver RcvbufErrors per step (offered Mbit/s: datagrams)`,
        rcvbufStepsText(d),
        ...ts.map(rcvbufStepsText),
        NA,
      ]);
    }
  }
  const lat = (m: ModeResult) => m.latencyLoaded?.p99Us;
  rows.push([
    `echo RTT p99, ${run.settings.loadBps / 1e6} Mbit/s load (µs; added vs direct)`,
    usText(lat(run.direct)),
    ...tunnels.map((t) => `${usText(lat(t))} (${addedText(lat(t), lat(run.direct))})`),
    NA,
  ]);
  return markdownTable(rows);
}

/**
 * The keyed tunnel next to the unkeyed one (`--keyed`), as Markdown rows; empty without it.
 * Both carry data the same way after the handshake, so the ratio should be 1 within noise.
 */
export function renderKeyedTable(run: BenchRun): string {
  const k = run.keyed;
  if (!k) return "";
  const t = run.tunnel;
  const rows: string[][] = [
    ["Measurement", "tunnel", "tunnel, keyed", "keyed vs unkeyed"],
    ...bestRateRows(t, k),
    [
      "CPU s per Gbit delivered at that rate, A→B / B→A (client + server)",
      `${cpuText(t.forward)} / ${cpuText(t.reverse)}`,
      `${cpuText(k.forward)} / ${cpuText(k.reverse)}`,
      NA,
    ],
    [
      `same, at ${run.settings.startBps / 1e6} Mbit/s offered, A→B / B→A`,
      `${cpuAtText(t.forward, run.settings.startBps)} / ${cpuAtText(t.reverse, run.settings.startBps)}`,
      `${cpuAtText(k.forward, run.settings.startBps)} / ${cpuAtText(k.reverse, run.settings.startBps)}`,
      NA,
    ],
    [
      "echo RTT p50 / p99, idle (µs)",
      `${usText(t.latencyIdle?.p50Us)} / ${usText(t.latencyIdle?.p99Us)}`,
      `${usText(k.latencyIdle?.p50Us)} / ${usText(k.latencyIdle?.p99Us)}`,
      addedText(k.latencyIdle?.p50Us, t.latencyIdle?.p50Us),
    ],
  ];
  return markdownTable(rows);
}

/**
 * What a ratio can say when a sweep ended at iperf3's own ceiling ("sender-limited"): that
 * path could carry more than it was offered, so its figure is a floor. A sender-limited
 * direct path makes the ratio an upper bound of the real one, a sender-limited tunnel a lower
 * bound, and both at once leave it undecided: it then compares two senders, not two paths.
 */
export function ratioBound(direct: SweepResult | null, tunnel: SweepResult | null): string {
  const d = direct?.end === "sender-limited";
  const t = tunnel?.end === "sender-limited";
  if (d && t) return " (both sender-limited: undecided)";
  if (d) return " (direct sender-limited: at most this)";
  if (t) return " (tunnel sender-limited: at least this)";
  return "";
}

/** The headline: tunnel/direct of the highest delivered rate under 1 % loss, per direction. */
export function renderHeadline(run: BenchRun): string {
  const f = rateRatio(run.direct.forward, run.tunnel.forward);
  const r = rateRatio(run.direct.reverse, run.tunnel.reverse);
  if (f === null && r === null) {
    return "**Headline: tunnel/direct could not be measured** (see the errors below).";
  }
  const forward =
    f === null ? NA : `${ratioText(f)}${ratioBound(run.direct.forward, run.tunnel.forward)}`;
  const reverse =
    r === null ? NA : `${ratioText(r)}${ratioBound(run.direct.reverse, run.tunnel.reverse)}`;
  return `**Headline — tunnel/direct, highest rate under 1 % loss: A→B ${forward}, B→A ${reverse}; ${addedP99Text(run)}.**`;
}

/** The echo p99 the tunnel adds under the loaded-latency iperf3 load (target: under 1 ms). */
function addedP99Text(run: BenchRun): string {
  const load = `${run.settings.loadBps / 1e6} Mbit/s`;
  const t = run.tunnel.latencyLoaded?.p99Us;
  const d = run.direct.latencyLoaded?.p99Us;
  if (t === undefined || d === undefined) return `added echo p99 at ${load}: not measured`;
  return `added echo p99 at ${load}: ${addedText(t, d)} (target < 1000 µs)`;
}

/** Errors of the run, one bullet each (empty when none). */
export function renderErrors(run: BenchRun): string {
  return [run.direct, run.tunnel, ...(run.variants ?? []), ...(run.keyed ? [run.keyed] : [])]
    .flatMap((m) => m.errors.map((e) => `- ${pathName(m)}: not measured: \`${oneLine(e)}\``))
    .join("\n");
}

/**
 * An error on one line for the table: its first line plus the programs' stderr lines from the
 * log tail the rig attaches (the pino stdout lines there are noise).
 */
export function oneLine(text: string): string {
  const [first, ...rest] = text.split("\n");
  const stderr = rest
    .filter((l) => / stderr\] /.test(l))
    .map((l) => l.replace(/^\s*\[[^\]]*\]\s*/, ""));
  const line = [first, ...stderr.slice(-3)]
    .join(" / ")
    .replace(/\s+/g, " ")
    .replace(/`/g, "'")
    .trim();
  return line.length > 400 ? `${line.slice(0, 400)}…` : line;
}

/** The "### Run ..." subsection for docs/benchmarks.md. */
export function renderRunSection(run: BenchRun, chartFile: string | null): string {
  const s = run.settings;
  const parts = [
    `### Run ${run.startedAt.toISOString()} — ${run.label}${run.quick ? " (quick)" : ""}`,
    "",
    `Machine: ${run.cores} cores (shared with other work; load average ${run.loadAverage.toFixed(2)} at start, ` +
      `${run.loadAverageEnd.toFixed(2)} at the end), ` +
      `Node ${run.nodeVersion}, commit ${run.commit}. Run took ${Math.round(run.durationSeconds)} s ` +
      `(iperf3 steps of ${s.stepSeconds} s; ${s.probes} echo probes every ${s.probeIntervalMs} ms` +
      `${s.warmupProbes ? ` after ${s.warmupProbes} warm-up probes` : ""}).`,
    "",
    renderHeadline(run),
    "",
    renderTable(run),
  ];
  if (run.keyed)
    parts.push("", "Keyed (`--key-file` on both ends) vs unkeyed:", "", renderKeyedTable(run));
  if (run.keyedRounds) {
    const k = run.keyedRounds;
    parts.push(
      "",
      `Keyed vs unkeyed in ${2 * k.rounds} alternating rounds on one rig (programs restarted with and ` +
        `without \`--key-file\` in turns; iperf3 steps of ${k.stepSeconds} s):`,
      "",
      renderKeyedRounds(k),
    );
  }
  const buffers = renderBuffersTable(run);
  if (buffers) {
    parts.push(
      "",
      "Receiver socket buffers (iperf3 `-w 4M` vs the kernel's default at both ends):",
      "",
      buffers,
    );
  }
  const errors = renderErrors(run);
  if (errors) parts.push("", errors);
  if (chartFile) {
    parts.push(
      "",
      `![delivered vs offered rate, direct and tunnel](${chartFile})`,
      "",
      `Every step's figures: [${chartFile.replace(/\.svg$/, ".json")}](${chartFile.replace(/\.svg$/, ".json")}).`,
    );
  }
  return `${parts.join("\n")}\n`;
}

/** The chart's series: delivered vs offered, per path and direction, in Mbit/s. */
export function chartSeries(run: BenchRun): ChartSeries[] {
  const series = (name: string, color: string, dashed: boolean, s: SweepResult | null) => ({
    name,
    color,
    dashed,
    points: (s?.steps ?? []).map((p) => ({ x: p.offeredBps / 1e6, y: p.deliveredBps / 1e6 })),
  });
  /** A→B solid and B→A dashed, in one colour; none for a path not measured. */
  const bothWays = (
    path: string,
    color: string,
    sweeps: { forward: SweepResult | null; reverse: SweepResult | null } | null | undefined,
    suffix = "",
  ) =>
    sweeps
      ? [
          series(`${path} A→B${suffix}`, color, false, sweeps.forward),
          series(`${path} B→A${suffix}`, color, true, sweeps.reverse),
        ]
      : [];
  return [
    ...bothWays("direct", "#1f77b4", run.direct),
    ...bothWays("tunnel", "#d62728", run.tunnel),
    ...bothWays("direct", "#17becf", run.direct.defaultBuffers, ", default buffers"),
    ...bothWays("tunnel", "#ff7f0e", run.tunnel.defaultBuffers, ", default buffers"),
    ...bothWays("keyed", "#2ca02c", run.keyed),
  ];
}
