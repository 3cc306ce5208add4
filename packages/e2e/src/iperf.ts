/** iperf3 UDP runs between namespaces, with the JSON results reduced to the figures we report. */
import type { Namespace } from "./namespace.js";
import { ManagedProcess } from "./process.js";

/** Summary of one iperf3 UDP test, as measured by the receiving side. */
export interface IperfUdpResult {
  /** Throughput the receiver got, in bits per second. */
  receivedBitsPerSecond: number;
  sentBitsPerSecond: number;
  lostPackets: number;
  packets: number;
  lostPercent: number;
  jitterMs: number;
  seconds: number;
  /** "forward" = client→server (A→B); "reverse" = server→client (B→A, iperf3 -R). */
  direction: "forward" | "reverse";
}

/** Starts `iperf3 -s` (one test at a time) in `ns` and waits until it listens. */
export async function startIperfServer(ns: Namespace, port: number): Promise<ManagedProcess> {
  const proc = new ManagedProcess(`iperf3-server@${ns.role}`, ns, "iperf3", [
    "-s",
    "-p",
    String(port),
    "--forceflush",
  ]);
  await proc.waitFor(/Server listening/, 5_000);
  return proc;
}

export interface IperfUdpOptions {
  /** host:port the iperf3 client sends to (B directly, or the tunnel client's --local). */
  host: string;
  port: number;
  /** Offered rate in bits per second. */
  bitrate: number;
  seconds: number;
  /** UDP payload size in bytes (iperf3 -l). */
  length?: number;
  reverse?: boolean;
  /**
   * Socket buffer size of both iperf3 ends in bytes (iperf3 -w). Default 4 MiB (capped by
   * net.core.rmem_max/wmem_max); 0: no -w, the kernel's defaults (net.core.rmem_default,
   * usually 208 KiB), as an application that never sizes its buffers gets.
   */
  socketBuffer?: number;
}

/**
 * Runs `iperf3 -c -u` in `ns` and parses its JSON. iperf3's control connection is TCP and its
 * data UDP, both to the same host and port: the rig sends the TCP straight through R and
 * diverts the UDP into the tunnel (see `Rig`), so the server's --remote is B's iperf3 port.
 */
export async function runIperfUdp(ns: Namespace, opts: IperfUdpOptions): Promise<IperfUdpResult> {
  const args = [
    "-c",
    opts.host,
    "-p",
    String(opts.port),
    "-u",
    "-b",
    String(Math.round(opts.bitrate)),
    "-t",
    String(opts.seconds),
    "-J",
  ];
  // iperf3's own socket buffers (-w, passed to the server too) are made large so that a
  // briefly descheduled iperf3 does not drop datagrams itself: losses then belong to the path.
  // iperf3 fails when the kernel grants less than asked, so stay within net.core.*mem_max.
  if (opts.socketBuffer !== 0) {
    args.push("-w", String(opts.socketBuffer ?? socketBufferLimit(ns, 4 * 1024 * 1024)));
  }
  if (opts.length) args.push("-l", String(opts.length));
  if (opts.reverse) args.push("-R");
  const res = await ns.execAsync("iperf3", args, (opts.seconds + 20) * 1000);
  let json: IperfJson;
  try {
    json = JSON.parse(res.stdout) as IperfJson;
  } catch {
    throw new Error(`iperf3 gave no JSON (exit ${res.code}): ${res.stderr || res.stdout}`);
  }
  if (json.error) throw new Error(`iperf3: ${json.error}`);
  const sum = json.end?.sum;
  if (!sum) throw new Error(`iperf3: no end.sum in ${res.stdout.slice(0, 500)}`);
  return {
    receivedBitsPerSecond: json.end?.sum_received?.bits_per_second ?? sum.bits_per_second,
    sentBitsPerSecond: json.end?.sum_sent?.bits_per_second ?? sum.bits_per_second,
    lostPackets: sum.lost_packets,
    packets: sum.packets,
    lostPercent: sum.lost_percent,
    jitterMs: sum.jitter_ms,
    seconds: sum.seconds,
    direction: opts.reverse ? "reverse" : "forward",
  };
}

interface IperfJson {
  error?: string;
  end?: {
    sum?: {
      bits_per_second: number;
      lost_packets: number;
      packets: number;
      lost_percent: number;
      jitter_ms: number;
      seconds: number;
    };
    sum_sent?: { bits_per_second: number };
    sum_received?: { bits_per_second: number };
  };
}

/** `wanted`, capped by the namespace's net.core.rmem_max and wmem_max. */
function socketBufferLimit(ns: Namespace, wanted: number): number {
  let limit = wanted;
  for (const key of ["rmem_max", "wmem_max"]) {
    try {
      const value = Number(ns.exec("cat", [`/proc/sys/net/core/${key}`]).trim());
      if (Number.isFinite(value) && value > 0) limit = Math.min(limit, value);
    } catch {}
  }
  return limit;
}
