/**
 * Tiny UDP programs for `node -e`, run inside a test's namespaces where the test process
 * itself has no socket: an echo server and a pinger that counts the echoes. The service
 * tests (systemd, npm install) put one at each end of an installed tunnel.
 */

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
 * 5 s for the echoes and prints how many came back.
 */
export function udpPingScript(port: number): string {
  return `
const count = Number(process.argv[1]);
const s = require("node:dgram").createSocket("udp4");
let got = 0;
s.on("message", () => got++);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
s.connect(${port}, "127.0.0.1", async () => {
  for (let i = 0; i < count; i++) { s.send(Buffer.from("ping " + i)); await sleep(20); }
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && got < count) await sleep(20);
  console.log(got);
  s.close();
});
`;
}
