/**
 * The WAN attacker's packet injector (runs in the rig's attacker namespace X). It opens a TUN
 * device, routes `--route` (the attacker's own prefix) into it, and writes packets built with
 * the stack's wire codecs into it; X forwards them onto the WAN like any router would, with
 * whatever source they claim. Replies to the attacker's prefix come back through the device.
 *
 * Modes (each prints `{"event":"ready"}` once its device is up and one `{"event":"done",...}`
 * line at the end; every loop is bounded by its counts and by a deadline):
 *
 *  flood  A blind attack on one established flow: the attacker knows both ends' public
 *         tuples (`--client`, `--server`) but not the sequence numbers. Sends, spread evenly
 *         over `--duration` ms and shuffled: `--rsts` RSTs and RST+ACKs, `--data` data
 *         segments (payload = the forged mark) with random seq/ack, half of each claiming to
 *         be the client (towards the server) and half the server (towards the client's public
 *         tuple at its NAT router); `--syns` SYNs from random sources in `--spoof-prefix` at
 *         the server's port; `--malformed` malformed packets (truncated headers, bad data
 *         offsets, bad checksums, random flags and bytes) on both tuples and at `--stack`.
 *  churn  `--count` sequences, each from a fresh source port: SYN (seq 0), read the SYN-ACK,
 *         then back to back the ACK (seq 1, ack = its seq + 1) and an RST (seq 1). Sources
 *         rotate over `--sources` addresses from `--source-base`; `--concurrency` at a time.
 *  hold   Completes `--count` handshakes the same way and keeps each alive with an ACK every
 *         `--keepalive` ms until SIGTERM or `--duration` ms. Logs `{"event":"established"}`
 *         once every handshake was answered (or timed out) and the server had a second to
 *         reset the ones it refuses: `established` counts the connections still held.
 *  probe  A scanner: `--count` segments of each kind (bare SYNs, phantun's SYN, a kernel's SYN
 *         with a random timestamp, SYNs with random option bytes, ACKs, FINs, data) at the
 *         server's port from fresh ports of `--source-base`, and each packet of `--replay`
 *         (hex IPv4 packets, e.g. a captured SYN) sent again `--count` times from there (every
 *         other time keeping its source port); waits `--wait` ms and counts every packet that
 *         came back, per kind.
 *  onpath An attacker on the path: reads the flow between `--client` (its public tuple) and
 *         `--server` live from `--iface` (tcpdump) and injects `--rsts` RSTs each way over
 *         `--duration` ms, each with exactly the sequence number the receiver expects next
 *         (the sender's last seq + length, as seen), alternately RST and RST+ACK.
 *
 * Usage: node tcp-injector.js flood|churn|hold|probe|onpath --tun NAME --route CIDR [options]
 */
import { execFileSync, spawn } from "node:child_process";
import { wire } from "fake-tcp";
import { TunDevice, type TunPacketBatch, type TunQueue } from "fake-tcp-tun";
import { PcapStream, type TcpPacket } from "../pcap.js";
import { hostPort, numberArg, parseArgs } from "./args.js";
import { FORGED_MARKER } from "./marker.js";

const { TcpFlags: F } = wire;
const mode = process.argv[2];
const args = parseArgs(process.argv.slice(3));

/** A small seeded generator (mulberry32): the same seed forges the same packets. */
function randomSource(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}
const random32 = randomSource(numberArg(args, "seed", 1));
const randomBelow = (n: number) => random32() % n;
function randomBytes(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = random32() & 0xff;
  return b;
}

function ipv4(text: string | undefined, name: string): number {
  const a = text === undefined ? null : wire.parseIpv4(text);
  if (a === null) throw new Error(`--${name} must be an IPv4 address, got ${text}`);
  return a;
}
function endpoint(name: string): { addr: number; port: number } {
  const hp = hostPort(args.get(name), name);
  return { addr: ipv4(hp.host, name), port: hp.port };
}

/** Opens the device, routes the attacker's prefix into it, and says so. */
function openDevice(): TunQueue {
  const name = args.get("tun") ?? "atk0";
  const device = TunDevice.open({ name, mtu: 1500 });
  const route = args.get("route");
  if (route) execFileSync("ip", ["route", "replace", route, "dev", name]);
  console.log(JSON.stringify({ event: "ready", tun: name, route }));
  return device.queues[0];
}

