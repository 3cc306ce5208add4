/**
 * `--metrics`: the Prometheus endpoint of both programs, scraped during a real tunnel run in
 * two namespaces (the server configured from a TOML file, two shards; the client from flags):
 * expositions `promtool check metrics` passes, the counters moving with the traffic (exact
 * datagram and byte counts each way, per shard too, a close counted by its cause), process
 * metrics along, nothing listening without the option, and a taken port refused with one line.
 * (Rates read back through a real Prometheus: packages/e2e/test/prometheus.test.ts.)
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupAll, linkNamespaces, Netns, realDeviceGate } from "../../../test-support/netns.js";
import { startUdpEcho, udpPing } from "../../../test-support/udp-scripts.js";
import {
  expectOneLineError,
  RunningProgram,
  runProgram,
} from "../../common/test/program-harness.js";

const gate = realDeviceGate();

/** GETs http://127.0.0.1:PORT/metrics inside `ns`: status, content type and body as JSON. */
const SCRAPE = `
fetch("http://127.0.0.1:" + process.argv[1] + "/metrics", { signal: AbortSignal.timeout(5000) })
  .then(async (r) => console.log(JSON.stringify({ status: r.status, type: r.headers.get("content-type"), body: await r.text() })))
  .catch((e) => { console.log(JSON.stringify({ error: String(e) })); });
`;

interface Scrape {
  status: number;
  type: string;
  body: string;
}

async function scrape(ns: Netns, port: number): Promise<Scrape> {
  const stdout = await ns.runNodeScript(SCRAPE, [String(port)], 10_000);
  const result = JSON.parse(stdout) as Scrape & { error?: string };
  if (result.error) throw new Error(`scrape failed: ${result.error}`);
  return result;
}

/**
 * The exposition must pass `promtool check metrics` (Prometheus's own lint: names, types,
 * HELP, the _total rules) without a word; returns the samples, keyed by name and labels in
 * name order (`name{a="1",b="2"}`).
 */
