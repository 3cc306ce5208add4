/**
 * Keyed mode's secret and the values it makes (layouts in docs/wire-protocol.md, "Keyed mode"):
 *
 * - the SYN token: the client's ISN is a random nonce and its SYN's timestamp value (TSval)
 *   is `synToken(port, slot, nonce)`, a MAC of the server port, a coarse time slot and the
 *   nonce. A server checks it against the slots around its own clock (`tokenSlot`).
 * - the SYN-ACK's ISN: `synAckIsn(port, nonce, tsval)`, a MAC of the SYN it answers, which the
 *   client checks (so it knows the answer comes from a key holder) and which the ACK echoes
 *   (ack = ISN + 1) to the server, which recomputes it (so it keeps no state per SYN-ACK).
 * - the IPv6 flow label of a server's connection (`flowLabel`).
 *
 * Each is the first bytes of BLAKE2s-256 keyed with the 32-byte secret, over a 16-byte
 * message that starts with its own label, so that no value can stand for another.
 */
import { randomBytes } from "node:crypto";
import { BLAKE2S_BLOCK, keyState, macBlock } from "./blake2s.js";

/** Length of a tunnel key (the secret of `--key-file`): 32 bytes, as a WireGuard key. */
export const KEY_LENGTH = 32;

/** Length of a token's time slot (ms). */
export const TOKEN_SLOT_MS = 60_000;

/**
 * Slots a server accepts around its own: a token made in the client's slot `c` passes while
 * the server's slot is `c - 1`, `c` or `c + 1`, so clocks may differ by a minute at least and
 * two minutes at most, and a token lives at most three slots.
 */
export const TOKEN_SLOT_SLACK = 1;

/** Labels of the three messages ("ftS1", "ftA1", "ftF1" in ASCII). */
const LABEL_SYN = 0x66745331;
const LABEL_SYN_ACK = 0x66744131;
const LABEL_FLOW = 0x66744631;
/** Length of every message: label, port + 2 zero bytes, two 32-bit values. */
const MESSAGE_LENGTH = 16;

/** The message block, reused (zero past the message). */
const block = new Uint8Array(BLAKE2S_BLOCK);

function put32(at: number, value: number): void {
  block[at] = value >>> 24;
  block[at + 1] = value >>> 16;
  block[at + 2] = value >>> 8;
  block[at + 3] = value;
}

/** The token slot of clock `now` (ms since the epoch). */
export function tokenSlotOf(now: number): number {
  return Math.floor(now / TOKEN_SLOT_MS);
}

/**
 * A tunnel key, prepared: the secret's first BLAKE2s block is absorbed once, so each token or
 * ISN costs one compression and no allocation. Holds no copy of the secret itself.
 */
export class TunnelKey {
  private readonly state: Int32Array;

  /** `secret`: the 32 bytes of the key file. */
  constructor(secret: Uint8Array) {
    if (!(secret instanceof Uint8Array) || secret.length !== KEY_LENGTH)
      throw new RangeError(`a tunnel key is ${KEY_LENGTH} bytes, got ${secret?.length}`);
    this.state = keyState(secret);
  }

  /** The TSval of a keyed SYN to `port` with ISN `nonce`, made in token slot `slot` (uint32). */
  synToken(port: number, slot: number, nonce: number): number {
    return this.mac(LABEL_SYN, port, slot, nonce);
  }

  /** The ISN of the keyed SYN-ACK from `port` answering a SYN with ISN `nonce` and TSval `tsval` (uint32). */
  synAckIsn(port: number, nonce: number, tsval: number): number {
    return this.mac(LABEL_SYN_ACK, port, nonce, tsval);
  }

  /**
   * The IPv6 flow label (20 bits, never 0) of a keyed server's connection from its handshake:
   * the client's ISN `nonce` and ours, `isn`. Linux labels each connection with a hash of its
   * own; ours must differ per connection too, and be the same again when the ACK arrives.
   */
  flowLabel(port: number, nonce: number, isn: number): number {
    return this.mac(LABEL_FLOW, port, nonce, isn) & 0xfffff || 1;
  }

  /**
   * The slot in which the SYN token `tsval` for (`port`, `nonce`) was made, if it is one the
   * server accepts at `now` (see `TOKEN_SLOT_SLACK`), else -1. One to three MACs; no allocation.
   */
  tokenSlot(port: number, nonce: number, tsval: number, now: number): number {
    const current = tokenSlotOf(now);
    const want = tsval >>> 0;
    // The current slot first: a client whose clock agrees with ours is the usual case.
    if (this.synToken(port, current, nonce) === want) return current;
    for (let d = 1; d <= TOKEN_SLOT_SLACK; d++) {
      if (this.synToken(port, current - d, nonce) === want) return current - d;
      if (this.synToken(port, current + d, nonce) === want) return current + d;
    }
    return -1;
  }

  /** The MAC of the message `label`, `port` + 2 zero bytes, `a`, `b` (each 32-bit, big-endian). */
  private mac(label: number, port: number, a: number, b: number): number {
    put32(0, label);
    put32(4, (port & 0xffff) << 16);
    put32(8, a);
    put32(12, b);
    return macBlock(this.state, block, MESSAGE_LENGTH);
  }
}

/** A new random tunnel key (what `genkey` prints, base64-encoded). */
export function generateTunnelKey(): Uint8Array {
  return new Uint8Array(randomBytes(KEY_LENGTH));
}
