/**
 * `fake-tcp-tun/nfqueue`: a netfilter queue (NFQUEUE) in the native addon, over a raw
 * nfnetlink socket (no library). A firewall rule hands selected packets to a queue number;
 * this program answers each with a verdict (accept, accept with a packet mark, drop), in
 * batches: one receive call and one send call per wake-up, no allocation per packet.
 *
 * Meant for deciding a connection on its first packet: queue only new SYNs to a port, accept
 * keyed ones with a mark that a later rule copies to the conntrack entry (and DNATs), accept
 * the rest unchanged so they reach the service that owns the port.
 */
import { existsSync, readFileSync } from "node:fs";
import { type TunError, tunError } from "./errors.js";
import { addon, type NativeNfQueue } from "./native.js";
import { PolledHandle } from "./polled.js";

/** Options of {@link NfQueue.open}. */
export interface NfQueueOptions {
  /** Queue number (0..65535), as in the rule (`queue num N` / `-j NFQUEUE --queue-num N`). */
  queue: number;
  /**
   * Bytes of each packet copied to this program (from the IP header on). Default 128: enough
   * for an IPv6 header, a TCP header and 40 bytes of options. 1..65531.
   */
  copyBytes?: number;
  /**
   * Most packets the kernel holds for this queue awaiting a verdict (NFQA_CFG_QUEUE_MAXLEN).
   * Default 4096. Past it, packets go through unchanged when {@link failOpen} (else dropped).
   */
  maxLength?: number;
  /**
   * NFQA_CFG_F_FAIL_OPEN (default true): when the queue or this socket's buffer is full the
   * kernel accepts packets instead of dropping them, so an overloaded program degrades to
   * "everything reaches the port's real service" rather than to an outage.
   */
  failOpen?: boolean;
  /** Most packets per handler call (one recvmmsg). Default 64, 1..1024. */
  batchSize?: number;
  /**
   * Socket receive buffer in bytes (SO_RCVBUFFORCE first, so CAP_NET_ADMIN lifts
   * net.core.rmem_max). Default 4 MiB: a few thousand queued packets of 128 bytes.
   */
  recvBufferBytes?: number;
}

/** Counters since the queue was opened (they survive close()). */
export interface NfQueueStats {
  /** Packets delivered to the handler. */
  packets: number;
  /** Handler calls. */
  batches: number;
  /** Verdicts sent: accepted (marked or not) and dropped. */
  accepted: number;
  dropped: number;
  /** Accepted with a mark. */
  marked: number;
  /** Deferred packets still awaiting {@link NfQueue.accept} / {@link NfQueue.drop}. */
  held: number;
  /** Verdict sends (one sendmsg each; a whole batch is one). */
  verdictSends: number;
  /** Batches answered with one NFQNL_MSG_VERDICT_BATCH message (same verdict and mark). */
  batchVerdicts: number;
  /** Verdict sends the kernel refused at once (the packets stay held until close). */
  sendErrors: number;
  /** Errors the kernel reported back for verdicts (e.g. ENOENT: no such packet id). */
  kernelErrors: number;
  /** Errno number of the latest of those (0 for none). */
  lastKernelError: number;
  /** Packets answered unchanged without reaching the handler (datagram cut, batch full). */
  truncated: number;
  /** Kernel messages without a packet id (ignored). */
  malformed: number;
  /** Receive errors (reading goes on). */
  receiveErrors: number;
}

/** Called once per batch of queued packets; the batch is valid until it returns. */
export type NfQueueHandler = (batch: NfQueueBatch) => void;

export const DEFAULT_NFQUEUE_COPY_BYTES = 128;
export const DEFAULT_NFQUEUE_MAX_LENGTH = 4096;
export const DEFAULT_NFQUEUE_BATCH_SIZE = 64;
export const DEFAULT_NFQUEUE_RECV_BUFFER_BYTES = 4 << 20;

/** Decision codes shared with the addon (nfqueue.c). */
const ACCEPT = 0;
const ACCEPT_MARK = 1;
const DROP = 2;
const DEFER = 3;
/** u32 words per packet in the shared metadata / decision arrays (nfqueue.c). */
const META = 8;
const DECISION = 2;

