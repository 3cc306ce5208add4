/**
 * `--metrics`: the Prometheus endpoint of both programs, scraped during a real tunnel run in
 * two namespaces (the server configured from a TOML file, two shards; the client from flags):
 * text exposition format with HELP/TYPE for every family, the counters moving with the
 * traffic, nothing listening without the option, and a taken port refused with one line.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupAll, linkNamespaces, Netns, realDeviceGate } from "../../../test-support/netns.js";
import {
  expectOneLineError,
  RunningProgram,
  runProgram,
} from "../../common/test/program-harness.js";

const gate = realDeviceGate();
const execFileAsync = promisify(execFile);

const ECHO = `
const s = require("node:dgram").createSocket("udp4");
s.on("message", (m, r) => s.send(m, r.port, r.address));
s.bind(Number(process.argv[1]), "127.0.0.1", () => console.log("ready"));
`;

/** Sends COUNT datagrams of SIZE bytes to 127.0.0.1:1234 and waits (bounded) for the echoes. */
const SENDER = `
const [count, size] = process.argv.slice(1).map(Number);
const s = require("node:dgram").createSocket("udp4");
let got = 0;
s.on("message", () => got++);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
s.connect(1234, "127.0.0.1", async () => {
  for (let i = 0; i < count; i++) { s.send(Buffer.alloc(size, 120)); await sleep(20); }
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && got < count) await sleep(20);
  console.log(got);
  s.close();
});
`;

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
  const { stdout } = await execFileAsync(
    "ip",
    ["netns", "exec", ns.name, process.execPath, "-e", SCRAPE, String(port)],
    { timeout: 10_000 },
  );
  const result = JSON.parse(stdout) as Scrape & { error?: string };
  if (result.error) throw new Error(`scrape failed: ${result.error}`);
  return result;
}

/**
 * Checks the text exposition format strictly enough to catch what Prometheus rejects: every
 * sample belongs to a family announced once by HELP then TYPE, counters end in _total, names
 * and labels are well formed, values are numbers. Returns the samples by name+labels.
 */
function parseExposition(body: string): Map<string, number> {
  const samples = new Map<string, number>();
  const families = new Map<string, string>();
  let help: string | null = null;
  expect(body.endsWith("\n")).toBe(true);
  for (const line of body.slice(0, -1).split("\n")) {
    const helpLine = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) \S.*$/.exec(line);
    const typeLine = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge)$/.exec(line);
    if (helpLine) {
      expect(families.has(helpLine[1]), `family ${helpLine[1]} announced twice`).toBe(false);
      help = helpLine[1];
    } else if (typeLine) {
      expect(typeLine[1], "TYPE follows its HELP").toBe(help);
      if (typeLine[2] === "counter") expect(typeLine[1]).toMatch(/_total$/);
      families.set(typeLine[1], typeLine[2]);
    } else {
      const sample =
        /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*")*\})? (-?\d+(\.\d+)?(e[+-]?\d+)?|NaN)$/.exec(
          line,
        );
      expect(sample, `bad exposition line: ${line}`).not.toBeNull();
      expect(families.has(sample![1]), `sample without HELP/TYPE: ${line}`).toBe(true);
      const key = `${sample![1]}${sample![2] ?? ""}`;
      expect(samples.has(key), `duplicate sample ${key}`).toBe(false);
      samples.set(key, Number(sample![4]));
    }
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
    const echo = nsS.spawn(process.execPath, ["-e", ECHO, "7777"]);
    await new Promise<void>((resolve, reject) => {
      echo.stdout!.once("data", () => resolve());
      echo.once("exit", () => reject(new Error("echo server exited")));
    });
  });
  afterAll(() => {
    cleanupAll();
    rmSync(dir, { recursive: true, force: true });
  });

  it("serves the counters of both programs, moving with the traffic", async () => {
    // Off by default: a program without --metrics listens on no TCP port.
    const plain = new RunningProgram(nsC, "client", [
      "--local",
      "1234",
      "--remote",
      "10.78.0.2:4567",
      "--tun",
      "ftmc0",
      "-4",
      "--queues",
      "1",
    ]);
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
      "--local",
      "1234",
      "--remote",
      "10.78.0.2:4567",
      "--tun",
      "ftmc0",
      "-4",
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
    expect(value(idle, 'fake_tcp_build_info{program="fake-tcp-client",version="0.1.0"}')).toBe(1);
    expect(value(idle, "fake_tcp_udp_to_tunnel_total")).toBe(0);
    expect(value(idle, "fake_tcp_connections")).toBe(0);

    const count = 20;
    const size = 300;
    const { stdout } = await execFileAsync(
      "ip",
      ["netns", "exec", nsC.name, process.execPath, "-e", SENDER, String(count), String(size)],
      { timeout: 15_000 },
    );
    expect(Number(stdout)).toBe(count);

    const c = parseExposition((await scrape(nsC, 9579)).body);
    expect(value(c, "fake_tcp_udp_to_tunnel_total")).toBe(count);
    expect(value(c, "fake_tcp_udp_to_tunnel_bytes_total")).toBe(count * size);
    expect(value(c, "fake_tcp_tunnel_to_udp_total")).toBe(count);
    expect(value(c, "fake_tcp_tunnel_to_udp_bytes_total")).toBe(count * size);
    expect(value(c, "fake_tcp_connections")).toBe(1);
    expect(value(c, "fake_tcp_opened_total")).toBe(1);
    expect(value(c, "fake_tcp_stack_packets_sent_total")).toBeGreaterThanOrEqual(count);
    expect(value(c, "fake_tcp_stack_packets_received_total")).toBeGreaterThanOrEqual(count);
    expect(value(c, 'fake_tcp_shard_udp_to_tunnel_total{shard="0"}')).toBe(count);

    const s = parseExposition((await scrape(nsS, 9578)).body);
    expect(value(s, 'fake_tcp_build_info{program="fake-tcp-server",version="0.1.0"}')).toBe(1);
    expect(value(s, "fake_tcp_shards")).toBe(2);
    expect(value(s, "fake_tcp_shards_unanswered")).toBe(0);
    expect(value(s, "fake_tcp_tunnel_to_udp_total")).toBe(count);
    expect(value(s, "fake_tcp_udp_to_tunnel_bytes_total")).toBe(count * size);
    expect(value(s, "fake_tcp_relays")).toBe(1);
    // The per-shard series add up to the total: the connection is on one of the two shards.
    expect(
      value(s, 'fake_tcp_shard_tunnel_to_udp_total{shard="0"}') +
        value(s, 'fake_tcp_shard_tunnel_to_udp_total{shard="1"}'),
    ).toBe(count);
    // The stack's security counters and drops by class are there, labelled.
    for (const name of [
      "fake_tcp_stack_cookies_sent_total",
      "fake_tcp_stack_cookie_failed_total",
      "fake_tcp_stack_out_of_window_total",
      "fake_tcp_stack_rst_rate_limited_total",
      "fake_tcp_stack_challenge_acks_total",
      'fake_tcp_stack_malformed_total{reason="truncated"}',
      'fake_tcp_stack_closed_total{cause="peer-reset"}',
    ]) {
      expect(s.has(name), name).toBe(true);
    }
    expect(value(s, "fake_tcp_stack_cookies_sent_total")).toBeGreaterThanOrEqual(1);

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

    expect((await client.stop()).code).toBe(0);
    expect((await server.stop()).code).toBe(0);
    // The endpoints went with the programs.
    expect(nsS.exec("ss", ["-Htln"]).trim()).toBe("");
  });
});
