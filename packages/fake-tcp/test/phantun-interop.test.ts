/**
 * Our stack with keepalives on against the phantun-shaped peer (issue 18): one-way flows in
 * each direction and idle spells longer than three keepalive intervals plus the dead-peer
 * detection time must not close the connection nor lose a datagram, although a phantun peer
 * never answers a probe except by the accident of its ACK rule.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { type Socket, Stack } from "../src/index.js";
import { createMemoryPair, type PhantunConnection, PhantunPeer } from "../src/testing/index.js";
import { CLIENT4, SERVER4 } from "./helpers.js";

const KEEPALIVE_MS = 1_000;
/** keepalive + 3 unanswered probes every half interval. */
const DETECTION_MS = KEEPALIVE_MS * (1 + 3 / 2);
const PHASE_MS = 3 * KEEPALIVE_MS + DETECTION_MS + 1_500;
const STEP_MS = 50;

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanup.splice(0)) c();
  vi.useRealTimers();
});

/** Our stack on side A (keepalive 1 s), the phantun-shaped peer on side B, connected. */
async function connected(ours: "client" | "server") {
  const pair = createMemoryPair();
  const local = ours === "client" ? CLIENT4 : SERVER4;
  const stack = new Stack({ queues: pair.a, local4: local, keepaliveIntervalMs: KEEPALIVE_MS });
  const peer = new PhantunPeer({ queue: pair.b[0], local4: ours === "client" ? SERVER4 : CLIENT4 });
  cleanup.push(() => {
    peer.close();
    stack.close();
  });
  let s: Socket;
  let p: PhantunConnection;
  if (ours === "client") {
    peer.listen(4567);
    [s, p] = await Promise.all([stack.connect(`${SERVER4}:4567`), peer.accept()]);
  } else {
    stack.listen(4567);
    [p, s] = await Promise.all([peer.connect(`${SERVER4}:4567`), stack.accept()]);
  }
  const atStack: Buffer[] = [];
  const atPeer: Buffer[] = [];
  s.onDatagram((d) => atStack.push(Buffer.from(d)));
  p.onDatagram((d) => atPeer.push(d));
  return { pair, stack, peer, s, p, atStack, atPeer };
}

/** Sends one datagram every STEP_MS for `ms` with `send`, advancing the fake clock. */
async function flow(ms: number, send: (d: Buffer) => void): Promise<number> {
  let n = 0;
  for (let t = 0; t < ms; t += STEP_MS) {
    send(Buffer.alloc(200, n++ & 0xff));
    await vi.advanceTimersByTimeAsync(STEP_MS);
  }
  return n;
}

describe("our stack with keepalives against a phantun-shaped peer", () => {
  for (const ours of ["client", "server"] as const) {
    it(`our ${ours}: one-way flows each way and an idle spell, no close, nothing lost`, async () => {
      vi.useFakeTimers();
      const { s, p, atStack, atPeer, peer } = await connected(ours);
      const up = await flow(PHASE_MS, (d) => s.send(d));
      expect(atPeer.length).toBe(up);
      const down = await flow(PHASE_MS, (d) => p.send(d));
      expect(atStack.length).toBe(down);
      await vi.advanceTimersByTimeAsync(PHASE_MS);
      s.send(Buffer.from("after"));
      p.send(Buffer.from("idle"));
      await vi.advanceTimersByTimeAsync(STEP_MS);
      expect(s.closeInfo).toBeNull();
      expect(p.closeReason).toBeNull();
      expect(atPeer.length).toBe(up + 1);
      expect(atStack.length).toBe(down + 1);
      expect(peer.counters().rstReceived).toBe(0);
    });
  }

  it("a phantun server sends a segment after its SYN-ACK before our client has sent 64 KiB", async () => {
    // Until it does, conntrack on the path knows only its unscaled SYN-ACK window and finds our
    // data more than ~64-128 KiB past its ack invalid: a one-way flow to it would stall (our
    // client's own host rules drop such segments). Only the wrap-around of its ACK rule makes
    // a phantun peer send anything unprompted.
    vi.useFakeTimers();
    const { s, peer } = await connected("client");
    let sent = 0;
    // Its first packet was the SYN-ACK.
    while (sent + 200 <= 64 * 1024 && peer.counters().packetsSent === 1) {
      s.send(Buffer.alloc(200));
      sent += 200;
      await vi.advanceTimersByTimeAsync(1);
    }
    expect(peer.counters().packetsSent).toBeGreaterThan(1);
  });
});