function isInteger(value: unknown, min: number, max: number): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= min && value <= max;
}

function checkMark(mark: unknown): asserts mark is number {
  if (!isInteger(mark, 0, 0xffff_ffff))
    throw tunError("ERR_OUT_OF_RANGE", `mark ${String(mark)} must be an integer from 0 to 2^32-1`);
}

/**
 * One batch of queued packets, reused for every handler call (no allocation per packet).
 * Packet `i` is `buffer[start(i), start(i) + length(i))`, from its IP header on, at most
 * `copyBytes` long (`packetLength(i)` is the full length). Each packet is answered when the
 * handler returns: by default accepted unchanged; {@link accept} with a mark, {@link drop}, or
 * {@link defer} (answer later with {@link NfQueue.accept} / {@link NfQueue.drop}) decide
 * otherwise. A whole batch with one decision goes back as one verdict message.
 */
export class NfQueueBatch {
  /** Packets in this batch; 0 outside the handler. */
  count = 0;
  /** The shared receive buffer. */
  readonly buffer: Uint8Array;
  readonly #meta: Uint32Array;
  readonly #decisions: Uint32Array;

  /** @internal */
  constructor(buffer: ArrayBuffer, meta: ArrayBuffer, decisions: ArrayBuffer) {
    this.buffer = new Uint8Array(buffer);
    this.#meta = new Uint32Array(meta);
    this.#decisions = new Uint32Array(decisions);
  }

  /** Offset of packet `i` in {@link buffer}. */
  start(i: number): number {
    return this.#meta[META * i];
  }
  /** Bytes of packet `i` copied (at most `copyBytes`). */
  length(i: number): number {
    return this.#meta[META * i + 1];
  }
  /** The kernel's packet id (what {@link defer} returns). */
  id(i: number): number {
    return this.#meta[META * i + 2];
  }
  /** The packet's mark when it was queued. */
  mark(i: number): number {
    return this.#meta[META * i + 3];
  }
  /** 4 or 6: the family of the hook that queued it (from the IP version when unknown). */
  family(i: number): number {
    return this.#meta[META * i + 4] & 0xff;
  }
  /** The netfilter hook (0 prerouting, 1 input, 2 forward, 3 output, 4 postrouting). */
  hook(i: number): number {
    return this.#meta[META * i + 4] >>> 8;
  }
  /** Index of the interface it came in on (0 for none, e.g. locally generated). */
  inputInterface(i: number): number {
    return this.#meta[META * i + 5];
  }
  /** Index of the interface it is going out on (0 for none, e.g. prerouting). */
  outputInterface(i: number): number {
    return this.#meta[META * i + 7];
  }
  /** The packet's full length (larger than {@link length} when cut to `copyBytes`). */
  packetLength(i: number): number {
    return this.#meta[META * i + 6];
  }

  #index(i: number): number {
    if (!isInteger(i, 0, this.count - 1))
      throw tunError(
        "ERR_OUT_OF_RANGE",
        this.count === 0
          ? "this batch is over: decide packets inside the handler, or defer() them and answer with NfQueue.accept/drop"
          : `packet index ${String(i)} is outside this batch (0..${this.count - 1})`,
      );
    return i * DECISION;
  }

  /**
   * Accepts packet `i`; with `mark`, sets the packet's mark (skb->mark, all 32 bits) to it,
   * which later rules see as `meta mark` (and can copy with `ct mark set meta mark`).
   */
  accept(i: number, mark?: number): void {
    const d = this.#index(i);
    if (mark === undefined) {
      this.#decisions[d] = ACCEPT;
      return;
    }
    checkMark(mark);
    this.#decisions[d] = ACCEPT_MARK;
    this.#decisions[d + 1] = mark;
  }

  /** Drops packet `i`. */
  drop(i: number): void {
    this.#decisions[this.#index(i)] = DROP;
  }

  /**
   * Leaves packet `i` held in the kernel after the handler returns; answer it later with
   * {@link NfQueue.accept} or {@link NfQueue.drop} and the id returned here. Held packets
   * count against `maxLength`; close() accepts those still held.
   */
  defer(i: number): number {
    this.#decisions[this.#index(i)] = DEFER;
    return this.id(i);
  }
}

