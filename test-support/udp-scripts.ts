/**
 * Tiny UDP programs for `node -e`, run inside a test's namespaces where the test process
 * itself has no socket: an echo server and a pinger that counts the echoes. The tunnel tests
 * put one at each end of a tunnel (`startUdpEcho`, `udpPing`).
 */

import type { ChildProcess } from "node:child_process";
import type { Netns } from "./netns.js";

/**
 * Echoes every datagram that reaches 127.0.0.1:`port`; prints "ready" once bound and, on
 * SIGTERM, how many datagrams it received (so a test can count one direction on its own).
 */
export function udpEchoScript(port: number): string {
  return `
const s = require("node:dgram").createSocket("udp4");
let n = 0;
s.on("message", (m, r) => { n++; s.send(m, r.port, r.address); });
s.bind(${port}, "127.0.0.1", () => console.log("ready"));
process.on("SIGTERM", () => { console.log(n); process.exit(0); });
`;
}

/**
 * Sends COUNT (its first argument) datagrams to 127.0.0.1:`port`, 20 ms apart, waits up to
 * 5 s for the echoes and prints how many came back. Each datagram is "ping N", or `bytes`
 * bytes of "x" when given (for tests that count bytes).
 */
export function udpPingScript(port: number, bytes?: number): string {
  const payload = bytes === undefined ? `Buffer.from("ping " + i)` : `Buffer.alloc(${bytes}, 120)`;
  return `
const count = Number(process.argv[1]);
const s = require("node:dgram").createSocket("udp4");
let got = 0;
s.on("message", () => got++);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
s.connect(${port}, "127.0.0.1", async () => {
  for (let i = 0; i < count; i++) { s.send(${payload}); await sleep(20); }
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && got < count) await sleep(20);
  console.log(got);
  s.close();
});
`;
}

/**
 * Starts {@link udpEchoScript} on `port` in `ns` and waits until it is bound; rejects if it
 * exits first. It is killed with the namespace's other processes (`cleanupAll()`).
 */
export async function startUdpEcho(ns: Netns, port: number): Promise<ChildProcess> {
  const echo = ns.spawn(process.execPath, ["-e", udpEchoScript(port)]);
  await new Promise<void>((resolve, reject) => {
    echo.stdout!.once("data", () => resolve());
    echo.once("exit", () => reject(new Error("echo server exited")));
  });
  return echo;
}

/**
 * Runs {@link udpPingScript} in `ns` without blocking the event loop (the programs' logs keep
 * flowing): `count` datagrams to 127.0.0.1:`port`; resolves with how many echoes came back.
 */
export async function udpPing(
  ns: Netns,
  port: number,
  count: number,
  opts: { bytes?: number; timeoutMs?: number } = {},
): Promise<number> {
  const stdout = await ns.runNodeScript(
    udpPingScript(port, opts.bytes),
    [String(count)],
    opts.timeoutMs ?? 15_000,
  );
  return Number(stdout);
}
