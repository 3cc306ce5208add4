/**
 * UdpBatchSocket: a UDP socket in the addon with batched receive (recvmmsg into one shared
 * buffer, one JS call per batch) and synchronous sends (sendto / sendmmsg), usable in any
 * thread. Meant for the tunnel's hot path, where Node's dgram would allocate per datagram and
 * send asynchronously (so a send buffer could not be reused at once).
 */
import { isIPv4, isIPv6 } from "node:net";
import { type TunError, tunError } from "./errors.js";
import { addon, type NativeUdp, type NativeUdpArea } from "./native.js";
import { ADDRESS_RECORD_BYTES, UdpBatch } from "./udp-batch.js";

/** Options of {@link UdpBatchSocket.bind}. */
export interface UdpBindOptions {
  /** Local address to bind ("0.0.0.0" / "::" for any). */
  address: string;
  /** Local port (0: the kernel picks one; see {@link UdpBatchSocket.localAddress}). */
  port: number;
  /** 4 or 6. An IPv6 socket bound to "::" also receives IPv4 (reported as IPv4). */
  family: 4 | 6;
  /**
   * SO_REUSEPORT, set before bind: several sockets (e.g. one per worker_thread) share the
   * port, and the kernel keeps each flow (source address and port) on one of them.
   */
  reusePort?: boolean;
  /** SO_RCVBUF in bytes (SO_RCVBUFFORCE first, so CAP_NET_ADMIN lifts net.core.rmem_max). */
  recvBufferBytes?: number;
  /** SO_SNDBUF in bytes (SO_SNDBUFFORCE first). */
  sendBufferBytes?: number;
  /**
   * Report each datagram's destination address (IP_PKTINFO / IPV6_RECVPKTINFO) in
   * `batch.destinations`, so one wildcard-bound socket can tell which local address a peer
   * used, and answer from it (the `source` arguments of send / sendBatch). Default false.
   */
  packetInfo?: boolean;
  /** Most datagrams per receive call (default 64, 1..1024). */
  batchSize?: number;
  /**
   * Receive into this area (shared with other sockets of this thread) instead of buffers of
   * the socket's own; `batchSize` and `maxDatagramBytes` then come from the area. See
   * {@link UdpReceiveArea}.
   */
  receiveArea?: UdpReceiveArea;
  /**
   * Largest datagram received, in bytes (default 2048, up to 65536): the size of one slot of
   * the receive buffer (batchSize * this bytes in all). Larger datagrams are dropped and
   * counted as `truncated`, never delivered cut.
   */
  maxDatagramBytes?: number;
}

/**
 * Receive buffers that many sockets of ONE thread share: a batch is valid only while its
 * handler runs, and handlers of one thread never run at the same time, so sockets that each
 * receive now and then (a server's thousands of per-connection sockets) need one set of
 * buffers, not one each (about 1.7 KiB per datagram slot: 28 KiB per socket at 16 slots of
 * 1500 bytes). An area must not be used by sockets of another thread.
 */
export class UdpReceiveArea {
  /** Bytes of the addon's bookkeeping per slot (message header, address, control space). */
  static readonly SCRATCH_BYTES_PER_SLOT = 512;
  /** @internal */
  readonly native: NativeUdpArea;
  /** @internal The batch view every sharing socket hands its handler. */
  readonly batch: UdpBatch;

  constructor(
    readonly batchSize: number = DEFAULT_UDP_BATCH_SIZE,
    readonly maxDatagramBytes: number = DEFAULT_MAX_DATAGRAM_BYTES,
  ) {
    if (!isInteger(batchSize, 1, 1024))
      throw tunError("ERANGE", `batchSize ${batchSize} must be an integer from 1 to 1024`);
    if (!isInteger(maxDatagramBytes, 1, 65536))
      throw tunError(
        "ERANGE",
        `maxDatagramBytes ${maxDatagramBytes} must be an integer from 1 to 65536`,
      );
    this.native = {
      buffer: new ArrayBuffer(batchSize * maxDatagramBytes),
      offsets: new ArrayBuffer(batchSize * 8),
      addresses: new ArrayBuffer(batchSize * ADDRESS_RECORD_BYTES),
      destinations: new ArrayBuffer(batchSize * ADDRESS_RECORD_BYTES),
      scratch: new ArrayBuffer(batchSize * UdpReceiveArea.SCRATCH_BYTES_PER_SLOT),
    };
    const n = this.native;
    this.batch = new UdpBatch(n.buffer, n.offsets, n.addresses, n.destinations);
  }
}

