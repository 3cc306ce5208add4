/**
 * `--metrics` under a real Prometheus (Debian's `prometheus`, installed by scripts/setup.sh):
 * both programs (two shards each) serve /metrics in two namespaces, Prometheus scrapes them
 * every second, a sender offers a steady UDP datagram rate through the tunnel (eight UDP peers,
 * echoed back by the application), and PromQL `rate()` over a window inside the steady period
 * must match the rate the sender measured in that window, within 5 %, for every direction of
 * both programs, from the program-wide and the per-shard series alike. `promtool check
 * metrics` must find nothing to say about either program's exposition.
 *
 * Prometheus runs in the client's namespace with its own storage in a temporary directory;
 * it, the programs and the namespaces are removed whatever happens.
 */
import { type ChildProcess, execFile, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupAll, linkNamespaces, Netns, realDeviceGate } from "../../../test-support/netns.js";
import { RunningProgram } from "../../common/test/program-harness.js";

const gate = realDeviceGate();
const execFileAsync = promisify(execFile);

const CLIENT_IP = "10.81.0.1";
const SERVER_IP = "10.81.0.2";
const CLIENT_METRICS = `${CLIENT_IP}:9181`;
const SERVER_METRICS = `${SERVER_IP}:9182`;
const PROMETHEUS = "127.0.0.1:9190";

/** The offered load: datagrams per second over all peers, for this long. */
const RATE = 400;
const SECONDS = 24;
const PEERS = 8;
const SIZE = 200;
/** The PromQL range, ending this long after the sender's first datagram (inside its run). */
const WINDOW_S = 15;
const WINDOW_END_S = 21;

const ECHO = `
const s = require("node:dgram").createSocket("udp4");
s.on("message", (m, r) => s.send(m, r.port, r.address));
s.bind(7777, "127.0.0.1", () => console.log("ready"));
`;

/**
 * Offers RATE datagrams/s of SIZE bytes for SECONDS from PEERS sockets in turn, on an absolute
 * schedule (a late timer sends what is due, so the rate holds on a busy machine). Prints the
 * wall-clock time (ms) of every send and how many echoes came back.
 */
const SENDER = `
const [rate, seconds, peers, size] = process.argv.slice(1).map(Number);
const dgram = require("node:dgram");
const { performance } = require("node:perf_hooks");
const now = () => performance.timeOrigin + performance.now();
const sockets = Array.from({ length: peers }, () => dgram.createSocket("udp4"));
let received = 0;
for (const s of sockets) s.on("message", () => received++);
const payload = Buffer.alloc(size, 120);
const total = rate * seconds;
const times = [];
Promise.all(sockets.map((s) => new Promise((r) => s.connect(1234, "127.0.0.1", r)))).then(() => {
  const start = now();
  const tick = () => {
    const due = Math.min(total, Math.floor(((now() - start) * rate) / 1000) + 1);
    while (times.length < due) {
      sockets[times.length % peers].send(payload);
      times.push(Math.round(now()));
    }
    if (times.length < total) setTimeout(tick, 2);
    else setTimeout(() => {
      console.log(JSON.stringify({ times, received }));
      for (const s of sockets) s.close();
    }, 2000);
  };
  tick();
});
`;

/** GETs every URL of its arguments inside `ns`, in parallel; prints statuses and bodies as JSON. */
const FETCH = `
Promise.all(process.argv.slice(1).map((url) =>
  fetch(url, { signal: AbortSignal.timeout(5000) })
    .then(async (r) => ({ status: r.status, body: await r.text() }))
    .catch((e) => ({ status: 0, body: String(e) }))
)).then((results) => console.log(JSON.stringify(results)));
`;

/** GETs `urls` from inside `ns` (one process for all: starting one is slow on a busy machine). */
async function fetchIn(ns: Netns, urls: string[]): Promise<{ status: number; body: string }[]> {
  const { stdout } = await execFileAsync(
    "ip",
    ["netns", "exec", ns.name, process.execPath, "-e", FETCH, ...urls],
    { timeout: 15_000, maxBuffer: 64 * 1024 * 1024 },
  );
  return JSON.parse(stdout) as { status: number; body: string }[];
}

interface VectorSample {
  metric: Record<string, string>;
  value: [number, string];
}

/** The URL of an instant PromQL query (at `time`, unix seconds, if given). */
function queryUrl(expr: string, time?: number): string {
  const params = new URLSearchParams({ query: expr });
  if (time !== undefined) params.set("time", time.toFixed(3));
  return `http://${PROMETHEUS}/api/v1/query?${params}`;
}

