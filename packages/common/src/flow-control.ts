/**
 * Flow groups: one UDP peer of the client spread over several fake-TCP connections ("flows"),
 * joined back into one UDP socket by the server (docs/wire-protocol.md, "Flow groups").
 *
 * The ends agree on a group with control messages carried as datagrams on connections whose
 * handshake showed that both ends are ours (`TunnelSocket.peerIsOurs`), never on a
 * connection to or from phantun:
 *
 * - OPEN (client -> server, on the peer's first connection): "make this connection's peer a
 *   group"; the server answers OPENED with the group's token: its shard, a group number and
 *   a 64-bit random secret.
 * - JOIN (client -> server, first datagram of each further connection): "this connection
 *   belongs to the group of this token"; the server checks the token (and that the connection
 *   comes from the same client address as the group's first) and answers JOINED, or resets
 *   the connection.
 *
 * Keyed, every message carries a MAC by the key (HMAC-SHA256, first 16 bytes), so that only a
 * key holder can make one; unkeyed, those bytes are zero. Each message is 40 bytes and starts
 * with an 8-byte magic, so the receiving end tells it from a datagram by its length and magic:
 * one comparison per datagram of that length.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

/** Length of every control message. */
export const FLOW_CONTROL_LENGTH = 40;

/** "\xf7FTFLOW1": no UDP application's datagram is expected to begin with it. */
const MAGIC = Buffer.from([0xf7, 0x46, 0x54, 0x46, 0x4c, 0x4f, 0x57, 0x31]);
const MAC_AT = 24;
const MAC_LENGTH = 16;
const MAC_LABEL = Buffer.from("fake-tcp flow group v1");

export enum FlowMessageType {
  Open = 1,
  Opened = 2,
  Join = 3,
  Joined = 4,
}

/** What identifies a group on the server: the token of OPENED, JOIN and JOINED. */
export interface FlowToken {
  /** The server shard that holds the group's UDP socket. */
  readonly shard: number;
  /** The group's number in that shard. */
  readonly group: number;
  /** 8 random bytes chosen by the server for the group. */
  readonly secret: Uint8Array;
}

export interface FlowMessage {
  readonly type: FlowMessageType;
  /** The client's index of the flow (informative: logs). */
  readonly flow: number;
  readonly token: FlowToken;
}

/** The token of OPEN: the client knows none yet. */
export const NO_TOKEN: FlowToken = { shard: 0, group: 0, secret: new Uint8Array(8) };

/** A new random group secret. */
export function newGroupSecret(): Uint8Array {
  return new Uint8Array(randomBytes(8));
}

/** True when `view` has the shape of a control message (length and magic). */
export function isFlowControl(view: Uint8Array): boolean {
  if (view.length !== FLOW_CONTROL_LENGTH) return false;
  for (let i = 0; i < MAGIC.length; i++) if (view[i] !== MAGIC[i]) return false;
  return true;
}

function mac(key: Uint8Array, body: Uint8Array): Buffer {
  return createHmac("sha256", key).update(MAC_LABEL).update(body).digest().subarray(0, MAC_LENGTH);
}

/** A control message; keyed (`key` given) it carries the key's MAC. */
export function encodeFlowMessage(message: FlowMessage, key?: Uint8Array): Buffer {
  const out = Buffer.alloc(FLOW_CONTROL_LENGTH);
  MAGIC.copy(out, 0);
  out[8] = message.type;
  out[9] = message.flow & 0xff;
  out.writeUInt16BE(message.token.shard & 0xffff, 10);
  out.writeUInt32BE(message.token.group >>> 0, 12);
  out.set(message.token.secret.subarray(0, 8), 16);
  if (key) mac(key, out.subarray(0, MAC_AT)).copy(out, MAC_AT);
  return out;
}

/**
 * Reads a control message (`isFlowControl` true), or null when it is not valid: unknown type,
 * or (keyed) a wrong MAC; unkeyed, the MAC bytes must be zero.
 */
