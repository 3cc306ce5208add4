/**
 * Recognising a keyed SYN from its bytes: its TCP timestamp option carries a token made with
 * the tunnel key (see `tunnel-key.ts`). Used by the stack's listener, and exported for
 * whatever must tell our clients' SYNs from anyone else's before the stack sees them (port
 * sharing: a keyed SYN goes to the tunnel, any other to the service that shares the port).
 */
import { read32 } from "../wire/bytes.js";
import { ParseError } from "../wire/errors.js";
import { SegmentParser } from "../wire/segment.js";
import { TcpFlags } from "../wire/tcp.js";
import type { TunnelKey } from "./tunnel-key.js";

const OPT_EOL = 0;
const OPT_NOP = 1;
const OPT_TIMESTAMP = 8;

/**
 * The absolute offset of the timestamp option's value (TSval; TSecr follows it) in the
 * options area `buf[offset, offset + length)`, or -1 when there is none or the area is not
 * well-formed. Allocates nothing and never reads outside the area.
 */
export function timestampOptionOffset(buf: Uint8Array, offset: number, length: number): number {
  const end = offset + length;
  let i = offset;
  while (i < end) {
    const kind = buf[i];
    if (kind === OPT_EOL) return -1;
    if (kind === OPT_NOP) {
      i++;
      continue;
    }
    if (i + 1 >= end) return -1;
    const len = buf[i + 1];
    if (len < 2 || i + len > end) return -1;
    if (kind === OPT_TIMESTAMP) return len === 10 ? i + 2 : -1;
    i += len;
  }
  return -1;
}

/** Parser for `verifyKeyedSyn`, made once (parsing refills it, allocating nothing). */
const parser = new SegmentParser();

/**
 * Whether the IPv4 or IPv6 packet `packet[offset, offset + length)` is a keyed SYN for
 * `port` under `key` at clock `now` (ms since the epoch): a TCP segment to `port` with flags
 * exactly SYN whose timestamp option carries a valid token for its ISN, made in a time slot
 * the server accepts (one minute either side of `now`'s, see `TOKEN_SLOT_SLACK`). `key` is a
 * prepared `TunnelKey` (`new TunnelKey(secret)`, once).
 *
 * This checks the token only, not replays: a SYN captured and sent again passes as long as
 * its slot does (the stack's listener also keeps a replay cache, see `replay-cache.ts`).
 * Checksums are not verified. Allocates nothing; never throws on any input; costs one to three
 * BLAKE2s compressions for a segment that gets that far, nothing for other packets.
 */
export function verifyKeyedSyn(
  packet: Uint8Array,
  key: TunnelKey,
  port: number,
  now: number,
  offset = 0,
  length = packet.length - offset,
): boolean {
  if (offset < 0 || length < 0 || offset + length > packet.length) return false;
  if (parser.parse(packet, offset, length) !== ParseError.ok) return false;
  const t = parser.tcp;
  if (t.flags !== TcpFlags.SYN || t.dstPort !== port) return false;
  const ts = timestampOptionOffset(packet, t.optionsOffset, t.optionsLength);
  if (ts < 0) return false;
  return key.tokenSlot(port, t.seq, read32(packet, ts), now) >= 0;
}
