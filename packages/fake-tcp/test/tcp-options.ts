/**
 * A full parser of the TCP options area, for tests: the oracle that checks what
 * `encodeTcpOptions` builds and what the fuzzers generate. The stack needs none of it (it
 * scans only for its own option, see src/wire/ours-option.ts), so it lives here.
 */
import { read16, read32 } from "../src/wire/bytes.js";
import { ParseError, type ParseErrorCode } from "../src/wire/errors.js";
import {
  OPT_EOL,
  OPT_MSS,
  OPT_NOP,
  OPT_SACK,
  OPT_SACK_PERMITTED,
  OPT_TIMESTAMP,
  OPT_WS,
  type TcpOptions,
} from "../src/wire/tcp.js";

/**
 * Parses the options area `buf[offset, offset + length)`. Returns the options, or a
 * `ParseError` code when an option is malformed (bad length, runs past the area). Never throws.
 */
export function parseTcpOptions(
  buf: Uint8Array,
  offset: number,
  length: number,
): TcpOptions | ParseErrorCode {
  const opts: TcpOptions = {};
  const end = offset + length;
  let i = offset;
  while (i < end) {
    const kind = buf[i];
    if (kind === OPT_EOL) break;
    if (kind === OPT_NOP) {
      i++;
      continue;
    }
    if (i + 1 >= end) return ParseError.badOption;
    const len = buf[i + 1];
    if (len < 2 || i + len > end) return ParseError.badOption;
    switch (kind) {
      case OPT_MSS:
        if (len !== 4) return ParseError.badOption;
        opts.mss = read16(buf, i + 2);
        break;
      case OPT_WS:
        if (len !== 3) return ParseError.badOption;
        opts.windowScale = buf[i + 2];
        break;
      case OPT_SACK_PERMITTED:
        if (len !== 2) return ParseError.badOption;
        opts.sackPermitted = true;
        break;
      case OPT_SACK: {
        const blocks = (len - 2) / 8;
        if (!Number.isInteger(blocks) || blocks < 1 || blocks > 4) return ParseError.badOption;
        opts.sack = [];
        for (let b = 0; b < blocks; b++)
          opts.sack.push([read32(buf, i + 2 + 8 * b), read32(buf, i + 6 + 8 * b)]);
        break;
      }
      case OPT_TIMESTAMP:
        if (len !== 10) return ParseError.badOption;
        opts.timestamp = { value: read32(buf, i + 2), echo: read32(buf, i + 6) };
        break;
      default:
        if (opts.unknown) opts.unknown.push(kind);
        else opts.unknown = [kind];
    }
    i += len;
  }
  return opts;
}