export function decodeFlowMessage(view: Uint8Array, key?: Uint8Array): FlowMessage | null {
  if (!isFlowControl(view)) return null;
  const type = view[8];
  if (type < FlowMessageType.Open || type > FlowMessageType.Joined) return null;
  const got = view.subarray(MAC_AT, MAC_AT + MAC_LENGTH);
  if (key) {
    if (!timingSafeEqual(mac(key, view.subarray(0, MAC_AT)), got)) return null;
  } else if (got.some((b) => b !== 0)) return null;
  const data = Buffer.from(view.buffer, view.byteOffset, view.byteLength);
  return {
    type,
    flow: view[9],
    token: {
      shard: data.readUInt16BE(10),
      group: data.readUInt32BE(12),
      secret: new Uint8Array(view.subarray(16, 24)),
    },
  };
}

/** True when two group secrets are equal (in constant time). */
export function sameSecret(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * Datagrams packed for another shard: one ArrayBuffer (moved, not copied, by postMessage)
 * holding `[length u16][bytes]` per datagram. One is filled per batch and per flow.
 */
export class PackedDatagrams {
  private buffer: Uint8Array;
  private used = 0;
  count = 0;

  constructor(capacity = 64 * 1024) {
    this.buffer = new Uint8Array(capacity);
  }

  /** False when `datagram` does not fit: post what is packed and start a new one. */
  add(datagram: Uint8Array): boolean {
    const need = 2 + datagram.length;
    if (this.used + need > this.buffer.length) {
      if (this.count > 0) return false;
      this.buffer = new Uint8Array(need);
    }
    const b = this.buffer;
    b[this.used] = datagram.length >>> 8;
    b[this.used + 1] = datagram.length & 0xff;
    b.set(datagram, this.used + 2);
    this.used += need;
    this.count++;
    return true;
  }

  /** The packed bytes (an ArrayBuffer to transfer); this packer starts afresh. */
  take(): ArrayBuffer {
    const out = this.buffer.buffer.slice(0, this.used) as ArrayBuffer;
    this.used = 0;
    this.count = 0;
    return out;
  }
}

/** Calls `each` with a view of every datagram in `packed` (as made by `PackedDatagrams`). */
export function unpackDatagrams(packed: ArrayBuffer, each: (view: Uint8Array) => void): number {
  const bytes = new Uint8Array(packed);
  let at = 0;
  let n = 0;
  while (at + 2 <= bytes.length) {
    const length = (bytes[at] << 8) | bytes[at + 1];
    if (at + 2 + length > bytes.length) break;
    each(bytes.subarray(at + 2, at + 2 + length));
    at += 2 + length;
    n++;
  }
  return n;
}

/**
 * The spreading rule: a group's datagrams go to one flow per batch (a UDP receive batch),
 * the next batch to the next flow. Per batch rather than per datagram so that a run of
 * datagrams still leaves as one segmented write, and the reordering it causes between flows
 * stays within a batch or two (measured: docs/benchmarks.md).
 */
export class BatchRoundRobin<T> {
  private readonly flows: T[] = [];
  private cursor = 0;

  get size(): number {
    return this.flows.length;
  }

  get list(): readonly T[] {
    return this.flows;
  }

  add(flow: T): void {
    if (!this.flows.includes(flow)) this.flows.push(flow);
  }

  remove(flow: T): void {
    const at = this.flows.indexOf(flow);
    if (at < 0) return;
    this.flows.splice(at, 1);
    if (this.cursor > at) this.cursor--;
    if (this.cursor >= this.flows.length) this.cursor = 0;
  }

  /** The flow of the current batch (undefined with none). */
  current(): T | undefined {
    return this.flows[this.cursor];
  }

  /** The batch ended: the next one goes to the next flow. */
  next(): void {
    if (this.flows.length > 0) this.cursor = (this.cursor + 1) % this.flows.length;
  }
}

/**
 * The largest displacement in a sequence of received sequence numbers: how far behind the
 * highest number seen so far a datagram arrived (0 when every datagram arrives in order).
 * This is what a replay window must cover for none of them to be refused as too old.
 */
export function reorderDepth(received: Iterable<number>): number {
  let highest = Number.NEGATIVE_INFINITY;
  let depth = 0;
  for (const seq of received) {
    if (seq > highest) highest = seq;
    else depth = Math.max(depth, highest - seq);
  }
  return depth;
}
