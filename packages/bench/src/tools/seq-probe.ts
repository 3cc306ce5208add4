/**
 * Sequence-numbered UDP datagrams, to measure how far a path reorders them.
 *
 *   node seq-probe.js recv --port P --count N [--idle MS]
 *     counts datagrams (the first 4 bytes: a sequence number) until N arrived or none for
 *     --idle ms after the first; prints {"received","outOfOrder","depth"}: depth is the
 *     furthest a datagram arrived behind the highest number seen before it (what a replay
 *     window has to cover).
 *   node seq-probe.js send --target HOST:PORT --count N --rate PPS [--size BYTES]
 *     sends N datagrams numbered 0.. at PPS a second (in 1 ms slices); prints {"sent"}.
 */
import { createSocket } from "node:dgram";

function option(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const mode = process.argv[2];
const count = Number(option("count", "10000"));

if (mode === "recv") {
  const socket = createSocket({ type: "udp4", recvBufferSize: 8 << 20 });
  let received = 0;
  let outOfOrder = 0;
  let highest = -1;
  let depth = 0;
  let last = 0;
  const idleMs = Number(option("idle", "2000"));
  const finish = () => {
    console.log(JSON.stringify({ received, outOfOrder, depth }));
    socket.close();
    process.exit(0);
  };
  socket.on("message", (m) => {
    if (m.length < 4) return;
    const seq = m.readUInt32BE(0);
    received++;
    last = Date.now();
    if (seq > highest) highest = seq;
    else {
      outOfOrder++;
      depth = Math.max(depth, highest - seq);
    }
    if (received >= count) finish();
  });
  setInterval(() => {
    if (received > 0 && Date.now() - last > idleMs) finish();
  }, 100);
  socket.bind(Number(option("port", "0")), "0.0.0.0", () =>
    console.log(JSON.stringify({ event: "ready" })),
  );
} else if (mode === "send") {
  const [host, portText] = option("target", "").split(":");
  const port = Number(portText);
  const rate = Number(option("rate", "10000"));
  const size = Number(option("size", "1400"));
  const socket = createSocket({ type: "udp4", sendBufferSize: 8 << 20 });
  let sent = 0;
  const started = performance.now();
  const tick = () => {
    const due = Math.min(count, Math.floor(((performance.now() - started) / 1000) * rate) + 1);
    for (; sent < due; sent++) {
      // A buffer per datagram: dgram sends after this call returns.
      const datagram = Buffer.alloc(size);
      datagram.writeUInt32BE(sent, 0);
      socket.send(datagram, port, host);
    }
    if (sent < count) setTimeout(tick, 1);
    else
      setTimeout(() => {
        console.log(JSON.stringify({ sent }));
        socket.close();
      }, 200);
  };
  tick();
} else {
  console.error("usage: seq-probe.js recv|send ...");
  process.exit(2);
}