let writeFailures = 0;
function send(queue: TunQueue, packet: Uint8Array): void {
  if (!queue.write(packet)) writeFailures++;
}

/** The SYN a real client sends: seq 0, NOP + window scale 14. */
function syn(src: number, srcPort: number, dst: { addr: number; port: number }): Buffer {
  return wire.buildPacket({
    src,
    dst: dst.addr,
    srcPort,
    dstPort: dst.port,
    seq: 0,
    ack: 0,
    flags: F.SYN,
    options: { windowScale: 14 },
  });
}

/** A forged datagram: the mark, a serial number, then random bytes (64 bytes in all). */
function forgedPayload(serial: number): Buffer {
  const p = Buffer.concat([FORGED_MARKER, Buffer.alloc(4), randomBytes(64)]).subarray(0, 64);
  p.writeUInt32BE(serial >>> 0, FORGED_MARKER.length);
  return p;
}

/** Rewrites the IPv4 total length (and header checksum) to cover only `ipLength` bytes. */
function truncateIpv4(packet: Buffer, ipLength: number): Buffer {
  const out = Buffer.from(packet.subarray(0, ipLength));
  const src = out.readUInt32BE(12);
  const dst = out.readUInt32BE(16);
  wire.emitIpv4Header(out, 0, src, dst, ipLength - wire.IPV4_HEADER_LENGTH);
  return out;
}

/** Changes the TCP header's data offset (in 32-bit words) without fixing anything else. */
function withDataOffset(packet: Buffer, words: number): Buffer {
  packet[wire.IPV4_HEADER_LENGTH + 12] = (words & 15) << 4;
  return packet;
}

/** Breaks the TCP checksum. */
function withBadChecksum(packet: Buffer): Buffer {
  const at = wire.IPV4_HEADER_LENGTH + 16;
  packet.writeUInt16BE(packet.readUInt16BE(at) ^ 0x5a5a, at);
  return packet;
}

// ---- flood ------------------------------------------------------------------------------

type FloodKind =
  | "rst-to-server"
  | "rst-ack-to-server"
  | "rst-to-client"
  | "rst-ack-to-client"
  | "data-to-server"
  | "data-to-client"
  | "syn-spoofed"
  | "malformed";

const MALFORMED_VARIANTS = [
  "truncated-header-to-server",
  "truncated-header-to-client",
  "bad-checksum-data-to-server",
  "bad-checksum-data-to-client",
  "offset-past-end-to-server",
  "offset-too-small-to-server",
  "bad-options-data-to-server",
  "random-flags-to-server",
  "random-flags-to-client",
  "random-bytes-to-stack",
] as const;

