/**
 * Connection tuples: their hash (the table key), the tuple of a reply to a packet that belongs
 * to no connection, the addressing a new socket precomputes, and the client's choice of source
 * port.
 */
import { ipv4PseudoBase, ipv6PseudoBase } from "../wire/checksum.js";
import { ipv4HeaderBaseSum } from "../wire/ipv4.js";
import type { SegmentParser } from "../wire/segment.js";
import type { ConnectionTable } from "./conn-table.js";
import type { PortRange, PortShard } from "./options.js";
import type { SegmentTuple } from "./segment-writer.js";
import { Socket, type SocketHost, SocketState } from "./socket.js";

/** Hash of (remote address words, remote port, local port) as an int32. */
export function hashTuple(
  r0: number,
  r1: number,
  r2: number,
  r3: number,
  remotePort: number,
  localPort: number,
): number {
  let h = Math.imul(r0 ^ ((remotePort << 16) | localPort), 0x9e3779b1);
  h = Math.imul(h ^ (h >>> 15) ^ r1, 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13) ^ r2, 0xc2b2ae35);
  h = Math.imul(h ^ (h >>> 16) ^ r3, 0x27d4eb2f);
  return (h ^ (h >>> 15)) | 0;
}

/**
 * The tuple of a reply to the packet last parsed (an RST, a SYN cookie): one instance per
 * stack, refilled for every such packet, so replying allocates nothing.
 */
export class ReplyTuple implements SegmentTuple {
  family: 4 | 6 = 4;
  r0 = 0;
  r1 = 0;
  r2 = 0;
  r3 = 0;
  l0 = 0;
  l1 = 0;
  l2 = 0;
  l3 = 0;
  remotePort = 0;
  localPort = 0;
  pseudoBase = 0;
  ipBase = 0;
  flowLabel = 0;

  /** `ttl`: the TTL of what the stack sends (its IPv4 header sums include it). */
  constructor(private readonly ttl = 64) {}

  /** Fills in the tuple that answers the sender of the packet `p` parsed last. */
  fill(p: SegmentParser): this {
    if (p.family === 4) {
      this.family = 4;
      this.r0 = p.ip4.src | 0;
      this.l0 = p.ip4.dst | 0;
      this.r1 = this.r2 = this.r3 = this.l1 = this.l2 = this.l3 = 0;
      this.pseudoBase = ipv4PseudoBase(p.ip4.dst, p.ip4.src);
      this.ipBase = ipv4HeaderBaseSum(p.ip4.dst, p.ip4.src, this.ttl);
    } else {
      const src = p.ip6.src;
      const dst = p.ip6.dst;
      this.family = 6;
      this.r0 = src[0] | 0;
      this.r1 = src[1] | 0;
      this.r2 = src[2] | 0;
      this.r3 = src[3] | 0;
      this.l0 = dst[0] | 0;
      this.l1 = dst[1] | 0;
      this.l2 = dst[2] | 0;
      this.l3 = dst[3] | 0;
      this.pseudoBase = ipv6PseudoBase(dst, src);
      this.ipBase = 0;
    }
    this.remotePort = p.tcp.srcPort;
    this.localPort = p.tcp.dstPort;
    this.flowLabel = 0;
    return this;
  }
}

/** What a new socket is: its tuple, side, and where its packets go. */
export interface NewSocketSpec {
  family: 4 | 6;
  /** Address words (one for IPv4, four for IPv6), signed or unsigned. */
  remote: ArrayLike<number>;
  local: ArrayLike<number>;
  remotePort: number;
  localPort: number;
  /** True for a connection accepted by a listener (then it starts established). */
  passive: boolean;
  /** The device queue for its packets, or -1 to pick one by the tuple's hash. */
  queueIndex: number;
  queueCount: number;
  /** Datagrams it buffers while nobody consumes them. */
  queueLimit: number;
  now: number;
  /** The TTL of what the stack sends (default 64). */
  ttl?: number;
}

/** A socket for `spec`, its table key and checksum bases computed once. */
export function createSocket(host: SocketHost, spec: NewSocketSpec): Socket {
  const { family, remote, local, remotePort, localPort } = spec;
  const hash = hashTuple(
    remote[0] | 0,
    (remote[1] ?? 0) | 0,
    (remote[2] ?? 0) | 0,
    (remote[3] ?? 0) | 0,
    remotePort,
    localPort,
  );
  const words = family === 4 ? 1 : 4;
  const uLocal = Array.from({ length: words }, (_, i) => local[i] >>> 0);
  const uRemote = Array.from({ length: words }, (_, i) => remote[i] >>> 0);
  return new Socket(host, {
    state: spec.passive ? SocketState.established : SocketState.synSent,
    family,
    remote,
    local,
    remotePort,
    localPort,
    passive: spec.passive,
    queueIndex: spec.queueIndex >= 0 ? spec.queueIndex : (hash >>> 0) % spec.queueCount,
    hash,
    pseudoBase:
      family === 4 ? ipv4PseudoBase(uLocal[0], uRemote[0]) : ipv6PseudoBase(uLocal, uRemote),
    ipBase: family === 4 ? ipv4HeaderBaseSum(uLocal[0], uRemote[0], spec.ttl) : 0,
    queueLimit: spec.queueLimit,
    now: spec.now,
  });
}

/**
 * A client source port towards (remote, remotePort): a random start in `range`, then the
 * first port whose tuple is free, counting up. With a port shard, only ports `p` whose
 * segments the device steers to this shard's queue (`steeredQueue(p, remotePort, count) ===
 * index`) are candidates. Returns the port, or `-1 - candidates` when every candidate is taken.
 */
/**
 * The queue a multi-queue TUN device with our port-sum steering program hands a segment with
 * ports `a` and `b` to, of `count` queues. The program returns a + b, but the kernel keeps its
 * result in 16 bits before taking it modulo the number of queues, so a sum of 65536 or more
 * wraps: with 3 queues and a remote port of 51820 (WireGuard's), every ephemeral port's sum
 * does, and plain `(a + b) % count` would pick a shard whose replies go elsewhere.
 */
export function steeredQueue(a: number, b: number, count: number): number {
  return ((a + b) & 0xffff) % count;
}

export function pickSourcePort(
  table: ConnectionTable,
  shard: PortShard,
  family: 4 | 6,
  remote: number[],
  local: number[],
  remotePort: number,
  range: PortRange,
): number {
  const { index, count } = shard;
  const start = Math.floor(Math.random() * range.count);
  let candidates = 0;
  for (let i = 0; i < range.count; i++) {
    const port = range.first + ((start + i) % range.count);
    if (steeredQueue(port, remotePort, count) !== index) continue;
    candidates++;
    const taken =
      family === 4
        ? table.find4(remote[0], local[0], remotePort, port)
        : table.find6(remote, local, remotePort, port);
    if (taken === null) return port;
  }
  return -1 - candidates;
}
