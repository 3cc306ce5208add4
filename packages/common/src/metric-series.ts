/**
 * The Prometheus series of a program, computed from its shards' stats records (the counters
 * of the stats line): which counter goes to which metric family under which labels. Pure: the
 * endpoint ({@link ./metrics.ts}) hands the result to prom-client.
 *
 * Every counter of the stack's {@link StackStats} has a place here (or a reason not to be
 * exported), checked by the compiler; a program-level counter without one still appears, in
 * `fake_tcp_other_events_total{counter}`, so nothing added later silently vanishes.
 */
import type { StackStats } from "fake-tcp";
import { sumStats } from "./shards.js";

/** A metric family: its name (Prometheus conventions), type, help text and label names. */
export interface FamilySpec {
  readonly name: string;
  readonly type: "counter" | "gauge";
  readonly help: string;
  readonly labels: readonly string[];
}

const counter = (name: string, help: string, ...labels: string[]): FamilySpec => ({
  name: `fake_tcp_${name}_total`,
  type: "counter",
  help,
  labels,
});
const gauge = (name: string, help: string, ...labels: string[]): FamilySpec => ({
  name: `fake_tcp_${name}`,
  type: "gauge",
  help,
  labels,
});

/** Every family the programs export (besides prom-client's process and Node.js metrics). */
export const FAMILIES = {
  buildInfo: gauge(
    "build_info",
    "Program and version, as labels (always 1).",
    "program",
    "version",
  ),
  connections: gauge(
    "connections",
    "Tunnel connections open now (client: UDP peers with a session, including those connecting).",
  ),
  opened: counter("connections_opened", "Tunnel connections opened (established and relayed)."),
  closed: counter(
    "connections_closed",
    "Tunnel connections closed, by cause (as in the connection closed log line).",
    "cause",
  ),
  handshakeFailures: counter(
    "handshake_failures",
    "Handshakes that did not become a relayed connection, by reason: connect_failed (client: " +
      "no answer or refused), refused_full / refused_per_source (server: table, backlog or " +
      "per-source limit), ended_before_accept (server).",
    "reason",
  ),
  datagrams: counter(
    "datagrams",
    "Datagrams relayed, by direction: udp_to_tunnel (received over UDP, sent into the " +
      "tunnel) or tunnel_to_udp (received from the tunnel, sent over UDP).",
    "direction",
  ),
  datagramBytes: counter(
    "datagram_bytes",
    "Payload bytes of the datagrams relayed, by direction (see fake_tcp_datagrams_total).",
    "direction",
  ),
  datagramDrops: counter(
    "datagram_drops",
    "Datagrams lost on the way, by reason: too_big (over the MTU, or cut off by a UDP " +
      "socket), queue_full (client: queue while connecting), udp_error (a UDP send failed).",
    "reason",
  ),
  packets: counter(
    "tun_packets",
    "Packets read from (received) and written to (sent) the TUN device.",
    "direction",
  ),
  tunWriteErrors: counter("tun_write_errors", "Packets the TUN device refused to write."),
  packetDrops: counter(
    "packet_drops",
    "Received packets dropped by the fake-TCP stack (hostile, stale or not ours), by class. " +
      "Malformed packets are counted in fake_tcp_malformed_packets_total instead.",
    "class",
  ),
  malformed: counter(
    "malformed_packets",
    "Received packets dropped as malformed or not ours to parse, by reason.",
    "reason",
  ),
  stackSockets: gauge("stack_sockets", "Connections in the fake-TCP stack's table, any state."),
  acceptQueue: gauge("accept_queue", "Established connections waiting to be accepted."),
  handshakes: counter(
    "handshakes_completed",
    "Handshakes completed, by direction: inbound (accepted) or outbound (connected).",
    "direction",
  ),
  negotiated: counter(
    "handshakes_negotiated",
    "Handshakes completed with a peer that proved to be one of ours (negotiation option).",
  ),
  synOptionsMalformed: counter(
    "syn_options_malformed",
    "SYNs and SYN-ACKs with malformed options (handled as from a phantun peer).",
  ),
  cookiesSent: counter("syn_cookies_sent", "SYN-ACKs sent, each with a SYN cookie."),
  rstsSent: counter("rsts_sent", "RSTs sent for unknown connections and refused handshakes."),
  rstsSuppressed: counter("rsts_suppressed", "RST replies not sent: rate limit."),
  rstsChallenged: counter(
    "rsts_challenged",
    "RSTs in the window but not exact, answered with a challenge ACK instead of closing.",
  ),
  rstsChecked: counter(
    "rsts_checked",
    "Keyed: RSTs on connections, each starting or joining a check of the peer.",
  ),
  rstsExact: counter(
    "rsts_checked_exact",
    "Keyed: checked RSTs at exactly the peer's sequence number.",
  ),
  challengeAcks: counter("challenge_acks_sent", "Challenge ACKs sent."),
  challengeSuppressed: counter(
    "challenge_acks_suppressed",
    "Challenge ACKs not sent: per-connection gap or stack-wide budget.",
  ),
  resyncChained: counter(
    "resync_chained_segments",
    "Segments held back as links of a resync chain (not delivered).",
  ),
  resynced: counter("resyncs", "Streams taken back after jumping past the window."),
  replayCacheOverwrites: counter(
    "replay_cache_overwrites",
    "Keyed: replay-cache entries overwritten while still needed (the cache is too small).",
  ),
  peersRefused: counter(
    "peers_refused",
    "Client: new UDP peers refused, by reason: rate (--new-peer-rate) or table_full.",
    "reason",
  ),
  reconnects: counter("reconnects", "Client: connection attempts after a failed connection."),
  reconnectsDeferred: counter(
    "reconnects_deferred",
    "Client: reconnects that had to wait for their backoff.",
  ),
  handshakesWaiting: gauge(
    "handshakes_waiting",
    "Client: new connections waiting for a handshake slot (the shards' bound on handshakes at once).",
  ),
  handshakesInFlight: gauge("handshakes_in_flight", "Client: handshakes running now."),
  handshakesQueued: counter(
    "handshakes_queued",
    "Client: connections that had to wait for a handshake slot.",
  ),
  handshakeLimit: gauge(
    "handshake_limit",
    "Client: handshakes allowed at once, summed over the shards (it adapts to how fast they complete).",
  ),
  udpSockets: gauge("udp_sockets", "Server: UDP sockets open to the UDP application."),
  logLinesDropped: counter(
    "log_lines_dropped",
    "Log lines dropped because the log output could not keep up.",
  ),
  otherEvents: counter(
    "other_events",
    "Counters of the stats line without a metric of their own, by name.",
    "counter",
  ),
  shardUp: gauge(
    "shard_up",
    "1 if the shard's counters are from this scrape, 0 if it did not answer in time (its " +
      "last known counters are used).",
    "shard",
  ),
  shardConnections: gauge("shard_connections", "Tunnel connections open now, per shard.", "shard"),
  shardDatagrams: counter(
    "shard_datagrams",
    "Datagrams relayed per shard, by direction (they add up to fake_tcp_datagrams_total).",
    "shard",
    "direction",
  ),
  shardBusySeconds: counter(
    "shard_busy_seconds",
    "Time each shard's thread spent working (not waiting for events).",
    "shard",
  ),
} as const satisfies Record<string, FamilySpec>;