/** Whether this process has CAP_NET_ADMIN in its effective set. */
function hasNetAdmin(): boolean {
  try {
    const line = readFileSync("/proc/self/status", "utf8").match(/^CapEff:\s*([0-9a-f]+)/m);
    return line !== null && (BigInt(`0x${line[1]}`) & (1n << 12n)) !== 0n;
  } catch {
    return false;
  }
}

/** The netlink port id bound to queue `queue` in this namespace, or null. */
function queueOwner(queue: number): number | null {
  const path = "/proc/net/netfilter/nfnetlink_queue";
  if (!existsSync(path)) return null;
  for (const line of readFileSync(path, "utf8").split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 2 && Number(f[0]) === queue) return Number(f[1]);
  }
  return null;
}

const NEEDS_NET_ADMIN =
  "missing CAP_NET_ADMIN: run as root or grant CAP_NET_ADMIN (e.g. `setcap cap_net_admin+ep $(command -v node)`, or `--cap-add NET_ADMIN` for a container)";

/** Turns an open failure into an error that says what to do (errno name kept in `code`). */
export function explainNfQueueError(error: unknown, queue: number): TunError {
  const code = (error as { code?: string } | null)?.code ?? "EUNKNOWN";
  let hint: string;
  switch (code) {
    case "EPERM":
    case "EBUSY": {
      // The kernel answers EPERM both without CAP_NET_ADMIN and for a queue number that
      // another socket already holds.
      const owner = queueOwner(queue);
      if (code === "EBUSY" || (hasNetAdmin() && owner !== null))
        hint = `queue ${queue} is already bound by another program${owner === null ? "" : ` (netlink port ${owner}, usually its pid)`}: stop it, or use another queue number in both the rule and this program`;
      else hint = NEEDS_NET_ADMIN;
      break;
    }
    case "EPROTONOSUPPORT":
    case "EAFNOSUPPORT":
    case "EINVAL":
    case "EOPNOTSUPP":
      hint =
        "the kernel has no netfilter queue support here (CONFIG_NETFILTER_NETLINK_QUEUE): load it with `modprobe nfnetlink_queue`";
      break;
    case "ETIMEDOUT":
      hint = "the kernel did not answer the queue configuration within 2 s";
      break;
    case "ENOBUFS":
    case "ENOMEM":
      hint = "out of kernel memory: try a smaller recvBufferBytes or maxLength";
      break;
    default:
      hint = (error as Error)?.message ?? String(error);
  }
  return tunError(code, `cannot open netfilter queue ${queue}: ${hint}`, error);
}

/**
 * A bound netfilter queue.
 *
 * ```ts
 * const q = NfQueue.open({ queue: 7 });
 * q.onPackets((b) => {
 *   for (let i = 0; i < b.count; i++) if (isKeyed(b.buffer, b.start(i), b.length(i))) b.accept(i, 0x77);
 * }); // unmarked packets are accepted unchanged when the handler returns
 * ```
 *
 * It belongs to the thread that opened it (polled on that thread's event loop) and to the
 * network namespace the thread was in. One queue serves IPv4 and IPv6 alike. `close()` answers
 * what is still held (the current batch with the decisions made so far, then every deferred
 * packet, accepted unchanged) and closes the socket, which unbinds the queue: from then on a
 * rule with `bypass` lets packets through.
 */
export class NfQueue extends PolledHandle<NfQueueStats> {
  /** The queue number. */
  readonly queue: number;
  readonly batchSize: number;
  readonly copyBytes: number;
  readonly maxLength: number;
  readonly #native: NativeNfQueue;
  readonly #batch: NfQueueBatch;

  private constructor(queue: number, native: NativeNfQueue, o: Required<NfQueueOptions>) {
    super(native);
    this.queue = queue;
    this.batchSize = o.batchSize;
    this.copyBytes = o.copyBytes;
    this.maxLength = o.maxLength;
    this.#native = native;
    this.#batch = new NfQueueBatch(native.readBuffer, native.readMeta, native.decisions);
  }

