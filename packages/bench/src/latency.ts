/**
 * Round-trip latency through the rig: the bench's own UDP echo on B (port ECHO_PORT), reached
 * at the app port by probes that B's nft steers there by their magic first word, so it works
 * the same direct and through the tunnel, and while iperf3 holds the app port.
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { ManagedProcess, type Rig, toolPath } from "fake-tcp-e2e";
import { percentile } from "./percentile.js";
import { PROBE_MAGIC } from "./probe-magic.js";

/** Where B's echo for latency probes listens (the probes are redirected to it). */
export const ECHO_PORT = 7002;

const PROBE_SCRIPT = join(dirname(fileURLToPath(import.meta.url)), "tools", "latency-probe.js");

export interface LatencyResult {
  sent: number;
  received: number;
  p50Us: number;
  p99Us: number;
  /**
   * With warm-up probes: the round trip of the very first one (for the tunnel, a new UDP
   * peer's first datagram waits for the connection's handshake); -1 when it got no echo.
   */
  firstUs?: number;
}

/**
 * Installs the probe redirect in B and starts the echo application; returns it (the rig's
 * destroy() kills it with B's namespace).
 */
export async function startProbeEcho(rig: Rig): Promise<ManagedProcess> {
  // nat prerouting sees only a flow's first packet; conntrack then steers the rest of it.
  rig.b.exec(
    "nft",
    ["-f", "-"],
    `table ip bench_probe {
  chain prerouting {
    type nat hook prerouting priority -100; policy accept;
    udp dport ${rig.appPort} @th,64,32 0x${PROBE_MAGIC.toString(16)} redirect to :${ECHO_PORT}
  }
}
`,
  );
  const echo = new ManagedProcess("probe-echo@B", rig.b, process.execPath, [
    toolPath("udp-echo-server"),
    "--port",
    String(ECHO_PORT),
  ]);
  await echo.waitFor((l) => l.json?.event === "ready", 10_000);
  return echo;
}

/**
 * Sends `count` probes from A at the app target, one per `intervalMs`, and sums up the RTTs;
 * `warmup` probes go first and are left out (see latency-probe.ts).
 */
export async function measureLatency(
  rig: Rig,
  count: number,
  intervalMs: number,
  warmup = 0,
): Promise<LatencyResult> {
  const t = rig.appTarget;
  const res = await rig.a.execAsync(
    process.execPath,
    [
      PROBE_SCRIPT,
      "--target",
      `${t.host}:${t.port}`,
      "--count",
      String(count),
      "--interval",
      String(intervalMs),
      "--size",
      "32",
      "--wait",
      "1000",
      "--warmup",
      String(warmup),
    ],
    (count + warmup) * intervalMs + 30_000,
  );
  let parsed: { sent: number; received: number; rttUs: number[]; warmupUs?: number[] };
  try {
    parsed = JSON.parse(res.stdout) as typeof parsed;
  } catch {
    throw new Error(`latency probe failed (exit ${res.code}): ${res.stderr}${res.stdout}`);
  }
  if (parsed.received === 0) throw new Error("latency probe: no echo came back");
  return {
    sent: parsed.sent,
    received: parsed.received,
    p50Us: percentile(parsed.rttUs, 50),
    p99Us: percentile(parsed.rttUs, 99),
    ...(warmup > 0 && parsed.warmupUs?.length ? { firstUs: parsed.warmupUs[0] } : {}),
  };
}