export type FamilyKey = keyof typeof FAMILIES;

/** Where a counter goes: a family and the labels that tell it apart there. */
type Placement = readonly [FamilyKey, Readonly<Record<string, string>>?];

/**
 * The stack's counters. `null`: not exported on its own, because another series already
 * counts it (comment says which).
 */
const STACK: { readonly [K in keyof StackStats]: Placement | null } = {
  connections: ["stackSockets"],
  acceptQueue: ["acceptQueue"],
  packetsReceived: ["packets", { direction: "received" }],
  packetsSent: ["packets", { direction: "sent" }],
  malformed: null, // by reason, see below
  notForUs: ["packetDrops", { class: "not_for_us" }],
  rstSent: ["rstsSent"],
  rstRateLimited: ["rstsSuppressed"],
  rstIgnored: ["packetDrops", { class: "rst_ignored" }],
  refusedFull: ["handshakeFailures", { reason: "refused_full" }],
  refusedPerSource: ["handshakeFailures", { reason: "refused_per_source" }],
  evicted: null, // fake_tcp_connections_closed_total{cause="evicted"}
  cookiesSent: ["cookiesSent"],
  cookieFailed: ["packetDrops", { class: "cookie_failed" }],
  handshakeIgnored: ["packetDrops", { class: "handshake_ignored" }],
  negotiated: ["negotiated"],
  synOptionsMalformed: ["synOptionsMalformed"],
  droppedTooBig: null, // part of fake_tcp_datagram_drops_total{reason="too_big"}
  droppedByDevice: ["tunWriteErrors"],
  outOfWindow: ["packetDrops", { class: "out_of_window" }],
  badAck: ["packetDrops", { class: "bad_ack" }],
  resyncChained: ["resyncChained"],
  resynced: ["resynced"],
  rstOutOfWindow: ["packetDrops", { class: "rst_out_of_window" }],
  rstChallenged: ["rstsChallenged"],
  challengeAcks: ["challengeAcks"],
  challengeRateLimited: ["challengeSuppressed"],
  synUnauthenticated: ["packetDrops", { class: "syn_unauthenticated" }],
  unkeyedPeersRefused: ["packetDrops", { class: "unkeyed_peer" }],
  synReplayed: ["packetDrops", { class: "syn_replayed" }],
  unknownUnanswered: ["packetDrops", { class: "unknown_unanswered" }],
  synAckForged: ["packetDrops", { class: "syn_ack_forged" }],
  handshakeRstIgnored: ["packetDrops", { class: "handshake_rst_ignored" }],
  rstChecked: ["rstsChecked"],
  rstExact: ["rstsExact"],
  rstForged: ["packetDrops", { class: "rst_forged" }],
  replayCacheOverwrites: ["replayCacheOverwrites"],
  accepted: ["handshakes", { direction: "inbound" }],
  connected: ["handshakes", { direction: "outbound" }],
  closed: null, // the relayed connections' causes: fake_tcp_connections_closed_total
};