  /**
   * Binds queue `opts.queue` in this network namespace and configures it: copy mode
   * "packet" with `copyBytes`, `maxLength`, fail-open. Synchronous; packets that arrive before
   * a handler is installed wait in the kernel (up to `maxLength`).
   *
   * @throws a TunError with the errno name in `code` and a message saying what to do: EPERM
   * (no CAP_NET_ADMIN, or the queue number is held by another program), EINVAL/EOPNOTSUPP (no
   * queue support in the kernel), ERANGE/EINVAL for bad options. Nothing is left open.
   */
  static open(opts: NfQueueOptions): NfQueue {
    const o: Required<NfQueueOptions> = {
      queue: opts.queue,
      copyBytes: opts.copyBytes ?? DEFAULT_NFQUEUE_COPY_BYTES,
      maxLength: opts.maxLength ?? DEFAULT_NFQUEUE_MAX_LENGTH,
      failOpen: opts.failOpen ?? true,
      batchSize: opts.batchSize ?? DEFAULT_NFQUEUE_BATCH_SIZE,
      recvBufferBytes: opts.recvBufferBytes ?? DEFAULT_NFQUEUE_RECV_BUFFER_BYTES,
    };
    if (!isInteger(o.queue, 0, 65535))
      throw tunError("EINVAL", `bad queue number ${String(o.queue)}: expected 0..65535`);
    if (!isInteger(o.copyBytes, 1, 65531))
      throw tunError("ERANGE", `copyBytes ${o.copyBytes} must be an integer from 1 to 65531`);
    if (!isInteger(o.maxLength, 1, 0x7fff_ffff))
      throw tunError("ERANGE", `maxLength ${o.maxLength} must be a positive integer`);
    if (!isInteger(o.batchSize, 1, 1024))
      throw tunError("ERANGE", `batchSize ${o.batchSize} must be an integer from 1 to 1024`);
    if (!isInteger(o.recvBufferBytes, 1, 0x7fff_ffff))
      throw tunError("ERANGE", `recvBufferBytes ${o.recvBufferBytes} must be a positive integer`);
    if (typeof o.failOpen !== "boolean") throw tunError("EINVAL", "failOpen must be a boolean");
    let native: NativeNfQueue;
    try {
      native = new addon.NativeNfQueue(
        o.queue,
        o.copyBytes,
        o.maxLength,
        o.batchSize,
        o.failOpen,
        o.recvBufferBytes,
      );
    } catch (error) {
      throw explainNfQueueError(error, o.queue);
    }
    return new NfQueue(o.queue, native, o);
  }

  /**
   * Starts delivering queued packets to `handler`, one call per wake-up (at most `batchSize`
   * packets, one recvmmsg); every packet is answered when the handler returns (one sendmsg).
   * Replaces any earlier handler. While installed, the queue keeps the event loop alive (see
   * {@link unref}). An exception in the handler goes to 'uncaughtException'; the batch is
   * still answered with the decisions made so far.
   */
  onPackets(handler: NfQueueHandler): void {
    const batch = this.#batch;
    this.#native.start((count: number) => {
      batch.count = count;
      try {
        handler(batch);
      } finally {
        batch.count = 0;
      }
    });
  }

  /**
   * Accepts a deferred packet (by the id {@link NfQueueBatch.defer} returned), with `mark`
   * if given. Returns false when the kernel refused the send (counted).
   *
   * @throws ERR_NFQUEUE_UNKNOWN_PACKET for an id this queue does not hold (never deferred, or
   * answered already), ERR_OUT_OF_RANGE for a malformed id or mark, ERR_NFQUEUE_CLOSED.
   */
  accept(id: number, mark?: number): boolean {
    if (mark !== undefined) checkMark(mark);
    return this.#native.verdict(id, mark === undefined ? ACCEPT : ACCEPT_MARK, mark ?? 0);
  }

  /** Drops a deferred packet; see {@link accept}. */
  drop(id: number): boolean {
    return this.#native.verdict(id, DROP, 0);
  }
}