async function flood(): Promise<void> {
  const client = endpoint("client");
  const server = endpoint("server");
  const stack = ipv4(args.get("stack"), "stack");
  const [spoofBase, spoofBits] = (args.get("spoof-prefix") ?? "10.201.128.0/17").split("/");
  const spoofNet = ipv4(spoofBase, "spoof-prefix");
  const spoofSize = 2 ** (32 - Number(spoofBits));
  const duration = numberArg(args, "duration", 10_000);
  const counts = {
    rsts: numberArg(args, "rsts", 20_000),
    data: numberArg(args, "data", 20_000),
    syns: numberArg(args, "syns", 10_000),
    malformed: numberArg(args, "malformed", 3_000),
  };
  const queue = openDevice();

  // The plan: every packet's kind, shuffled, so each sort is spread over the whole attack.
  const plan: FloodKind[] = [];
  const rstKinds: FloodKind[] = [
    "rst-to-server",
    "rst-ack-to-server",
    "rst-to-client",
    "rst-ack-to-client",
  ];
  for (let i = 0; i < counts.rsts; i++) plan.push(rstKinds[i % 4]);
  for (let i = 0; i < counts.data; i++) plan.push(i % 2 ? "data-to-client" : "data-to-server");
  for (let i = 0; i < counts.syns; i++) plan.push("syn-spoofed");
  for (let i = 0; i < counts.malformed; i++) plan.push("malformed");
  for (let i = plan.length - 1; i > 0; i--) {
    const j = randomBelow(i + 1);
    [plan[i], plan[j]] = [plan[j], plan[i]];
  }

  const kinds: Record<string, number> = {};
  let malformedIndex = 0;
  let serial = 0;
  /** A segment on the flow, from the client (towards the server) or the reverse. */
  const onFlow = (
    toServer: boolean,
    flags: number,
    payload?: Buffer,
    options?: wire.TcpOptions,
  ): Buffer =>
    wire.buildPacket({
      src: toServer ? client.addr : server.addr,
      dst: toServer ? server.addr : client.addr,
      srcPort: toServer ? client.port : server.port,
      dstPort: toServer ? server.port : client.port,
      seq: random32(),
      ack: random32(),
      flags,
      payload,
      options,
    });
  const build = (kind: FloodKind): { packet: Buffer; name: string } => {
    switch (kind) {
      case "rst-to-server":
        return { packet: onFlow(true, F.RST), name: kind };
      case "rst-ack-to-server":
        return { packet: onFlow(true, F.RST | F.ACK), name: kind };
      case "rst-to-client":
        return { packet: onFlow(false, F.RST), name: kind };
      case "rst-ack-to-client":
        return { packet: onFlow(false, F.RST | F.ACK), name: kind };
      case "data-to-server":
        return { packet: onFlow(true, F.ACK | F.PSH, forgedPayload(serial++)), name: kind };
      case "data-to-client":
        return { packet: onFlow(false, F.ACK | F.PSH, forgedPayload(serial++)), name: kind };
      case "syn-spoofed":
        return {
          packet: syn(
            spoofNet + 1 + randomBelow(spoofSize - 2),
            1024 + randomBelow(64_000),
            server,
          ),
          name: kind,
        };
      case "malformed": {
        const variant = MALFORMED_VARIANTS[malformedIndex++ % MALFORMED_VARIANTS.length];
        return { packet: buildMalformed(variant), name: `malformed:${variant}` };
      }
    }
  };
  const buildMalformed = (variant: (typeof MALFORMED_VARIANTS)[number]): Buffer => {
    const data = () => forgedPayload(serial++);
    switch (variant) {
      case "truncated-header-to-server":
        return truncateIpv4(onFlow(true, F.ACK), 20 + randomBelow(20));
      case "truncated-header-to-client":
        return truncateIpv4(onFlow(false, F.ACK), 20 + randomBelow(20));
      case "bad-checksum-data-to-server":
        return withBadChecksum(onFlow(true, F.ACK | F.PSH, data()));
      case "bad-checksum-data-to-client":
        return withBadChecksum(onFlow(false, F.ACK | F.PSH, data()));
      case "offset-past-end-to-server":
        return withDataOffset(onFlow(true, F.ACK), 15);
      case "offset-too-small-to-server":
        return withDataOffset(onFlow(true, F.ACK | F.PSH, data()), 2);
      case "bad-options-data-to-server": {
        // A window-scale option whose length runs past the options area.
        const p = onFlow(true, F.ACK | F.PSH, Buffer.concat([Buffer.from([3, 9, 255, 0]), data()]));
        return withDataOffset(p, 6);
      }
      case "random-flags-to-server":
        return onFlow(true, random32() & 0xff & ~F.SYN, data());
      case "random-flags-to-client":
        return onFlow(false, random32() & 0xff & ~F.SYN, data());
      case "random-bytes-to-stack": {
        const src = spoofNet + 1 + randomBelow(spoofSize - 2);
        const p = wire.buildPacket({
          src,
          dst: stack,
          srcPort: 1024 + randomBelow(64_000),
          dstPort: server.port,
          seq: 0,
          ack: 0,
          flags: 0,
          payload: randomBytes(20 + randomBelow(100)),
        });
        // Everything after the ports is noise.
        randomBytes(p.length - 24).copy(p, 24);
        return p;
      }
    }
  };

  const started = Date.now();
  const deadline = started + duration + 10_000;
  let sent = 0;
  while (sent < plan.length && Date.now() < deadline) {
    const due = Math.min(
      plan.length,
      Math.ceil((plan.length * (Date.now() - started)) / Math.max(1, duration)),
    );
    // At most 500 a tick: a late timer must not become one burst the kernel's backlog drops.
    for (let n = 0; sent < due && n < 500; n++, sent++) {
      const { packet, name } = build(plan[sent]);
      send(queue, packet);
      kinds[name] = (kinds[name] ?? 0) + 1;
    }
    await sleep(2);
  }
  const summary = (prefix: string) =>
    Object.entries(kinds)
      .filter(([k]) => k.startsWith(prefix))
      .reduce((a, [, v]) => a + v, 0);
  done({
    mode: "flood",
    planned: plan.length,
    sent,
    writeFailures,
    rsts: summary("rst-"),
    data: summary("data-"),
    syns: summary("syn-"),
    malformed: summary("malformed:"),
    kinds,
    seconds: (Date.now() - started) / 1000,
    stats: queue.stats(),
  });
}