/** The programs' own counters (server relays, client sessions). */
const PROGRAM: Readonly<Record<string, Placement | null>> = {
  connections: ["connections"],
  relays: null, // the server's connections: the same number
  opened: ["opened"],
  closed: null, // by cause: closedBy
  failed: ["handshakeFailures", { reason: "connect_failed" }],
  endedBeforeAccept: ["handshakeFailures", { reason: "ended_before_accept" }],
  udpToTunnel: ["datagrams", { direction: "udp_to_tunnel" }],
  tunnelToUdp: ["datagrams", { direction: "tunnel_to_udp" }],
  udpToTunnelBytes: ["datagramBytes", { direction: "udp_to_tunnel" }],
  tunnelToUdpBytes: ["datagramBytes", { direction: "tunnel_to_udp" }],
  sendDrops: ["datagramDrops", { reason: "too_big" }],
  queueDrops: ["datagramDrops", { reason: "queue_full" }],
  udpErrors: ["datagramDrops", { reason: "udp_error" }],
  udpSockets: ["udpSockets"],
  peersRefusedRate: ["peersRefused", { reason: "rate" }],
  peersRefusedFull: ["peersRefused", { reason: "table_full" }],
  reconnects: ["reconnects"],
  reconnectsDeferred: ["reconnectsDeferred"],
  handshakesWaiting: ["handshakesWaiting"],
  handshakesInFlight: ["handshakesInFlight"],
  handshakesQueued: ["handshakesQueued"],
  handshakeLimit: ["handshakeLimit"],
};

/** One sample: a family, its labels and value. */
export interface Sample {
  readonly family: FamilyKey;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** What one shard reported for a scrape. */
export interface ShardSnapshot {
  /** Its stats record (the last one it answered with, if it did not answer this time). */
  readonly stats: Record<string, unknown>;
  /** It answered for this scrape. */
  readonly fresh: boolean;
  /** Milliseconds its thread has been busy since it started. */
  readonly busyMs: number;
}

/** What the series say about the program besides its shards' counters. */
export interface ProgramInfo {
  readonly program: string;
  readonly version: string;
  readonly logLinesDropped: number;
}

/** `badHeaderLength` -> `bad_header_length`. */
const snakeCase = (name: string): string =>
  name.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toLowerCase();

const numbers = (value: unknown): [string, number][] =>
  value !== null && typeof value === "object"
    ? Object.entries(value).filter((e): e is [string, number] => typeof e[1] === "number")
    : [];

/**
 * The program's samples: its shards' counters summed, each placed in its family (samples of
 * the same family and labels add up), and the per-shard series. A family none of whose
 * counters the program has (a client has no `udpSockets`) gets no sample here.
 */
export function programSamples(shards: readonly ShardSnapshot[], info: ProgramInfo): Sample[] {
  const out: Sample[] = [];
  const put = (placement: Placement, value: number) =>
    out.push({ family: placement[0], labels: placement[1] ?? {}, value });
  out.push({
    family: "buildInfo",
    labels: { program: info.program, version: info.version },
    value: 1,
  });
  put(["logLinesDropped"], info.logLinesDropped);

  const total = sumStats(shards.map((s) => s.stats));
  for (const [key, value] of numbers(total)) {
    const placement = PROGRAM[key];
    if (placement) put(placement, value);
    else if (placement === undefined) put(["otherEvents", { counter: key }], value);
  }
  for (const [cause, value] of numbers(total.closedBy)) put(["closed", { cause }], value);

  const stack = (total.stack ?? {}) as Record<string, unknown>;
  const stackPlaces = STACK as Readonly<Record<string, Placement | null>>;
  for (const [key, value] of numbers(stack)) {
    const placement = stackPlaces[key];
    if (placement) put(placement, value);
    else if (placement === undefined) put(["otherEvents", { counter: `stack.${key}` }], value);
  }
  for (const [reason, value] of numbers(stack.malformed)) {
    put(["malformed", { reason: snakeCase(reason) }], value);
  }

  shards.forEach((shard, index) => {
    const label = { shard: String(index) };
    put(["shardUp", label], shard.fresh ? 1 : 0);
    put(["shardBusySeconds", label], shard.busyMs / 1000);
    const { connections, udpToTunnel, tunnelToUdp } = shard.stats;
    if (typeof connections === "number") put(["shardConnections", label], connections);
    if (typeof udpToTunnel === "number")
      put(["shardDatagrams", { ...label, direction: "udp_to_tunnel" }], udpToTunnel);
    if (typeof tunnelToUdp === "number")
      put(["shardDatagrams", { ...label, direction: "tunnel_to_udp" }], tunnelToUdp);
  });
  return out;
}