/** Counters since the socket was made (they survive close()). */
export interface UdpBatchSocketStats {
  /** Datagrams delivered to the receive handler. */
  datagramsIn: number;
  bytesIn: number;
  /** Datagrams the kernel accepted for sending. */
  datagramsOut: number;
  bytesOut: number;
  /** Sends that failed (EAGAIN/ENOBUFS, refused, bad entry, closed) and were dropped. */
  sendDrops: number;
  /** Receive handler calls (one per wake-up that found datagrams). */
  receiveBatches: number;
  /** Received datagrams larger than maxDatagramBytes, dropped. */
  truncated: number;
  /** Receive errors such as ECONNREFUSED (an ICMP error on a connected socket); reading goes on. */
  receiveErrors: number;
  /** {@link UdpBatchSocket.sendSegmented} calls the kernel cut into datagrams (UDP_SEGMENT). */
  segmentedSends: number;
  /** {@link UdpBatchSocket.sendSegmented} calls sent datagram by datagram instead. */
  segmentationFallbacks: number;
}

/** Called once per batch of received datagrams; the batch is valid until it returns. */
export type UdpBatchHandler = (batch: UdpBatch) => void;

export const DEFAULT_UDP_BATCH_SIZE = 64;
export const DEFAULT_MAX_DATAGRAM_BYTES = 2048;
/**
 * Most datagrams per {@link UdpBatchSocket.sendSegmented} call: the kernel's UDP_MAX_SEGMENTS
 * (64 until Linux 6.10 raised it to 128; the lower value works everywhere).
 */
export const UDP_MAX_SEGMENTS = 64;
/**
 * Most bytes per {@link UdpBatchSocket.sendSegmented} call (all datagrams together): one send
 * is one IPv4 packet before the kernel cuts it, 65535 - 20 (IPv4) - 8 (UDP). IPv6 would allow
 * 20 more; one limit keeps callers simple.
 */
export const UDP_MAX_SEGMENTED_BYTES = 65_507;

function isInteger(value: unknown, min: number, max: number): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= min && value <= max;
}

/** Turns a bind/connect errno into an error that says what to do (code kept). */
function explainSocketError(error: unknown, verb: string, address: string, port: number): TunError {
  const code = (error as { code?: string }).code ?? "EUNKNOWN";
  const where = `${address.includes(":") ? `[${address}]` : address}:${port}`;
  let hint: string;
  switch (code) {
    case "EADDRINUSE":
      hint = `UDP port ${port} is already in use on ${address} (another process or socket holds it; sockets share a port only when every one of them sets reusePort)`;
      break;
    case "EACCES":
      hint = `UDP port ${port} needs privilege (ports below 1024 need CAP_NET_BIND_SERVICE)`;
      break;
    case "EADDRNOTAVAIL":
      hint = `address ${address} is not assigned to any interface in this network namespace`;
      break;
    default:
      hint = (error as Error).message;
  }
  return tunError(code, `cannot ${verb} UDP ${where}: ${hint}`, error);
}

/**
 * A UDP socket with batched, allocation-free receive and synchronous sends.
 *
 * ```ts
 * const s = UdpBatchSocket.bind({ address: "127.0.0.1", port: 5000, family: 4 });
 * s.onReceive((b) => {
 *   for (let i = 0; i < b.count; i++) s.send(b.buffer, b.start(i), b.length(i), b.addresses, i);
 * });
 * ```
 *
 * A socket belongs to the thread that made it (polled on that thread's event loop); make one
 * per worker (with `reusePort` to share a port).
 */
export class UdpBatchSocket {
  /** 4 or 6. */
  readonly family: 4 | 6;
  /** Most datagrams per handler call. */
  readonly batchSize: number;
  /** Largest datagram received, in bytes. */
  readonly maxDatagramBytes: number;
  readonly #native: NativeUdp;
  readonly #batch: UdpBatch;

  private constructor(
    family: 4 | 6,
    batchSize: number,
    maxDatagramBytes: number,
    area: UdpReceiveArea | undefined,
  ) {
    this.family = family;
    this.batchSize = batchSize;
    this.maxDatagramBytes = maxDatagramBytes;
    this.#native = new addon.NativeUdp(family, maxDatagramBytes, batchSize, area?.native);
    this.#batch =
      area?.batch ??
      new UdpBatch(
        this.#native.readBuffer,
        this.#native.readOffsets,
        this.#native.readAddresses,
        this.#native.readDestinations,
      );
  }

