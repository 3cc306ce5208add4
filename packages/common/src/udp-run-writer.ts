/**
 * Sends the datagrams that come out of the tunnel to UDP peers in runs: consecutive
 * datagrams of one size (the last may be shorter) to one destination on one socket leave in
 * one segmentation-offloaded send (UDP_SEGMENT), which the kernel splits into the same
 * datagrams. One system call and one trip through the UDP/IP stack per run instead of per
 * datagram; the peer sees exactly the datagrams single sends would have made.
 *
 * One writer serves a whole thread (its staging buffer is 64 KiB, not per connection). A run
 * is written when the owner calls {@link UdpRunWriter.flush} (the programs do at the end of each
 * batch the tunnel delivers), as soon as the next datagram cannot join it, and at the latest
 * at the end of the current task (a safety net). Datagrams are counted when they are written.
 *
 * A run holds at most `maxRun` datagrams (see {@link DEFAULT_UDP_RUN}): the receiving
 * application's socket takes a whole run in at once, so the run length is the burst a
 * receiver with a small buffer must absorb between two of its reads.
 *
 * After each send the writer calls `afterSend`; with `--udp-yield` the programs pass
 * `yieldCore`: a receiver on this host that the send woke may be queued on this very core,
 * and a thread that went on with the rest of its batch would keep it off the core until its
 * time slice ended, while the receiver's buffer (about 95 datagrams by default) filled.
 * Yielding after every run lets it read as the runs arrive: 2-7x fewer drops at a
 * default-sized receiver, but more CPU per gigabit on a busy host, so it is not the default.
 * Measurements: docs/benchmarks.md, "Yielding to the receiver".
 */
import { RunBuffer } from "fake-tcp";
import { UDP_MAX_SEGMENTED_BYTES, UDP_MAX_SEGMENTS } from "fake-tcp-tun/udp";

/** The sends a writer needs: those of a `UdpBatchSocket`. */
export interface RunSocket {
  send(buffer: Uint8Array, offset: number, length: number, records?: Uint8Array): boolean;
  sendSegmented(
    buffer: Uint8Array,
    offset: number,
    length: number,
    segmentSize: number,
    records?: Uint8Array,
  ): boolean;
}

/**
 * Hears, when a run is written, how many of its datagrams (and payload bytes) the socket sent
 * or refused.
 */
export interface RunCounting {
  sent(datagrams: number, bytes: number): void;
  refused(datagrams: number): void;
}

/**
 * Default most datagrams per segmented send to a UDP peer (`--udp-run`): a receiver gets
 * bursts of at most 8 datagrams (about 8 % of a default-sized socket buffer) instead of up to
 * 46, at no CPU cost measurable at 100 Mbit/s (one send per datagram, 1, cost the two programs
 * about 50 % more CPU per gigabit). Measurements: docs/benchmarks.md, "Bursts and small
 * receivers".
 */
export const DEFAULT_UDP_RUN = 8;

/** Checks a run cap: a whole number from 1 (every datagram alone) to the kernel's limit. */
export function isValidUdpRun(value: number): boolean {
  return Number.isInteger(value) && value >= 1 && value <= UDP_MAX_SEGMENTS;
}

export class UdpRunWriter {
  private readonly run: RunBuffer;
  private socket: RunSocket | null = null;
  private record: Uint8Array | undefined = undefined;
  private counting: RunCounting | null = null;

  /**
   * `maxRun`: most datagrams per send, from 1 (one datagram per send, no segmentation
   * offload) to `UDP_MAX_SEGMENTS`. `afterSend`: called after every send (null: nothing).
   */
  constructor(
    readonly maxRun = DEFAULT_UDP_RUN,
    private readonly afterSend: (() => void) | null = null,
  ) {
    if (!isValidUdpRun(maxRun)) {
      throw new RangeError(`maxRun ${maxRun} is not a whole number from 1 to ${UDP_MAX_SEGMENTS}`);
    }
    this.run = new RunBuffer(UDP_MAX_SEGMENTED_BYTES, maxRun, () => this.flush());
  }

  /**
   * Queues `datagram` (copied: the caller may reuse it on return) for `socket`, to the
   * address record `record` (the first record of the array; omit on a connected socket).
   * `counting` hears of the datagram when it is written.
   */
  send(
    socket: RunSocket,
    datagram: Uint8Array,
    record: Uint8Array | undefined,
    counting: RunCounting,
  ): void {
    const len = datagram.length;
    const run = this.run;
    if (run.count > 0 && (socket !== this.socket || record !== this.record || !run.fits(len)))
      this.flush();
    if (len === 0 || len > UDP_MAX_SEGMENTED_BYTES) {
      // Cannot be a segment (empty, or larger than any datagram the tunnel carries): as is,
      // after the pending run (which it must not overtake).
      this.flush();
      if (socket.send(datagram, 0, len, record)) counting.sent(1, len);
      else counting.refused(1);
      this.afterSend?.();
      return;
    }
    if (run.count === 0) {
      this.socket = socket;
      this.record = record;
      this.counting = counting;
    }
    run.push(datagram);
  }

  /** Sends the pending run now, if any. */
  flush(): void {
    const run = this.run;
    const count = run.count;
    if (count === 0) return;
    const socket = this.socket!;
    const counting = this.counting!;
    const record = this.record;
    const segmentSize = run.segmentSize;
    const payload = run.take();
    this.socket = null;
    this.record = undefined;
    this.counting = null;
    const ok =
      count === 1
        ? socket.send(payload, 0, payload.length, record)
        : socket.sendSegmented(payload, 0, payload.length, segmentSize, record);
    if (ok) counting.sent(count, payload.length);
    else counting.refused(count);
    this.afterSend?.();
  }
}
