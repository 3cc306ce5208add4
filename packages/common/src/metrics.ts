/**
 * Prometheus metrics (`--metrics IP:PORT`, off unless given): the counters of the stats line,
 * served in the text exposition format at `/metrics`.
 *
 * The names are derived from the stats records, so a counter added to a shard's stats appears
 * here without code: a top-level number `sendDrops` is `fake_tcp_send_drops_total`, the
 * stack's `outOfWindow` is `fake_tcp_stack_out_of_window_total`, and a record of numbers by
 * class (`stack.malformed`, `stack.closed`) is one metric with the class as a label:
 * `fake_tcp_stack_malformed_total{reason="badChecksum"}`. Values are the program's totals
 * (the shards summed, as on the stats line); each shard's own top-level counters are the
 * `fake_tcp_shard_*` metrics, labelled `shard`.
 */
import { createServer, type Server } from "node:http";
import type { SocketAddress } from "./address.js";
import { errnoCode, oneLine, UsageError } from "./errors.js";
import type { LogSink } from "./logger.js";
import { sumStats } from "./shards.js";

const PREFIX = "fake_tcp";

/** Counters that are levels (they go down), exposed as gauges without `_total`. */
const GAUGES = new Set(["connections", "relays", "acceptQueue", "udpSockets", "peers"]);

/** The label of a record of counters by class (default: `class`). */
const CLASS_LABELS: Record<string, string> = { malformed: "reason", closed: "cause" };

/** Help texts of the well-known counters; the others get a generic one. */
const HELP: Record<string, string> = {
  connections: "Fake-TCP connections open now.",
  relays: "Connections relayed to the UDP application now (server).",
  udpSockets: "UDP sockets open to the UDP application now (server).",
  opened: "Connections opened.",
  closed: "Connections closed.",
  failed: "Connections that failed to open (client).",
  udpToTunnel: "Datagrams received over UDP and sent into the tunnel.",
  tunnelToUdp: "Datagrams received from the tunnel and sent over UDP.",
  udpToTunnelBytes: "Payload bytes received over UDP and sent into the tunnel.",
  tunnelToUdpBytes: "Payload bytes received from the tunnel for the UDP side.",
  sendDrops: "Datagrams dropped on the way out: too large for the MTU, or truncated.",
  queueDrops: "Datagrams dropped because a send queue was full.",
  udpErrors: "Datagrams lost to UDP socket errors.",
  peersRefusedRate: "New UDP peers refused by the --new-peer-rate limit (client).",
  peersRefusedFull: "New UDP peers refused because the table was full (client).",
  endedBeforeAccept: "Connections that ended before they were relayed (server).",
  stack_connections: "Connections in the stack's table, any state.",
  stack_acceptQueue: "Established connections waiting to be accepted.",
  stack_packetsReceived: "Packets read from the TUN device.",
  stack_packetsSent: "Packets written to the TUN device.",
  stack_malformed: "Received packets dropped as malformed or not ours to parse, by reason.",
  stack_notForUs: "Packets dropped: destination not one of the stack's addresses.",
  stack_rstSent: "RSTs sent for unknown connections and refused handshakes.",
  stack_rstRateLimited: "RST replies suppressed by the rate limit.",
  stack_rstIgnored: "RSTs received for unknown connections (ignored).",
  stack_refusedFull: "Handshakes refused: connection table or accept backlog full.",
  stack_refusedPerSource: "Handshakes refused: too many connections from one source.",
  stack_evicted: "Idle connections closed to make room for new ones.",
  stack_cookiesSent: "SYN-ACKs sent with a SYN cookie.",
  stack_cookieFailed: "Handshake-completing segments with a wrong or expired SYN cookie.",
  stack_handshakeIgnored: "Segments ignored during a handshake (wrong flags or ack).",
  stack_droppedTooBig: "Datagrams dropped: larger than the MTU allows.",
  stack_droppedByDevice: "Packets the TUN device refused to write.",
  stack_outOfWindow: "Segments dropped: sequence number outside the window.",
  stack_badAck: "Segments dropped: acknowledgment of data never sent.",
  stack_rstOutOfWindow: "RSTs ignored: sequence number outside the window.",
  stack_rstChallenged: "RSTs in the window but not exact, answered with a challenge ACK.",
  stack_challengeAcks: "Challenge ACKs sent.",
  stack_challengeRateLimited: "Challenge ACKs suppressed by their rate limits.",
  stack_closed: "Connections closed, by cause.",
  logLinesDropped: "Log lines dropped because the log output could not keep up.",
};