// ---- handshakes (churn, hold) -------------------------------------------------------------

/** One handshake of ours: where it comes from and, once answered, the server's ISN. */
interface Handshake {
  src: number;
  port: number;
  isn: number | null;
  settle: (outcome: "answered" | "refused" | "timed-out") => void;
}

/**
 * Runs handshakes against `server` from the sources `--source-base` + 0..`--sources`-1,
 * `concurrency` at a time; `onAnswer` gets each SYN-ACK (and sends what follows it).
 */
class Handshaker {
  readonly pending = new Map<string, Handshake>();
  readonly outcomes = { answered: 0, refused: 0, "timed-out": 0 };
  /** ISNs seen: how many were 0 tells whether the server uses cookies/random ISNs. */
  isnZero = 0;
  /** Packets from the server for no handshake of ours (e.g. RSTs on held connections). */
  onOther: (src: number, port: number, flags: number) => void = () => {};
  private nextPort = 20_000;

  constructor(
    readonly queue: TunQueue,
    readonly server: { addr: number; port: number },
    private readonly onAnswer: (h: Handshake, synAck: { seq: number }) => void,
  ) {
    const parser = new wire.SegmentParser();
    queue.onReceive((batch: TunPacketBatch) => {
      for (let i = 0; i < batch.count; i++) {
        const at = batch.offsets[2 * i];
        if (parser.parse(batch.buffer, at, batch.offsets[2 * i + 1]) !== wire.ParseError.ok)
          continue;
        if (parser.family !== 4) continue;
        const t = parser.tcp;
        if ((parser.ip4.src | 0) !== (server.addr | 0) || t.srcPort !== server.port) continue;
        const key = `${parser.ip4.dst >>> 0}:${t.dstPort}`;
        const h = this.pending.get(key);
        if (h === undefined) {
          this.onOther(parser.ip4.dst >>> 0, t.dstPort, t.flags);
          continue;
        }
        if ((t.flags & F.RST) !== 0) {
          this.pending.delete(key);
          h.settle("refused");
        } else if ((t.flags & (F.SYN | F.ACK)) === (F.SYN | F.ACK) && t.ack === 1) {
          this.pending.delete(key);
          h.isn = t.seq >>> 0;
          if (h.isn === 0) this.isnZero++;
          this.onAnswer(h, { seq: h.isn });
          h.settle("answered");
        }
      }
    });
  }

  /** Runs `count` handshakes, each from the next source port; resolves when all settled. */
  async run(count: number, concurrency: number, timeoutMs: number): Promise<Handshake[]> {
    const base = ipv4(args.get("source-base"), "source-base");
    const sources = Math.max(1, numberArg(args, "sources", 1));
    const answered: Handshake[] = [];
    let started = 0;
    const one = async (): Promise<void> => {
      while (started < count) {
        const i = started++;
        const src = (base + (i % sources)) >>> 0;
        const port = this.nextPort++;
        if (this.nextPort > 65_000) this.nextPort = 20_000;
        const outcome = await new Promise<"answered" | "refused" | "timed-out">((resolve) => {
          const key = `${src}:${port}`;
          const timer = setTimeout(() => {
            this.pending.delete(key);
            resolve("timed-out");
          }, timeoutMs);
          const h: Handshake = {
            src,
            port,
            isn: null,
            settle: (o) => {
              clearTimeout(timer);
              if (o === "answered") answered.push(h);
              resolve(o);
            },
          };
          this.pending.set(key, h);
          send(this.queue, syn(src, port, this.server));
        });
        this.outcomes[outcome]++;
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, concurrency) }, one));
    return answered;
  }

  /** A segment from handshake `h` to the server, in its sequence space (seq 1, ack ISN + 1). */
  segment(h: Handshake, flags: number): Buffer {
    return wire.buildPacket({
      src: h.src,
      dst: this.server.addr,
      srcPort: h.port,
      dstPort: this.server.port,
      seq: 1,
      ack: flags === F.RST ? 0 : ((h.isn ?? 0) + 1) >>> 0,
      flags,
    });
  }
}

