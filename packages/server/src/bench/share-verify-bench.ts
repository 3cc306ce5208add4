/**
 * `node packages/server/dist/bench/share-verify-bench.js`: the JavaScript part of a --share
 * verdict, per SYN: `verifyKeyedSyn` on a keyed SYN (accepted), on a Linux-shaped SYN with a
 * timestamp but no token (the worst case for a stranger's SYN: the MACs are computed and
 * fail) and on a SYN without timestamps (refused before any MAC). The kernel's part of the
 * queue path (receive, verdict, what an accept costs) is `pnpm bench:nfqueue`'s figure.
 */
import { TunnelKey, tokenSlotOf, verifyKeyedSyn, wire } from "fake-tcp";

const PORT = 443;
const key = new TunnelKey(new Uint8Array(32).fill(7));
const now = Date.now();

function syn(family: 4 | 6, options: number[], tsval?: number): Buffer {
  const raw = Buffer.from(options);
  if (tsval !== undefined) raw.writeUInt32BE(tsval >>> 0, 8);
  return wire.buildPacket({
    src: family === 6 ? wire.parseIpv6("2001:db8::2")! : wire.parseIpv4("198.51.100.2")!,
    dst: family === 6 ? wire.parseIpv6("2001:db8::1")! : wire.parseIpv4("203.0.113.1")!,
    srcPort: 40000,
    dstPort: PORT,
    seq: 0x1234_5678,
    ack: 0,
    flags: wire.TcpFlags.SYN,
    rawOptions: Uint8Array.from(raw),
  });
}

// MSS, SACK permitted, timestamps, NOP, window scale: Linux's SYN options.
const LINUX = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 7];
const cases: [string, Buffer, boolean][] = [];
for (const family of [4, 6] as const) {
  cases.push([
    `IPv${family} keyed SYN (valid token)`,
    syn(family, LINUX, key.synToken(PORT, tokenSlotOf(now), 0x1234_5678)),
    true,
  ]);
  cases.push([`IPv${family} Linux SYN with timestamp, no token`, syn(family, LINUX, 99), false]);
  cases.push([`IPv${family} SYN without timestamps`, syn(family, [2, 4, 5, 0xb4]), false]);
}

const N = Number(process.env.N ?? 300_000);
for (const [name, packet, expected] of cases) {
  if (verifyKeyedSyn(packet, key, PORT, now) !== expected)
    throw new Error(`${name}: wrong verdict`);
  for (let i = 0; i < 20_000; i++) verifyKeyedSyn(packet, key, PORT, now);
  const start = process.hrtime.bigint();
  let ok = 0;
  for (let i = 0; i < N; i++) if (verifyKeyedSyn(packet, key, PORT, now)) ok++;
  const ns = Number(process.hrtime.bigint() - start) / N;
  console.log(
    `${name}: ${(ns / 1000).toFixed(2)} µs per SYN, ${(1e9 / ns / 1000).toFixed(0)}k/s on one core${ok === (expected ? N : 0) ? "" : " (WRONG)"}`,
  );
}
