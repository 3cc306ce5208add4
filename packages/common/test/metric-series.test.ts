/**
 * The Prometheus series from the shards' stats records: sums over the shards, counters placed
 * in their families under labels, per-shard series, a shard that misses a scrape keeping its
 * last counters (never going backwards), unknown counters kept, and the exposition passing
 * `promtool check metrics`.
 */
import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { FAMILIES, programSamples, type ShardHandle } from "../src/index.js";
import { ProgramMetrics } from "../src/metrics.js";

const INFO = { program: "fake-tcp-server", version: "1.2.3", logLinesDropped: 4 };

/** A shard's stats record as the server's shards make it (the parts the series read). */
function serverStats(n: number): Record<string, unknown> {
  return {
    connections: n,
    relays: n,
    opened: 2 * n,
    closed: n,
    closedBy: { "peer-reset": n },
    endedBeforeAccept: 1,
    udpToTunnel: 100 * n,
    tunnelToUdp: 10 * n,
    udpToTunnelBytes: 1000 * n,
    tunnelToUdpBytes: 100 * n,
    sendDrops: 1,
    queueDrops: 0,
    udpErrors: 0,
    udpSockets: n,
    stack: {
      connections: n,
      packetsReceived: 7,
      malformed: { truncated: 1, badHeaderLength: 2 },
      outOfWindow: 3,
      cookieFailed: 5,
      refusedFull: 1,
      accepted: 2 * n,
      closed: { "peer-reset": n },
    },
  };
}

/** Samples as `name{labels}` -> value, labels in name order. */
function byKey(samples: ReturnType<typeof programSamples>): Map<string, number> {
  const out = new Map<string, number>();
  for (const s of samples) {
    const labels = Object.entries(s.labels)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `${k}="${v}"`);
    const key = `${FAMILIES[s.family].name}${labels.length ? `{${labels.join(",")}}` : ""}`;
    out.set(key, (out.get(key) ?? 0) + s.value);
  }
  return out;
}

describe("programSamples", () => {
  it("sums the shards into the families, with per-shard series", () => {
    const samples = byKey(
      programSamples(
        [
          { stats: serverStats(1), fresh: true, busyMs: 1500 },
          { stats: serverStats(2), fresh: true, busyMs: 250 },
        ],
        INFO,
      ),
    );
    expect(samples.get('fake_tcp_build_info{program="fake-tcp-server",version="1.2.3"}')).toBe(1);
    expect(samples.get("fake_tcp_connections")).toBe(3);
    expect(samples.get("fake_tcp_connections_opened_total")).toBe(6);
    expect(samples.get('fake_tcp_connections_closed_total{cause="peer-reset"}')).toBe(3);
    expect(samples.get('fake_tcp_datagrams_total{direction="udp_to_tunnel"}')).toBe(300);
    expect(samples.get('fake_tcp_datagrams_total{direction="tunnel_to_udp"}')).toBe(30);
    expect(samples.get('fake_tcp_datagram_bytes_total{direction="udp_to_tunnel"}')).toBe(3000);
    expect(samples.get('fake_tcp_datagram_drops_total{reason="too_big"}')).toBe(2);
    expect(samples.get('fake_tcp_handshake_failures_total{reason="ended_before_accept"}')).toBe(2);
    expect(samples.get('fake_tcp_handshake_failures_total{reason="refused_full"}')).toBe(2);
    expect(samples.get('fake_tcp_packet_drops_total{class="out_of_window"}')).toBe(6);
    expect(samples.get('fake_tcp_packet_drops_total{class="cookie_failed"}')).toBe(10);
    expect(samples.get('fake_tcp_malformed_packets_total{reason="bad_header_length"}')).toBe(4);
    expect(samples.get('fake_tcp_tun_packets_total{direction="received"}')).toBe(14);
    expect(samples.get('fake_tcp_handshakes_completed_total{direction="inbound"}')).toBe(6);
    expect(samples.get("fake_tcp_udp_sockets")).toBe(3);
    expect(samples.get("fake_tcp_log_lines_dropped_total")).toBe(4);
    expect(samples.get('fake_tcp_shard_datagrams_total{direction="udp_to_tunnel",shard="1"}')).toBe(
      200,
    );
    expect(samples.get('fake_tcp_shard_connections{shard="0"}')).toBe(1);
    expect(samples.get('fake_tcp_shard_busy_seconds_total{shard="0"}')).toBe(1.5);
    expect(samples.get('fake_tcp_shard_up{shard="1"}')).toBe(1);
    // Counted elsewhere, not twice: relays (= connections), the stack's closes by cause.
    expect([...samples.keys()].some((k) => k.includes("relays"))).toBe(false);
    expect(samples.get('fake_tcp_other_events_total{counter="relays"}')).toBeUndefined();
  });

  it("keeps a counter it has no series for, by name", () => {
    const samples = byKey(
      programSamples(
        [{ stats: { newThing: 5, stack: { brandNew: 2 } }, fresh: true, busyMs: 0 }],
        INFO,
      ),
    );
    expect(samples.get('fake_tcp_other_events_total{counter="newThing"}')).toBe(5);
    expect(samples.get('fake_tcp_other_events_total{counter="stack.brandNew"}')).toBe(2);
  });
});

/** A shard whose stats come from `answers` in turn (`{}` = no answer in time). */
function fakeShard(answers: Record<string, unknown>[]): ShardHandle {
  let i = 0;
  return {
    stats: async () => answers[Math.min(i++, answers.length - 1)],
    busyMs: () => 10 * i,
    stop: async () => {},
  };
}

function sample(text: string, key: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${key} `));
  if (!line) throw new Error(`no sample ${key}`);
  return Number(line.slice(key.length + 1));
}

describe("ProgramMetrics", () => {
  it("renders every family, keeps a silent shard's last counters, passes promtool", async () => {
    const metrics = new ProgramMetrics(
      [fakeShard([serverStats(1), {}, serverStats(3)]), fakeShard([serverStats(2)])],
      () => INFO,
    );
    const first = await metrics.render();
    for (const spec of Object.values(FAMILIES)) expect(first).toContain(`# TYPE ${spec.name} `);
    expect(first).toContain("# TYPE process_cpu_seconds_total counter");
    expect(first).toContain("# TYPE process_resident_memory_bytes gauge");
    expect(first).not.toContain("nodejs_active_handles_total");
    const up = 'fake_tcp_datagrams_total{direction="udp_to_tunnel"}';
    expect(sample(first, up)).toBe(300);

    // Shard 0 misses the second scrape: its last counters stand in, the totals do not drop.
    const second = await metrics.render();
    expect(sample(second, up)).toBe(300);
    expect(sample(second, 'fake_tcp_shard_up{shard="0"}')).toBe(0);
    expect(sample(second, 'fake_tcp_shard_up{shard="1"}')).toBe(1);
    const third = await metrics.render();
    expect(sample(third, up)).toBe(500);
    expect(sample(third, 'fake_tcp_shard_up{shard="0"}')).toBe(1);
    expect(metrics.contentType).toMatch(/^text\/plain; version=0\.0\.4/);

    const lint = spawnSync("promtool", ["check", "metrics"], {
      input: third,
      encoding: "utf8",
      timeout: 10_000,
    });
    expect(
      lint.error,
      "promtool (Debian prometheus, installed by scripts/setup.sh)",
    ).toBeUndefined();
    expect(`${lint.stdout}${lint.stderr}`.trim()).toBe("");
    expect(lint.status).toBe(0);
  });
});