async function churn(): Promise<void> {
  const server = endpoint("server");
  const queue = openDevice();
  const started = Date.now();
  const hs: Handshaker = new Handshaker(queue, server, (h) => {
    // Back to back: the connection is established and reset within one write burst.
    send(queue, hs.segment(h, F.ACK));
    send(queue, hs.segment(h, F.RST));
  });
  await hs.run(
    numberArg(args, "count", 1_000),
    numberArg(args, "concurrency", 10),
    numberArg(args, "timeout", 2_000),
  );
  done({
    mode: "churn",
    attempted: numberArg(args, "count", 1_000),
    completed: hs.outcomes.answered,
    refused: hs.outcomes.refused,
    timedOut: hs.outcomes["timed-out"],
    isnZero: hs.isnZero,
    writeFailures,
    seconds: (Date.now() - started) / 1000,
  });
}

async function hold(): Promise<void> {
  const server = endpoint("server");
  const queue = openDevice();
  const keepalive = numberArg(args, "keepalive", 2_000);
  const duration = numberArg(args, "duration", 60_000);
  const started = Date.now();
  // A connection is held from our ACK on, until the server resets it (a server that answers
  // every SYN statelessly may still refuse the connection when the ACK comes).
  const held = new Map<string, Handshake>();
  const hs: Handshaker = new Handshaker(queue, server, (h) => {
    held.set(`${h.src}:${h.port}`, h);
    send(queue, hs.segment(h, F.ACK));
  });
  let resetByServer = 0;
  hs.onOther = (src, port, flags) => {
    const key = `${src}:${port}`;
    if ((flags & F.RST) !== 0 && held.delete(key)) resetByServer++;
  };
  const answered = await hs.run(
    numberArg(args, "count", 20),
    numberArg(args, "concurrency", 4),
    numberArg(args, "timeout", 2_000),
  );
  // Time for the server's refusals of the last ACKs to arrive.
  await sleep(1_000);
  console.log(
    JSON.stringify({
      event: "established",
      answered: answered.length,
      established: held.size,
      resetByServer,
      refused: hs.outcomes.refused,
      timedOut: hs.outcomes["timed-out"],
      isnZero: hs.isnZero,
    }),
  );
  let stopped = false;
  process.on("SIGTERM", () => {
    stopped = true;
  });
  let keepalivesSent = 0;
  let lastKeepalive = Date.now();
  while (!stopped && Date.now() - started < duration) {
    if (Date.now() - lastKeepalive >= keepalive) {
      lastKeepalive = Date.now();
      for (const h of held.values()) {
        send(queue, hs.segment(h, F.ACK));
        keepalivesSent++;
      }
    }
    await sleep(50);
  }
  done({
    mode: "hold",
    answered: answered.length,
    stillHeld: held.size,
    resetByServer,
    keepalivesSent,
    writeFailures,
    seconds: (Date.now() - started) / 1000,
  });
}

// ---- probe ------------------------------------------------------------------------------

const PROBE_KINDS = [
  "bare-syn",
  "phantun-syn",
  "kernel-syn",
  "random-options-syn",
  "ack",
  "fin",
  "data",
] as const;

