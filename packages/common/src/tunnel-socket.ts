/**
 * The view the programs have of one fake-TCP connection. The stack's socket satisfies it
 * (`tunnel.ts` hands it out); the relays of both programs (and their unit tests) depend only
 * on this, not on the stack.
 */

/** Why a connection closed, as the stack reports it, or one of the programs' own causes. */
export type CloseCause = string;

/** One established fake-TCP connection carrying datagrams. */
export interface TunnelSocket {
  readonly localAddress: string;
  readonly localPort: number;
  readonly remoteAddress: string;
  readonly remotePort: number;
  /**
   * True once the connection has ended (reset, timed out, closed). A connection can end
   * between its handshake and its acceptance; its `close` event has then already fired.
   */
  readonly closed: boolean;
  /**
   * True when the handshake showed that the other end is one of our programs (our SYN option
   * echoed, or keyed mode): only then may anything beyond phantun's wire be sent on it.
   */
  readonly peerIsOurs: boolean;
  /** Sends one datagram as one segment, synchronously. False when it was dropped. */
  send(datagram: Uint8Array): boolean;
  /**
   * Delivers each received datagram. The view is valid only during the call: copy it before
   * anything asynchronous (such as `dgram.send`).
   */
  onDatagram(handler: (view: Uint8Array) => void): void;
  /**
   * Registers a listener for the end of the connection (emitted once, with the cause). The
   * stack's socket is an EventEmitter whose `close` event carries `{ cause, message }`.
   */
  once(event: "close", listener: (info: { cause: CloseCause }) => void): unknown;
  /** Closes the connection, sending an RST. Idempotent. */
  close(): void;
}
