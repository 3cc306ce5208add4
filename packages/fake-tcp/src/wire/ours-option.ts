/**
 * The handshake option by which two programs of ours recognise each other: a TCP experimental
 * option (kind 254, RFC 6994 layout with a 16-bit experiment id). Our client appends it to its
 * SYN after NOP + window-scale 14; our server echoes it in the SYN-ACK only when the SYN
 * carried it. A phantun peer never sends any option but NOP + WS 14 and ignores options it
 * receives, so it neither produces this option nor is disturbed by it.
 */
/** TCP option kind for experiments (RFC 4727 / RFC 6994). */
export const TCP_OPTION_EXPERIMENT = 254;
/**
 * Our experiment id: ASCII "FT" (fake TCP), chosen by us and not registered with IANA (RFC
 * 6994 lets unregistered experiments pick their own). It is not TCP Fast Open's 0xF989.
 */
export const OURS_EXPERIMENT_ID = 0x4654;
/** The option's four bytes on the wire: kind 254, length 4, experiment id 0x4654. */
export const OURS_OPTION: readonly number[] = [
  TCP_OPTION_EXPERIMENT,
  4,
  OURS_EXPERIMENT_ID >>> 8,
  OURS_EXPERIMENT_ID & 0xff,
];
/** TCP header length of our SYN / echoing SYN-ACK: 20 + NOP + WS 14 + our option (7 words). */
export const TCP_SYN_OURS_HEADER_LENGTH = 28;

/** What an options area says about the peer. */
export const OursOption = {
  /** Well-formed options without ours: a phantun peer (or ours behind a stripping middlebox). */
  absent: 0,
  /** Well-formed options including ours, exactly as we send it. */
  present: 1,
  /** Options that are not well-formed: never treated as ours, counted by the caller. */
  malformed: 2,
} as const;
export type OursOptionResult = (typeof OursOption)[keyof typeof OursOption];

/**
 * Walks the options area `buf[offset, offset + length)` and says whether it carries our option.
 * Strict: any option with a length below 2 or running past the area, or an experimental option
 * with our id but another length, makes the whole area `malformed` (a peer that sends broken
 * options is not one of ours). Allocates nothing and never reads outside the area.
 */
export function scanOursOption(buf: Uint8Array, offset: number, length: number): OursOptionResult {
  const end = offset + length;
  let found = false;
  let i = offset;
  while (i < end) {
    const kind = buf[i];
    if (kind === 0) break; // end of option list: the rest is padding
    if (kind === 1) {
      i++;
      continue;
    }
    if (i + 1 >= end) return OursOption.malformed;
    const len = buf[i + 1];
    if (len < 2 || i + len > end) return OursOption.malformed;
    if (
      kind === TCP_OPTION_EXPERIMENT &&
      len >= 4 &&
      buf[i + 2] === OURS_OPTION[2] &&
      buf[i + 3] === OURS_OPTION[3]
    ) {
      if (len !== 4) return OursOption.malformed;
      found = true;
    }
    i += len;
  }
  return found ? OursOption.present : OursOption.absent;
}