/** `outOfWindow` -> `out_of_window`. */
export function snakeCase(name: string): string {
  return name
    .replace(/([a-z0-9])([A-Z])/g, "$1_$2")
    .replace(/[^A-Za-z0-9_]/g, "_")
    .toLowerCase();
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function escapeHelp(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/** One metric family being written: name, type, help and its samples. */
class Exposition {
  private readonly lines: string[] = [];

  family(name: string, type: "counter" | "gauge", help: string): void {
    this.lines.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
  }

  sample(name: string, labels: Record<string, string>, value: number): void {
    const pairs = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
    const text = Number.isFinite(value) ? String(value) : "NaN";
    this.lines.push(`${name}${pairs.length ? `{${pairs.join(",")}}` : ""} ${text}`);
  }

  text(): string {
    return `${this.lines.join("\n")}\n`;
  }
}

function familyName(path: readonly string[], gauge: boolean): string {
  const base = [PREFIX, ...path.map(snakeCase)].join("_");
  return gauge ? base : `${base}_total`;
}

function helpOf(path: readonly string[]): string {
  return (
    HELP[path.join("_")] ??
    `Counter ${path.join(".")} of the stats line (see the README, Operating the tunnel).`
  );
}

/** Writes the numbers of `stats` (and records of numbers, as labelled families) under `path`. */
function writeRecord(
  out: Exposition,
  stats: Record<string, unknown>,
  path: readonly string[],
): void {
  for (const [key, value] of Object.entries(stats)) {
    const here = [...path, key];
    if (typeof value === "number") {
      const gauge = GAUGES.has(key);
      const name = familyName(here, gauge);
      out.family(name, gauge ? "gauge" : "counter", helpOf(here));
      out.sample(name, {}, value);
    } else if (value !== null && typeof value === "object" && !Array.isArray(value)) {
      const entries = Object.entries(value as Record<string, unknown>);
      if (entries.length > 0 && entries.every(([, v]) => typeof v === "number")) {
        const name = familyName(here, false);
        out.family(name, "counter", helpOf(here));
        const label = CLASS_LABELS[key] ?? "class";
        for (const [cls, v] of entries) out.sample(name, { [label]: cls }, v as number);
      } else {
        writeRecord(out, value as Record<string, unknown>, here);
      }
    }
  }
}

/** What the exposition says about the program besides its counters. */
export interface MetricsInfo {
  readonly program: string;
  readonly version: string;
  readonly logLinesDropped: number;
}

/**
 * The text exposition of a program's counters: `list` holds each shard's stats in queue order
 * (`{}` for a shard that did not answer in time).
 */
export function renderMetrics(list: readonly Record<string, unknown>[], info: MetricsInfo): string {
  const out = new Exposition();
  out.family(`${PREFIX}_build_info`, "gauge", "Program and version (always 1).");
  out.sample(`${PREFIX}_build_info`, { program: info.program, version: info.version }, 1);
  out.family(`${PREFIX}_shards`, "gauge", "Shards (TUN queues, one thread each).");
  out.sample(`${PREFIX}_shards`, {}, list.length);
  const unanswered = list.filter((stats) => Object.keys(stats).length === 0).length;
  out.family(
    `${PREFIX}_shards_unanswered`,
    "gauge",
    "Shards whose counters were missing from this scrape (busy or stopping): totals are low.",
  );
  out.sample(`${PREFIX}_shards_unanswered`, {}, unanswered);
  writeRecord(out, { ...sumStats(list), logLinesDropped: info.logLinesDropped }, []);
  // Each shard's own top-level counters: how the traffic spreads over the queues.
  const names = new Set(
    list.flatMap((stats) => Object.keys(stats).filter((k) => typeof stats[k] === "number")),
  );
  for (const key of names) {
    const gauge = GAUGES.has(key);
    const name = familyName(["shard", key], gauge);
    out.family(name, gauge ? "gauge" : "counter", `${helpOf([key])} Per shard.`);
    list.forEach((stats, index) => {
      const value = stats[key];
      if (typeof value === "number") out.sample(name, { shard: String(index) }, value);
    });
  }
  return out.text();
}

/** The content type of the text exposition format. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** A listening metrics endpoint. */
export interface MetricsServer {
  /** The address it listens on (the port filled in when 0 was asked for). */
  readonly address: SocketAddress;
  close(): Promise<void>;
}

/**
 * Serves `render()` at `GET /metrics` on `address`. Rejects with a `UsageError` when the
 * address cannot be bound (in use, not local).
 */
export async function startMetricsServer(
  address: SocketAddress,
  render: () => Promise<string>,
  logger: LogSink,
): Promise<MetricsServer> {
  const server: Server = createServer((request, response) => {
    const path = (request.url ?? "/").split("?")[0];
    if (request.method !== "GET" && request.method !== "HEAD") {
      response.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    if (path !== "/metrics") {
      response
        .writeHead(path === "/" ? 200 : 404, { "content-type": "text/plain; charset=utf-8" })
        .end(path === "/" ? "fake-tcp metrics: GET /metrics\n" : "not found; try /metrics\n");
      return;
    }
    render().then(
      (body) => {
        response.writeHead(200, { "content-type": METRICS_CONTENT_TYPE });
        response.end(request.method === "HEAD" ? undefined : body);
      },
      (err: unknown) => {
        logger.warn({ err: oneLine(err) }, "metrics scrape failed");
        response.writeHead(500).end();
      },
    );
  });
  // A scraper is a trusted, well-behaved client: slow or idle ones are cut off early.
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  server.keepAliveTimeout = 5_000;
  server.maxConnections = 16;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) => {
      const where = `${address.family === 6 ? `[${address.address}]` : address.address}:${address.port}`;
      const code = errnoCode(err);
      reject(
        new UsageError(
          code === "EADDRINUSE"
            ? `--metrics: ${where} is already in use; pick another port`
            : code === "EADDRNOTAVAIL"
              ? `--metrics: ${address.address} is not an address of this host; use one that is (e.g. 127.0.0.1)`
              : `--metrics: cannot listen on ${where}: ${oneLine(err)}`,
        ),
      );
    });
    server.listen({ host: address.address, port: address.port, exclusive: true }, resolve);
  });
  server.on("error", (err) => logger.warn({ err: oneLine(err) }, "metrics endpoint error"));
  const bound = server.address();
  const port = typeof bound === "object" && bound !== null ? bound.port : address.port;
  return {
    address: { ...address, port },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