  /**
   * Creates a socket and binds it. Synchronous.
   *
   * @throws a TunError with the errno name in `code` and a message saying what to do:
   * EADDRINUSE (names the port), EACCES, EADDRNOTAVAIL, EINVAL (bad option or address).
   * Nothing is left open on failure.
   */
  static bind(opts: UdpBindOptions): UdpBatchSocket {
    const { address, port, family } = opts;
    if (family !== 4 && family !== 6)
      throw tunError("EINVAL", `bad family ${String(family)}: expected 4 or 6`);
    const valid = family === 4 ? isIPv4(address) : isIPv6(address);
    if (typeof address !== "string" || !valid)
      throw tunError(
        "EINVAL",
        `bad bind address ${JSON.stringify(address)}: expected an IPv${family} address`,
      );
    if (!isInteger(port, 0, 65535))
      throw tunError("EINVAL", `bad port ${String(port)}: expected an integer from 0 to 65535`);
    const area = opts.receiveArea;
    const batchSize = area?.batchSize ?? opts.batchSize ?? DEFAULT_UDP_BATCH_SIZE;
    if (!isInteger(batchSize, 1, 1024))
      throw tunError("ERANGE", `batchSize ${batchSize} must be an integer from 1 to 1024`);
    const slot = area?.maxDatagramBytes ?? opts.maxDatagramBytes ?? DEFAULT_MAX_DATAGRAM_BYTES;
    if (!isInteger(slot, 1, 65536))
      throw tunError("ERANGE", `maxDatagramBytes ${slot} must be an integer from 1 to 65536`);
    for (const key of ["recvBufferBytes", "sendBufferBytes"] as const) {
      const v = opts[key];
      if (v !== undefined && !isInteger(v, 1, 0x7fffffff))
        throw tunError("ERANGE", `${key} ${v} must be a positive integer`);
    }
    const socket = new UdpBatchSocket(family, batchSize, slot, area);
    try {
      socket.#native.bind(
        address,
        port,
        opts.reusePort ?? false,
        opts.recvBufferBytes ?? 0,
        opts.sendBufferBytes ?? 0,
        opts.packetInfo ?? false,
      );
    } catch (error) {
      socket.close();
      throw explainSocketError(error, "bind", address, port);
    }
    return socket;
  }

  /** Encodes `address`:`port` as an address record for {@link send} / {@link sendBatch}. */
  static encodeAddress(address: string, port: number): Uint8Array {
    return addon.encodeUdpAddress(address, port);
  }

  /** The socket's fd, or -1 once closed. */
  get fd(): number {
    return this.#native.fd;
  }

  /**
   * Connects the socket to one peer: it then receives only that peer's datagrams, and sends
   * go there whatever destination is passed.
   */
  connect(address: string, port: number): void {
    try {
      this.#native.connect(address, port);
    } catch (error) {
      throw explainSocketError(error, "connect to", address, port);
    }
  }

  /** The bound address (the kernel's choice of port when bound to port 0). */
  localAddress(): { address: string; port: number; family: 4 | 6 } {
    return this.#native.localAddress();
  }

  /**
   * Starts delivering received datagrams to `handler`, one call per wake-up (at most
   * `batchSize` datagrams, one recvmmsg). Replaces any earlier handler. The batch (buffer,
   * offsets, address records) is valid only until the handler returns. While a handler is
   * installed the socket keeps the event loop alive (see {@link unref}).
   */
  onReceive(handler: UdpBatchHandler): void {
    const batch = this.#batch;
    this.#native.start((count: number) => {
      batch.count = count;
      handler(batch);
    });
  }

  /**
   * Sends `buffer[offset, offset + length)` as one datagram, synchronously: the buffer may be
   * reused as soon as this returns. The destination is a text address and a port, or an
   * address record (`records` at record `index`, e.g. `batch.addresses, i` to answer datagram
   * `i`, or a record from {@link encodeAddress}); a connected socket ignores it. With a
   * destination record, `sourceRecords` at `sourceIndex` (e.g. `batch.destinations, i`) sets
   * the source address (IP_PKTINFO / IPV6_PKTINFO; any socket, most useful on a wildcard-bound
   * one). Returns false
   * when the datagram was dropped (socket buffer full, ICMP error pending, closed): counted,
   * never thrown.
   *
   * @throws only for programming errors: offset/length outside the buffer, or a malformed
   * destination (bad text address or port, record index out of range). A missing destination
   * on an unconnected socket is a counted drop.
   */
  send(buffer: Uint8Array, offset?: number, length?: number): boolean;
  send(buffer: Uint8Array, offset: number, length: number, address: string, port: number): boolean;
  send(
    buffer: Uint8Array,
    offset: number,
    length: number,
    records: Uint8Array,
    index?: number,
    sourceRecords?: Uint8Array,
    sourceIndex?: number,
  ): boolean;
  send(
    buffer: Uint8Array,
    offset = 0,
    length = buffer.length - offset,
    address?: string | Uint8Array,
    portOrIndex = 0,
    sourceRecords?: Uint8Array,
    sourceIndex = 0,
  ): boolean {
    return this.#native.send(
      buffer,
      offset,
      length,
      address,
      portOrIndex,
      sourceRecords,
      sourceIndex,
    );
  }

  /**
   * Sends `buffer[offset, offset + length)` as consecutive datagrams of `segmentSize` bytes
   * (the last may be shorter) to one destination, with one sendmsg carrying UDP_SEGMENT: the
   * kernel cuts the datagrams, so the whole run costs one system call and one trip through the
   * UDP/IP stack. The receiver sees exactly the datagrams single sends would have made.
   * Destination and source arguments are those of {@link send}. Synchronous.
   *
   * At most {@link UDP_MAX_SEGMENTS} datagrams and {@link UDP_MAX_SEGMENTED_BYTES} bytes per
   * call; a length of at most `segmentSize` is a single datagram. When the kernel refuses
   * UDP_SEGMENT (EIO/ENOPROTOOPT: no GSO on this kernel or route; EINVAL three calls in a row,
   * e.g. segments larger than the route's MTU allows), the datagrams are sent one by one with
   * sendmmsg instead; the first two kinds (and the third, after three) switch the socket to
   * one-by-one for good (see {@link segmentationOffload}).
   *
   * Returns true when every datagram was sent. False when the run was dropped (socket buffer
   * full, pending ICMP error, closed); when sending one by one, some datagrams may have gone
   * before the buffer filled up. Counters count datagrams either way.
   *
   * @throws only for programming errors: offset/length outside the buffer, `segmentSize` not
   * an integer from 1 to {@link UDP_MAX_SEGMENTED_BYTES}, too many bytes or datagrams, or a
   * malformed destination.
   */
  sendSegmented(
    buffer: Uint8Array,
    offset: number,
    length: number,
    segmentSize: number,
    address?: string | Uint8Array,
    portOrIndex = 0,
    sourceRecords?: Uint8Array,
    sourceIndex = 0,
  ): boolean {
    return this.#native.sendSegmented(
      buffer,
      offset,
      length,
      segmentSize,
      address,
      portOrIndex,
      sourceRecords,
      sourceIndex,
    );
  }

  /**
   * Whether {@link sendSegmented} still hands runs to the kernel in one send (UDP_SEGMENT).
   * False from the start on kernels without UDP_SEGMENT (before 4.18); turns false for good
   * once the kernel refused it on this socket.
   */
  get segmentationOffload(): boolean {
    return this.#native.segmentationOffload;
  }

  /**
   * Sends `count` datagrams in as few sendmmsg calls as possible: datagram `i` is
   * `buffer[offsets[2i], offsets[2i] + offsets[2i+1])`, to address record `i` of
   * `addressRecords` (omit on a connected socket), from source record `i` of `sourceRecords`
   * when given (see {@link send}). Synchronous. Returns how many were sent;
   * the rest were dropped and counted (a full socket buffer drops the rest of the batch).
   */
  sendBatch(
    buffer: Uint8Array,
    offsets: Uint32Array,
    count: number,
    addressRecords?: Uint8Array,
    sourceRecords?: Uint8Array,
  ): number {
    return this.#native.sendBatch(buffer, offsets, count, addressRecords, sourceRecords);
  }

  /** Lets the thread exit while this socket waits for datagrams. */
  unref(): this {
    this.#native.ref(false);
    return this;
  }

  /** Undoes {@link unref}. */
  ref(): this {
    this.#native.ref(true);
    return this;
  }

  /** Counters since the socket was made. */
  stats(): UdpBatchSocketStats {
    const s = this.#native.stats();
    return {
      datagramsIn: s[0],
      bytesIn: s[1],
      datagramsOut: s[2],
      bytesOut: s[3],
      sendDrops: s[4],
      receiveBatches: s[5],
      truncated: s[6],
      receiveErrors: s[7],
      segmentedSends: s[8],
      segmentationFallbacks: s[9],
    };
  }

  /**
   * Stops receiving and closes the socket. Idempotent, safe inside the handler; sends after
   * close return false. Runs by itself when the thread or process ends.
   */
  close(): void {
    this.#native.close();
  }
}