function parseExposition(body: string): Map<string, number> {
  const lint = spawnSync("promtool", ["check", "metrics"], {
    input: body,
    encoding: "utf8",
    timeout: 10_000,
  });
  expect(lint.error, "promtool (Debian prometheus, installed by scripts/setup.sh)").toBeUndefined();
  expect(`${lint.stdout}${lint.stderr}`.trim()).toBe("");
  expect(lint.status).toBe(0);
  const samples = new Map<string, number>();
  for (const line of body.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    expect(sample, `bad exposition line: ${line}`).not.toBeNull();
    const labels = [...(sample![2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"/g)]
      .map((m) => `${m[1]}="${m[2]}"`)
      .sort();
    const key = `${sample![1]}${labels.length ? `{${labels.join(",")}}` : ""}`;
    expect(samples.has(key), `duplicate sample ${key}`).toBe(false);
    samples.set(key, Number(sample![3]));
  }
  return samples;
}

function value(samples: Map<string, number>, key: string): number {
  const v = samples.get(key);
  if (v === undefined) throw new Error(`no sample ${key}`);
  return v;
}

describe.skipIf(gate.skip)("Prometheus metrics during a tunnel run", () => {
  let nsC: Netns;
  let nsS: Netns;
  let dir: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "ftc-metrics-"));
    nsC = new Netns("ftmc");
    nsS = new Netns("ftms");
    linkNamespaces(nsC, "10.78.0.1/24", nsS, "10.78.0.2/24");
    await startUdpEcho(nsS, 7777);
  });
  afterAll(() => {
    cleanupAll();
    rmSync(dir, { recursive: true, force: true });
  });

  it("serves the counters of both programs, moving with the traffic", async () => {
    // Off by default: a program without --metrics listens on no TCP port.
    const clientArgs = ["--local", "1234", "--remote", "10.78.0.2:4567", "--tun", "ftmc0", "-4"];
    const plain = new RunningProgram(nsC, "client", [...clientArgs, "--queues", "1"]);
    await plain.waitFor("fake-tcp-client running");
    expect(nsC.exec("ss", ["-Htln"]).trim()).toBe("");
    expect((await plain.stop()).code).toBe(0);

    const config = join(dir, "server.toml");
    writeFileSync(
      config,
      [
        "listen = 4567",
        'remote = "127.0.0.1:7777"',
        'tun = "ftms0"',
        "ipv4-only = true",
        "queues = 2",
        'metrics = "127.0.0.1:9578"',
      ].join("\n"),
    );
    const server = new RunningProgram(nsS, "server", ["--config", config]);
    await server.waitFor("fake-tcp-server running");
    await server.waitFor("metrics endpoint up");
    const client = new RunningProgram(nsC, "client", [
      ...clientArgs,
      "--queues",
      "1",
      "--metrics",
      "127.0.0.1:9579",
    ]);
    await client.waitFor("metrics endpoint up");

    const before = await scrape(nsC, 9579);
    expect(before.status).toBe(200);
    expect(before.type).toMatch(/^text\/plain; version=0\.0\.4/);
    const idle = parseExposition(before.body);
    const UP = 'direction="udp_to_tunnel"';
    const DOWN = 'direction="tunnel_to_udp"';
    expect(value(idle, 'fake_tcp_build_info{program="fake-tcp-client",version="0.1.0"}')).toBe(1);
    expect(value(idle, `fake_tcp_datagrams_total{${UP}}`)).toBe(0);
    expect(value(idle, "fake_tcp_connections")).toBe(0);
    // prom-client's process and Node.js metrics come along.
    expect(value(idle, "process_resident_memory_bytes")).toBeGreaterThan(0);
    expect(idle.has("process_cpu_seconds_total")).toBe(true);
    expect(idle.has("nodejs_heap_size_used_bytes")).toBe(true);

    const count = 20;
    const size = 300;
    expect(await udpPing(nsC, 1234, count, { bytes: size })).toBe(count);

    const c = parseExposition((await scrape(nsC, 9579)).body);
    expect(value(c, `fake_tcp_datagrams_total{${UP}}`)).toBe(count);
    expect(value(c, `fake_tcp_datagram_bytes_total{${UP}}`)).toBe(count * size);
    expect(value(c, `fake_tcp_datagrams_total{${DOWN}}`)).toBe(count);
    expect(value(c, `fake_tcp_datagram_bytes_total{${DOWN}}`)).toBe(count * size);
    expect(value(c, "fake_tcp_connections")).toBe(1);
    expect(value(c, "fake_tcp_connections_opened_total")).toBe(1);
    expect(value(c, 'fake_tcp_handshakes_completed_total{direction="outbound"}')).toBe(1);
    expect(value(c, 'fake_tcp_tun_packets_total{direction="sent"}')).toBeGreaterThanOrEqual(count);
    expect(value(c, 'fake_tcp_tun_packets_total{direction="received"}')).toBeGreaterThanOrEqual(
      count,
    );
    expect(value(c, `fake_tcp_shard_datagrams_total{${UP},shard="0"}`)).toBe(count);
    expect(value(c, 'fake_tcp_shard_up{shard="0"}')).toBe(1);
    expect(value(c, 'fake_tcp_handshake_failures_total{reason="connect_failed"}')).toBe(0);

    const s = parseExposition((await scrape(nsS, 9578)).body);
    expect(value(s, 'fake_tcp_build_info{program="fake-tcp-server",version="0.1.0"}')).toBe(1);
    // Two shards, both answered; each has its thread's busy time.
    expect(
      value(s, 'fake_tcp_shard_up{shard="0"}') + value(s, 'fake_tcp_shard_up{shard="1"}'),
    ).toBe(2);
    expect(value(s, 'fake_tcp_shard_busy_seconds_total{shard="1"}')).toBeGreaterThan(0);
    expect(value(s, `fake_tcp_datagrams_total{${DOWN}}`)).toBe(count);
    expect(value(s, `fake_tcp_datagram_bytes_total{${UP}}`)).toBe(count * size);
    expect(value(s, "fake_tcp_connections")).toBe(1);
    expect(value(s, "fake_tcp_udp_sockets")).toBe(1);
    // The per-shard series add up to the total: the connection is on one of the two shards.
    expect(
      value(s, `fake_tcp_shard_datagrams_total{${DOWN},shard="0"}`) +
        value(s, `fake_tcp_shard_datagrams_total{${DOWN},shard="1"}`),
    ).toBe(count);
    // The stack's drops by class, its replies and the handshake failures are there, labelled.
    for (const name of [
      'fake_tcp_packet_drops_total{class="cookie_failed"}',
      'fake_tcp_packet_drops_total{class="out_of_window"}',
      'fake_tcp_packet_drops_total{class="rst_ignored"}',
      'fake_tcp_malformed_packets_total{reason="truncated"}',
      'fake_tcp_handshake_failures_total{reason="refused_full"}',
      'fake_tcp_datagram_drops_total{reason="too_big"}',
      "fake_tcp_rsts_suppressed_total",
      "fake_tcp_challenge_acks_sent_total",
    ]) {
      expect(value(s, name), name).toBe(0);
    }
    expect(value(s, "fake_tcp_syn_cookies_sent_total")).toBeGreaterThanOrEqual(1);
    expect(value(s, 'fake_tcp_handshakes_completed_total{direction="inbound"}')).toBe(1);

    // A port already taken: one line, exit 2, and the start undone.
    const taken = runProgram(nsC, "client", [
      "--local",
      "1235",
      "--remote",
      "10.78.0.2:4567",
      "--tun",
      "ftmc1",
      "-4",
      "--queues",
      "1",
      "--metrics",
      "9579",
    ]);
    expect(expectOneLineError(taken)).toMatch(
      /--metrics: 127\.0\.0\.1:9579 is already in use; pick another port/,
    );
    expect(nsC.exec("ip", ["-o", "link", "show"])).not.toContain("ftmc1");

    // The client's stop resets its connection: the server counts the close by its cause.
    expect((await client.stop()).code).toBe(0);
    let closed = new Map<string, number>();
    for (
      let i = 0;
      i < 20 && !closed.get('fake_tcp_connections_closed_total{cause="peer-reset"}');
      i++
    ) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      closed = parseExposition((await scrape(nsS, 9578)).body);
    }
    expect(value(closed, 'fake_tcp_connections_closed_total{cause="peer-reset"}')).toBe(1);
    expect(value(closed, "fake_tcp_connections")).toBe(0);
    expect((await server.stop()).code).toBe(0);
    // The endpoints went with the programs.
    expect(nsS.exec("ss", ["-Htln"]).trim()).toBe("");
  });
});
