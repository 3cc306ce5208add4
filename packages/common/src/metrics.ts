/**
 * Prometheus metrics (`--metrics IP:PORT`, off unless given): `GET /metrics` served by
 * prom-client from a registry of the program's own series ({@link programSamples}: names,
 * labels, what each counts) and prom-client's default process and Node.js metrics.
 *
 * Nothing is counted per packet for this: a scrape asks every shard for its stats record (one
 * message to each worker, as the stats line does), sums them and sets the series. A shard that
 * does not answer in time keeps its last counters (`fake_tcp_shard_up` 0), so the counters
 * never go backwards, which `rate()` would take for a restart.
 */
import { createServer, type Server } from "node:http";
import { Counter, collectDefaultMetrics, Gauge, Registry } from "prom-client";
import type { SocketAddress } from "./address.js";
import { errnoCode, oneLine, UsageError } from "./errors.js";
import type { LogSink } from "./logger.js";
import {
  FAMILIES,
  type FamilyKey,
  type ProgramInfo,
  programSamples,
  type ShardSnapshot,
} from "./metric-series.js";
import type { ShardHandle } from "./shards.js";

/** prom-client default metrics that break the naming rules, left out. */
const TOTAL_GAUGES = [
  "nodejs_active_handles_total",
  "nodejs_active_requests_total",
  "nodejs_active_resources_total",
];

/** A program's registry: its series, set from its shards at each scrape. */
export class ProgramMetrics {
  readonly registry = new Registry();
  private readonly families = new Map<FamilyKey, Counter | Gauge>();
  /** Each shard's last answer: used when it does not answer a scrape in time. */
  private readonly last: Record<string, unknown>[];

  constructor(
    private readonly shards: readonly ShardHandle[],
    private readonly info: () => ProgramInfo,
  ) {
    this.last = shards.map(() => ({}));
    for (const [key, spec] of Object.entries(FAMILIES) as [
      FamilyKey,
      (typeof FAMILIES)[FamilyKey],
    ][]) {
      const config = {
        name: spec.name,
        help: spec.help,
        labelNames: spec.labels,
        registers: [this.registry],
      };
      this.families.set(key, spec.type === "counter" ? new Counter(config) : new Gauge(config));
    }
    collectDefaultMetrics({ register: this.registry });
    // Gauges named like counters (promtool rejects them); the same numbers by type remain
    // (nodejs_active_handles{type}, ...), and their sum is the total.
    for (const name of TOTAL_GAUGES) this.registry.removeSingleMetric(name);
  }

  /** The exposition of every series, the program's counters read now. */
  async render(): Promise<string> {
    const answers = await Promise.all(this.shards.map((shard) => shard.stats()));
    const snapshots: ShardSnapshot[] = answers.map((stats, index) => {
      const fresh = Object.keys(stats).length > 0;
      if (fresh) this.last[index] = stats;
      return { stats: this.last[index], fresh, busyMs: this.shards[index].busyMs() };
    });
    // Reset then add up, all synchronously: a concurrent scrape never sees a half-set family.
    for (const metric of this.families.values()) metric.reset();
    for (const sample of programSamples(snapshots, this.info())) {
      this.families.get(sample.family)?.inc(sample.labels, sample.value);
    }
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/** A listening metrics endpoint. */
export interface MetricsServer {
  /** The address it listens on (the port filled in when 0 was asked for). */
  readonly address: SocketAddress;
  close(): Promise<void>;
}

/**
 * Serves `metrics.render()` at `GET /metrics` on `address`. Rejects with a `UsageError` when the
 * address cannot be bound (in use, not local).
 */
export async function startMetricsServer(
  address: SocketAddress,
  metrics: Pick<ProgramMetrics, "render" | "contentType">,
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
    metrics.render().then(
      (body) => {
        response.writeHead(200, { "content-type": metrics.contentType });
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