async function probe(): Promise<void> {
  const server = endpoint("server");
  const base = ipv4(args.get("source-base"), "source-base");
  const count = numberArg(args, "count", 20);
  const wait = numberArg(args, "wait", 2_000);
  const replays = (args.get("replay") ?? "")
    .split(",")
    .filter((h) => h.length > 0)
    .map((h) => Buffer.from(h, "hex"));
  const queue = openDevice();
  const kindOfPort = new Map<number, string>();
  const sent: Record<string, number> = {};
  const replies: Record<string, number> = {};
  const replyFlags: number[] = [];
  const parser = new wire.SegmentParser();
  queue.onReceive((batch: TunPacketBatch) => {
    for (let i = 0; i < batch.count; i++) {
      const at = batch.offsets[2 * i];
      if (parser.parse(batch.buffer, at, batch.offsets[2 * i + 1]) !== wire.ParseError.ok) continue;
      const kind = kindOfPort.get(parser.tcp.dstPort) ?? "other";
      replies[kind] = (replies[kind] ?? 0) + 1;
      replyFlags.push(parser.tcp.flags);
    }
  });
  let port = 20_000 + randomBelow(20_000);
  const next = (kind: string): { src: number; port: number } => {
    port = port >= 65_000 ? 20_000 : port + 1;
    kindOfPort.set(port, kind);
    sent[kind] = (sent[kind] ?? 0) + 1;
    return { src: (base + randomBelow(256)) >>> 0, port };
  };
  const segment = (
    kind: string,
    flags: number,
    seq: number,
    o: { options?: wire.TcpOptions; rawOptions?: Uint8Array; payload?: Buffer } = {},
  ): Buffer => {
    const from = next(kind);
    return wire.buildPacket({
      src: from.src,
      dst: server.addr,
      srcPort: from.port,
      dstPort: server.port,
      seq,
      ack: flags & F.ACK ? random32() : 0,
      flags,
      ...o,
    });
  };
  for (let n = 0; n < count; n++) {
    for (const kind of PROBE_KINDS) {
      let p: Buffer;
      if (kind === "bare-syn") p = segment(kind, F.SYN, random32());
      else if (kind === "phantun-syn")
        p = segment(kind, F.SYN, 0, { options: { windowScale: 14 } });
      else if (kind === "kernel-syn") {
        const timestamp = { value: random32(), echo: 0 };
        const options = { mss: 1460, sackPermitted: true, timestamp, windowScale: 7 };
        p = segment(kind, F.SYN, random32(), { options });
      } else if (kind === "random-options-syn")
        p = segment(kind, F.SYN, random32(), {
          rawOptions: randomBytes(4 * (1 + randomBelow(10))),
        });
      else if (kind === "ack") p = segment(kind, F.ACK, random32());
      else if (kind === "fin") p = segment(kind, F.FIN | F.ACK, random32());
      else p = segment(kind, F.ACK | F.PSH, random32(), { payload: randomBytes(32) });
      send(queue, p);
    }
    for (const [i, original] of replays.entries()) {
      // The captured packet as it was (seq, options, token), from a source of ours; every
      // other copy keeps the captured source port.
      const copy = Buffer.from(original);
      const from = next(`replay-${i}`);
      const ihl = (copy[0] & 15) * 4;
      copy.writeUInt32BE(from.src, 12);
      if (n % 2 === 0) copy.writeUInt16BE(from.port, ihl);
      else kindOfPort.set(copy.readUInt16BE(ihl), `replay-${i}`);
      send(queue, refreshChecksums(copy));
    }
    await sleep(5);
  }
  await sleep(wait);
  done({
    mode: "probe",
    sent,
    replies,
    totalReplies: Object.values(replies).reduce((a, b) => a + b, 0),
    replyFlags,
    writeFailures,
  });
}

/** Recomputes the IPv4 header checksum and the TCP checksum of an IPv4 TCP packet. */
function refreshChecksums(p: Buffer): Buffer {
  const ihl = (p[0] & 15) * 4;
  const tcpLength = p.readUInt16BE(2) - ihl;
  p.writeUInt16BE(0, 10);
  p.writeUInt16BE(wire.finishChecksum(wire.sumWords(p, 0, ihl)), 10);
  p.writeUInt16BE(0, ihl + 16);
  const pseudo = wire.ipv4PseudoBase(p.readUInt32BE(12), p.readUInt32BE(16));
  const sum = wire.sumWords(p, ihl, tcpLength, pseudo + tcpLength);
  p.writeUInt16BE(wire.finishChecksum(sum), ihl + 16);
  return p;
}

