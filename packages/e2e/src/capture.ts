/**
 * Packet capture with tcpdump on one interface of a namespace, counted by IP protocol. The
 * capture is written as pcap and parsed here, so every packet counts (no text parsing).
 */
import { readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Namespace } from "./namespace.js";
import { uniqueName } from "./namespace.js";
import { type TcpPacket, tcpPackets } from "./pcap.js";
import { ManagedProcess } from "./process.js";

/** Packets seen, by protocol. */
export interface ProtocolCounts {
  tcp: number;
  udp: number;
  icmp: number;
  /** IPv4 fragments (more-fragments flag or a fragment offset): the tunnel must never make any. */
  fragments: number;
  /** ARP frames (link-layer housekeeping, not traffic). */
  arp: number;
  /** Other IPv4 protocols, IPv6 and other frames. */
  other: number;
  total: number;
  /** TCP payload bytes (from the IP and TCP headers, so a truncated capture still counts). */
  tcpPayloadBytes: number;
  /**
   * IPv4 packets longer than the link's 1500-byte MTU: coalesced runs (segmentation offload)
   * that a virtual link carries whole; a physical NIC would send them as separate segments.
   */
  oversize: number;
  /** Packets tcpdump reports it dropped (should be 0 for the counts to be complete). */
  droppedByKernel: number;
}

export class Capture {
  private readonly file: string;
  private readonly proc: ManagedProcess;

  private constructor(ns: Namespace, iface: string, filter: string[]) {
    this.file = join(tmpdir(), `${uniqueName("e2ecap")}.pcap`);
    // Snap length 96 is enough for the Ethernet + IP + transport headers we count.
    this.proc = new ManagedProcess(`tcpdump@${ns.role}`, ns, "tcpdump", [
      "-i",
      iface,
      "-n",
      // Without immediate mode tcpdump reads the ring in blocks and loses the last one at stop.
      "--immediate-mode",
      "-s",
      "96",
      "-B",
      "8192",
      "-w",
      this.file,
      ...filter,
    ]);
  }

  /**
   * Starts capturing and resolves once tcpdump is listening. `filter`: a tcpdump filter
   * expression, as words (default: everything).
   */
  static async start(ns: Namespace, iface: string, filter: string[] = []): Promise<Capture> {
    const cap = new Capture(ns, iface, filter);
    await cap.proc.waitFor(/listening on/, 5_000);
    return cap;
  }

  /** Stops the capture, counts its packets by protocol and deletes the file. */
  async stop(): Promise<ProtocolCounts> {
    return (await this.stopWithPackets()).counts;
  }

  /** Stops the capture; its counts and every IPv4 TCP packet (headers, see `pcap.ts`). */
  async stopWithPackets(): Promise<{ counts: ProtocolCounts; packets: TcpPacket[] }> {
    this.proc.signal("SIGINT");
    await this.proc.waitExit(5_000);
    const dropped = /(\d+) packets dropped by kernel/.exec(this.proc.output());
    try {
      const file = readFileSync(this.file);
      const counts = countPcap(file);
      counts.droppedByKernel = dropped ? Number(dropped[1]) : 0;
      return { counts, packets: tcpPackets(file) };
    } finally {
      rmSync(this.file, { force: true });
    }
  }
}

/** Counts packets of a classic pcap file (Ethernet link type) by IP protocol. */
export function countPcap(buf: Buffer): ProtocolCounts {
  const counts: ProtocolCounts = {
    tcp: 0,
    udp: 0,
    icmp: 0,
    arp: 0,
    fragments: 0,
    other: 0,
    total: 0,
    tcpPayloadBytes: 0,
    oversize: 0,
    droppedByKernel: 0,
  };
  if (buf.length < 24) return counts;
  const magic = buf.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  const u32 = (o: number) => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  let off = 24;
  while (off + 16 <= buf.length) {
    const incl = u32(off + 8);
    const frame = off + 16;
    off = frame + incl;
    if (off > buf.length) break;
    counts.total++;
    if (incl < 14 + 20) {
      counts.other++;
      continue;
    }
    const etherType = buf.readUInt16BE(frame + 12);
    if (etherType === 0x0806) {
      counts.arp++;
      continue;
    }
    if (etherType !== 0x0800) {
      counts.other++;
      continue;
    }
    const ip = frame + 14;
    const proto = buf[ip + 9];
    const totalLength = buf.readUInt16BE(ip + 2);
    if (totalLength > 1500) counts.oversize++;
    if ((buf.readUInt16BE(ip + 6) & 0x3fff) !== 0) counts.fragments++;
    if (proto === 6) {
      counts.tcp++;
      const ihl = (buf[ip] & 15) * 4;
      if (incl >= 14 + ihl + 13)
        counts.tcpPayloadBytes += totalLength - ihl - (buf[ip + ihl + 12] >>> 4) * 4;
    } else if (proto === 17) counts.udp++;
    else if (proto === 1) counts.icmp++;
    else counts.other++;
  }
  return counts;
}