/** The samples of a query's answer; fails the test on an error. */
function vector(expr: string, answer: { status: number; body: string }): VectorSample[] {
  expect(answer.status, `${expr}: ${answer.body}`).toBe(200);
  const parsed = JSON.parse(answer.body) as { status: string; data: { result: VectorSample[] } };
  expect(parsed.status).toBe("success");
  return parsed.data.result;
}

/** Instant queries at `time`, all at once, through Prometheus's HTTP API in `ns`. */
async function query(ns: Netns, exprs: string[], time?: number): Promise<VectorSample[][]> {
  const answers = await fetchIn(
    ns,
    exprs.map((expr) => queryUrl(expr, time)),
  );
  return answers.map((answer, i) => vector(exprs[i], answer));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` every 500 ms until it holds or `ms` pass; returns whether it held. */
async function waitUntil(ms: number, check: () => Promise<boolean>): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return true;
    await sleep(500);
  }
  return false;
}

function prometheusMissing(): string | null {
  for (const tool of ["prometheus", "promtool"]) {
    if (spawnSync(tool, ["--version"], { timeout: 10_000 }).status !== 0) {
      return `${tool} not found: install Debian's prometheus package (scripts/setup.sh does)`;
    }
  }
  return null;
}

describe.skipIf(gate.skip)("Prometheus scrapes both programs", () => {
  let nsC: Netns;
  let nsS: Netns;
  let dir: string;
  let prometheus: ChildProcess | undefined;
  const programs: RunningProgram[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "ftc-prom-"));
    nsC = new Netns("ftprc");
    nsS = new Netns("ftprs");
    linkNamespaces(nsC, `${CLIENT_IP}/24`, nsS, `${SERVER_IP}/24`);
    const echo = nsS.spawn(process.execPath, ["-e", ECHO]);
    await new Promise<void>((resolve, reject) => {
      echo.stdout!.once("data", () => resolve());
      echo.once("exit", () => reject(new Error("echo server exited")));
    });
  });
  afterAll(async () => {
    // Prometheus gets a clean stop (it flushes its storage), bounded; then everything goes.
    if (prometheus && prometheus.exitCode === null) {
      const exited = new Promise((resolve) => prometheus!.once("exit", resolve));
      prometheus.kill("SIGTERM");
      await Promise.race([exited, sleep(5_000)]);
    }
    await Promise.all(programs.map((p) => Promise.race([p.stop(), sleep(5_000)])));
    cleanupAll();
    rmSync(dir, { recursive: true, force: true });
  });

  it("reads back rate() of the datagram counters as the offered rate, within 5 %", async () => {
    expect(prometheusMissing()).toBeNull();
    const t0 = Date.now();
    const phases: Record<string, number> = {};
    const phase = (name: string) => {
      phases[name] = Date.now() - t0;
    };

    const server = new RunningProgram(nsS, "server", [
      "--listen",
      "4567",
      "--remote",
      "127.0.0.1:7777",
      "--tun",
      "ftprs0",
      "-4",
      "--queues",
      "2",
      "--metrics",
      SERVER_METRICS,
    ]);
    programs.push(server);
    await server.waitFor("metrics endpoint up");
    const client = new RunningProgram(nsC, "client", [
      "--local",
      "1234",
      "--remote",
      `${SERVER_IP}:4567`,
      "--tun",
      "ftprc0",
      "-4",
      "--queues",
      "2",
      "--metrics",
      CLIENT_METRICS,
    ]);
    programs.push(client);
    await client.waitFor("metrics endpoint up");

    phase("programsUp");
    const config = join(dir, "prometheus.yml");
    writeFileSync(
      config,
      [
        "global:",
        "  scrape_interval: 1s",
        "  scrape_timeout: 900ms",
        "scrape_configs:",
        "  - job_name: client",
        `    static_configs: [{ targets: ["${CLIENT_METRICS}"] }]`,
        "  - job_name: server",
        `    static_configs: [{ targets: ["${SERVER_METRICS}"] }]`,
        "",
      ].join("\n"),
    );
    let promLog = "";
    prometheus = nsC.spawn("prometheus", [
      `--config.file=${config}`,
      `--storage.tsdb.path=${join(dir, "data")}`,
      `--web.listen-address=${PROMETHEUS}`,
      "--log.level=warn",
    ]);
    prometheus.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
      promLog = (promLog + chunk).slice(-4000);
    });
    const up = await waitUntil(30_000, async () => {
      const [result] = await query(nsC, ["up == 1"]);
      return result.length === 2;
    });
    expect(up, `both targets up within 30 s; prometheus said: ${promLog}`).toBe(true);

    phase("targetsUp");
    // The steady load, through the tunnel and back.
    const { stdout } = await execFileAsync(
      "ip",
      [
        "netns",
        "exec",
        nsC.name,
        process.execPath,
        "-e",
        SENDER,
        String(RATE),
        String(SECONDS),
        String(PEERS),
        String(SIZE),
      ],
      { timeout: (SECONDS + 30) * 1000, maxBuffer: 16 * 1024 * 1024 },
    );
    const sent = JSON.parse(stdout) as { times: number[]; received: number };
    phase("loadDone");
    expect(sent.times.length).toBe(RATE * SECONDS);
    // Echoes back: a loaded machine may lose a few to a full socket buffer, not more.
    expect(sent.received).toBeGreaterThanOrEqual(0.98 * sent.times.length);
    // The window: (end - WINDOW_S, end], inside the sender's run; what it offered there.
    const end = sent.times[0] + WINDOW_END_S * 1000;
    const inWindow = sent.times.filter((t) => t > end - WINDOW_S * 1000 && t <= end).length;
    const offered = inWindow / WINDOW_S;
    const overall = sent.times.length / ((sent.times.at(-1)! - sent.times[0]) / 1000);
    // Let Prometheus scrape past the window's end.
    await sleep(2_000);

    const at = end / 1000;
    const figures: Record<string, number> = {};
    const within = (name: string, value: number, expected: number) => {
      figures[name] = value;
      expect(Math.abs(value / expected - 1), `${name}: ${value} vs ${expected}`).toBeLessThan(0.05);
    };
    const [rates, bytes, shards, spread, connections, opened, failures, resident, shardsUp] =
      await query(
        nsC,
        [
          `sum by (job, direction) (rate(fake_tcp_datagrams_total[${WINDOW_S}s]))`,
          `sum by (job, direction) (rate(fake_tcp_datagram_bytes_total[${WINDOW_S}s]))`,
          // The per-shard series add up to the same rate (the sum of the rates, as it should be).
          `sum by (job, direction) (rate(fake_tcp_shard_datagrams_total[${WINDOW_S}s]))`,
          `rate(fake_tcp_shard_datagrams_total{direction="udp_to_tunnel"}[${WINDOW_S}s])`,
          "fake_tcp_connections",
          "fake_tcp_connections_opened_total",
          "sum(fake_tcp_handshake_failures_total)",
          "process_resident_memory_bytes > 0",
          "sum by (job) (fake_tcp_shard_up)",
        ],
        at,
      );
    expect(rates.length).toBe(4);
    for (const r of rates) {
      within(`datagrams ${r.metric.job} ${r.metric.direction}`, Number(r.value[1]), offered);
    }
    expect(bytes.length).toBe(4);
    for (const r of bytes) {
      within(`bytes ${r.metric.job} ${r.metric.direction}`, Number(r.value[1]), offered * SIZE);
    }
    expect(shards.length).toBe(4);
    for (const r of shards) {
      within(`shard sum ${r.metric.job} ${r.metric.direction}`, Number(r.value[1]), offered);
    }
    // One connection per UDP peer on both sides, none failed; both processes seen, two shards
    // each answering.
    for (const result of [connections, opened]) {
      expect(result.length).toBe(2);
      for (const r of result) expect(Number(r.value[1]), JSON.stringify(r)).toBe(PEERS);
    }
    expect(Number(failures[0].value[1])).toBe(0);
    expect(resident.length).toBe(2);
    expect(shardsUp.length).toBe(2);
    for (const r of shardsUp) expect(Number(r.value[1]), r.metric.job).toBe(2);

    // The expositions pass promtool's lint, both of them (the server's is reachable over the link).
    const targets = [CLIENT_METRICS, SERVER_METRICS];
    const expositions = await fetchIn(
      nsC,
      targets.map((target) => `http://${target}/metrics`),
    );
    expositions.forEach(({ status, body }, i) => {
      expect(status).toBe(200);
      const lint = spawnSync("promtool", ["check", "metrics"], {
        input: body,
        encoding: "utf8",
        timeout: 10_000,
      });
      expect(`${lint.stdout}${lint.stderr}`.trim(), `promtool on ${targets[i]}`).toBe("");
      expect(lint.status).toBe(0);
    });

    phase("checked");
    console.log(
      JSON.stringify({
        phasesMs: phases,
        offeredInWindow: offered,
        offeredOverall: Number(overall.toFixed(2)),
        echoed: `${sent.received}/${sent.times.length}`,
        window: `${WINDOW_S}s ending ${WINDOW_END_S}s into the run`,
        figures,
        perShardUdpToTunnel: spread.map((r) => ({
          job: r.metric.job,
          shard: r.metric.shard,
          rate: Number(r.value[1]),
        })),
      }),
    );

    expect((await client.stop()).code).toBe(0);
    expect((await server.stop()).code).toBe(0);
  }, 150_000);
});
