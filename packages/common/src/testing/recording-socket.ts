/**
 * A {@link TunnelSocket} that records what is sent on it, for unit tests of what relays
 * datagrams over a connection without a stack.
 */
import type { TunnelSocket } from "../tunnel-socket.js";

export interface RecordingSocketOptions {
  readonly localAddress?: string;
  readonly localPort?: number;
  readonly remoteAddress?: string;
  readonly remotePort?: number;
  /** Datagrams longer than this are refused by `send` (as the stack refuses them beyond the MTU). */
  readonly maxDatagramBytes?: number;
}

export class RecordingSocket implements TunnelSocket {
  readonly localAddress: string;
  readonly localPort: number;
  readonly remoteAddress: string;
  readonly remotePort: number;
  /** What `send` was given, as strings, refused datagrams included. */
  sent: string[] = [];
  closed = false;
  peerIsOurs = false;
  datagramHandler: ((view: Uint8Array) => void) | undefined;
  closeHandler: ((cause: string) => void) | undefined;
  private readonly maxDatagramBytes: number;

  constructor(options: RecordingSocketOptions = {}) {
    this.localAddress = options.localAddress ?? "192.168.200.2";
    this.localPort = options.localPort ?? 40000;
    this.remoteAddress = options.remoteAddress ?? "10.0.0.2";
    this.remotePort = options.remotePort ?? 4567;
    this.maxDatagramBytes = options.maxDatagramBytes ?? Number.POSITIVE_INFINITY;
  }

  send(datagram: Uint8Array): boolean {
    this.sent.push(Buffer.from(datagram).toString());
    return datagram.length <= this.maxDatagramBytes;
  }
  onDatagram(handler: (view: Uint8Array) => void): void {
    this.datagramHandler = handler;
  }
  once(_event: "close", handler: (info: { cause: string }) => void): this {
    this.closeHandler = (cause) => handler({ cause });
    return this;
  }
  close(): void {
    this.closed = true;
  }
  /** The stack ending the connection (an RST from the peer): `close` goes to whoever listens. */
  endByPeer(cause: string): void {
    this.closed = true;
    this.closeHandler?.(cause);
  }
}
