/**
 * What the client's peer sessions and the server's relays share: the counters of the
 * datagrams they relay, the send into the tunnel that counts its outcome, the handler that
 * counts datagrams a UDP socket refused, the fields of the per-connection log lines and the
 * composition of a shard's stats.
 */
import { formatAddress } from "./address.js";
import type { LogSink } from "./logger.js";
import { CONNECTION_LOG_LIMIT, RateLimitedLog } from "./rate-limited-log.js";
import type { TunnelSocket } from "./tunnel-socket.js";
import type { RunCounting } from "./udp-run-writer.js";

/** Datagrams relayed by the sessions or relays of one shard (plain numbers on the hot path). */
export interface RelayCounters {
  /** Datagrams from UDP sent into the tunnel. */
  udpToTunnel: number;
  /** Datagrams from the tunnel that a UDP socket sent. */
  tunnelToUdp: number;
  /** Payload bytes of `udpToTunnel` and `tunnelToUdp`. */
  udpToTunnelBytes: number;
  tunnelToUdpBytes: number;
  /** Datagrams dropped before they could be sent (the client's queue while connecting). */
  queueDrops: number;
  /** Datagrams too large for a segment (refused by the stack, or cut off by a UDP socket). */
  sendDrops: number;
  /** Datagrams from the tunnel that a UDP socket refused (e.g. its buffer was full). */
  udpErrors: number;
}

export function newRelayCounters(): RelayCounters {
  return {
    udpToTunnel: 0,
    tunnelToUdp: 0,
    udpToTunnelBytes: 0,
    tunnelToUdpBytes: 0,
    queueDrops: 0,
    sendDrops: 0,
    udpErrors: 0,
  };
}

/** Sends a datagram from UDP into the tunnel and counts the outcome. */
export function sendToTunnel(
  sock: TunnelSocket,
  datagram: Uint8Array,
  totals: RelayCounters,
): void {
  if (sock.send(datagram)) {
    totals.udpToTunnel++;
    totals.udpToTunnelBytes += datagram.byteLength;
  } else totals.sendDrops++;
}

/** Counts the tunnel's datagrams to UDP when a UDP socket sends or refuses them. */
export function udpCounting(totals: RelayCounters): RunCounting {
  return {
    sent: (datagrams, bytes) => {
      totals.tunnelToUdp += datagrams;
      totals.tunnelToUdpBytes += bytes;
    },
    refused: (datagrams) => {
      totals.udpErrors += datagrams;
    },
  };
}

/**
 * The stats of a shard: its own sections (connections, events, refusals), then the relay
 * counters, with the datagrams its UDP sockets cut off (`truncated`: too large for a
 * receive slot) counted as send drops like those the stack refuses.
 */
export function relayStats(
  sections: readonly object[],
  totals: RelayCounters,
  truncated: number,
): Record<string, number> {
  return Object.assign({}, ...sections, totals, { sendDrops: totals.sendDrops + truncated });
}

/**
 * The two ends of a relayed connection in the log: `peer` the UDP or fake-TCP peer the
 * connection exists for, `local` the connection's local end, `remote` where its datagrams go.
 */
export interface ConnectionEnds {
  readonly peer: string;
  readonly remote: string;
  readonly sock: TunnelSocket;
}

/**
 * The "connection opened" and "connection closed" lines, the operator's record of
 * connections: rate-limited with a generous budget, since any peer can cause them.
 */
export class ConnectionLog {
  private readonly log: RateLimitedLog;

  constructor(logger: LogSink) {
    this.log = new RateLimitedLog(logger, { limit: CONNECTION_LOG_LIMIT });
  }

  opened(ends: ConnectionEnds): void {
    this.log.info(fields(ends), "connection opened");
  }

  closed(ends: ConnectionEnds, cause: string, openedAt: number, now = Date.now()): void {
    this.log.info(
      { ...fields(ends), cause, seconds: Math.round((now - openedAt) / 1000) },
      "connection closed",
    );
  }

  /** Logs what the rate limit held back. */
  close(): void {
    this.log.close();
  }
}

function fields(ends: ConnectionEnds) {
  const { sock } = ends;
  return {
    peer: ends.peer,
    local: formatAddress(sock.localAddress, sock.localPort),
    remote: ends.remote,
  };
}
