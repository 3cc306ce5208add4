/**
 * Why a packet was rejected by a parser. Parsers return these codes instead of throwing, so
 * malformed input on the packet path costs a comparison, and the stack counts each kind.
 */
export const ParseError = {
  ok: 0,
  /** Shorter than the fixed header, or than a length field says. */
  truncated: 1,
  /** IP version is neither 4 nor 6. */
  badVersion: 2,
  /** IPv4 IHL below 5 words or beyond the packet; TCP data offset below 5 words or beyond. */
  badHeaderLength: 3,
  /** IPv4 total length smaller than its header. */
  badTotalLength: 4,
  /** The transport protocol is not TCP. */
  notTcp: 5,
  /** An IPv4 fragment (more-fragments set or a non-zero offset): never reassembled. */
  fragment: 6,
  /** An IPv6 packet with an extension header: never walked. */
  ipv6ExtensionHeader: 7,
  /** A TCP option whose length is malformed or runs past the header. */
  badOption: 8,
} as const;

export type ParseErrorCode = (typeof ParseError)[keyof typeof ParseError];

/** Names of the codes, indexed by code, for counters and messages. */
export const parseErrorNames = [
  "ok",
  "truncated",
  "badVersion",
  "badHeaderLength",
  "badTotalLength",
  "notTcp",
  "fragment",
  "ipv6ExtensionHeader",
  "badOption",
] as const;