// ---- onpath -----------------------------------------------------------------------------

async function onpath(): Promise<void> {
  const client = endpoint("client");
  const server = endpoint("server");
  const perDirection = numberArg(args, "rsts", 1_000);
  const duration = numberArg(args, "duration", 10_000);
  const iface = args.get("iface") ?? "wans";
  const queue = openDevice();
  const clientAddr = wire.formatIpv4(client.addr);
  const serverAddr = wire.formatIpv4(server.addr);
  const fromClient = (p: TcpPacket) =>
    p.src === clientAddr &&
    p.sport === client.port &&
    p.dst === serverAddr &&
    p.dport === server.port;
  const fromServer = (p: TcpPacket) =>
    p.src === serverAddr &&
    p.sport === server.port &&
    p.dst === clientAddr &&
    p.dport === client.port;
  // What each end sends next, as the capture shows it (-1 until seen).
  let clientNext = -1;
  let serverNext = -1;
  let seen = 0;
  const advance = (current: number, p: TcpPacket): number => {
    const end = (p.seq + p.payloadLength + (p.flags & (F.SYN | F.FIN) ? 1 : 0)) >>> 0;
    return current < 0 || ((end - current) | 0) > 0 ? end : current;
  };
  const stream = new PcapStream((p) => {
    if ((p.flags & F.RST) !== 0) return; // ours, or anyone's: not the ends' sequence
    if (fromClient(p)) clientNext = advance(clientNext, p);
    else if (fromServer(p)) serverNext = advance(serverNext, p);
    else return;
    seen++;
  });
  const filter = ["tcp", "and", "host", serverAddr, "and", "port", String(server.port)];
  const dump = spawn("tcpdump", ["-i", iface, "-n", "-U", "-s", "128", "-w", "-", ...filter], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  dump.stdout.on("data", (chunk: Buffer) => stream.push(chunk));
  const started = Date.now();
  while ((clientNext < 0 || serverNext < 0) && Date.now() - started < 5_000) await sleep(10);
  if (clientNext < 0 || serverNext < 0) {
    dump.kill("SIGTERM");
    done({ mode: "onpath", error: "the flow was not seen on the path", seen });
    return;
  }
  const total = 2 * perDirection;
  const attackStart = Date.now();
  const deadline = attackStart + duration + 10_000;
  let sent = 0;
  const kinds = { toServer: 0, toClient: 0 };
  while (sent < total && Date.now() < deadline) {
    const due = Math.min(
      total,
      Math.ceil((total * (Date.now() - attackStart)) / Math.max(1, duration)),
    );
    for (; sent < due; sent++) {
      const toServer = sent % 2 === 0;
      const withAck = sent % 4 >= 2;
      send(
        queue,
        wire.buildPacket({
          src: toServer ? client.addr : server.addr,
          dst: toServer ? server.addr : client.addr,
          srcPort: toServer ? client.port : server.port,
          dstPort: toServer ? server.port : client.port,
          seq: toServer ? clientNext : serverNext,
          ack: withAck ? (toServer ? serverNext : clientNext) : 0,
          flags: withAck ? F.RST | F.ACK : F.RST,
        }),
      );
      if (toServer) kinds.toServer++;
      else kinds.toClient++;
    }
    await sleep(2);
  }
  dump.kill("SIGTERM");
  done({
    mode: "onpath",
    sent,
    ...kinds,
    seen,
    writeFailures,
    seconds: (Date.now() - attackStart) / 1000,
  });
}

function done(result: Record<string, unknown>): void {
  console.log(JSON.stringify({ event: "done", ...result }));
  process.exit(0);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

if (mode === "flood") await flood();
else if (mode === "churn") await churn();
else if (mode === "hold") await hold();
else if (mode === "probe") await probe();
else if (mode === "onpath") await onpath();
else {
  console.error(
    "usage: tcp-injector.js flood|churn|hold|probe|onpath --tun NAME --route CIDR [options]",
  );
  process.exit(2);
}
