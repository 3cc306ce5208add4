import { Stack, type StackOptions } from "../src/index.js";
import { createMemoryPair, type MemoryPairOptions } from "../src/testing/index.js";
import { ParseError, SegmentParser } from "../src/wire/index.js";

export const CLIENT4 = "192.168.200.2";
export const SERVER4 = "192.168.201.2";
export const CLIENT6 = "fcc8::2";
export const SERVER6 = "fcc9::2";

/** Two stacks joined by an in-memory pair: `client` on side A, `server` on side B. */
export function twoStacks(
  opts: {
    pair?: MemoryPairOptions;
    client?: Partial<StackOptions>;
    server?: Partial<StackOptions>;
  } = {},
) {
  const pair = createMemoryPair(opts.pair);
  const client = new Stack({ queues: pair.a, local4: CLIENT4, local6: CLIENT6, ...opts.client });
  const server = new Stack({ queues: pair.b, local4: SERVER4, local6: SERVER6, ...opts.server });
  return { pair, client, server, close: () => (client.close(), server.close()) };
}

/** Parses a packet into a plain summary, for assertions. */
export function summarize(packet: Uint8Array) {
  const p = new SegmentParser();
  const err = p.parse(packet, 0, packet.length);
  if (err !== ParseError.ok) throw new Error(`unparseable packet (error ${err})`);
  const t = p.tcp;
  return {
    family: p.family,
    srcPort: t.srcPort,
    dstPort: t.dstPort,
    seq: t.seq,
    ack: t.ack,
    flags: t.flags,
    window: t.window,
    urgent: t.urgent,
    headerLength: t.headerLength,
    payload: Buffer.from(packet.subarray(t.payloadOffset, t.payloadOffset + t.payloadLength)),
    length: packet.length,
    options: Buffer.from(packet.subarray(t.optionsOffset, t.optionsOffset + t.optionsLength)),
  };
}
