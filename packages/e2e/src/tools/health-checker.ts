/**
 * The fleet balancer's health checker (runs in the balancer's namespace, as root).
 *
 * A fake-TCP server cannot be checked on its tunnel port: an unkeyed one answers a SYN with a
 * SYN-ACK and then holds a connection (and a UDP socket towards the application) for the
 * check, a keyed one answers nothing at all. So each server is asked for its Prometheus
 * endpoint (`--metrics`, a kernel TCP port of the program's own): healthy = HTTP 200 within
 * `--timeout` ms and every shard answered the scrape (every `fake_tcp_shard_up` series is 1),
 * which proves the main thread and every worker that owns connections alive.
 *
 * After `--fall` failed checks in a row a server leaves the balancer's list (one atomic `nft`
 * transaction, see fleet-balancer.ts) and its flows are deleted from the balancer's conntrack,
 * so that the next segment of each of its clients is sent to a live server, whose stack
 * answers a segment of no connection with an RST: the client reconnects at once instead of
 * waiting for its dead-peer detection. After `--rise` good checks in a row it comes back (new
 * flows only; established flows stay where conntrack has them).
 *
 * `--forget-flows no` leaves the balancer's conntrack alone, as a balancer without access to
 * its flow table would (most cloud balancers): then a client on a dead server keeps sending
 * into the dead flow until its dead-peer detection closes the connection, and its new
 * connection (a new source port, a new flow) is balanced over the live servers.
 *
 * Logs one JSON line per event: ready (first list installed), down, up, error.
 *
 * Usage: node health-checker.js --vip IP --port N --metrics-port N --server IP [--server IP...]
 *          [--interval MS] [--timeout MS] [--fall N] [--rise N] [--forget-flows yes|no]
 */
import { execFileSync, spawnSync } from "node:child_process";
import { request } from "node:http";
import { replaceServers } from "../fleet-balancer.js";
import { numberArg } from "./args.js";

const argv = process.argv.slice(2);
const servers: string[] = [];
const named = new Map<string, string>();
for (let i = 0; i < argv.length; i += 2) {
  const key = argv[i].replace(/^--/, "");
  const value = argv[i + 1];
  if (value === undefined) throw new Error(`--${key} needs a value`);
  if (key === "server") servers.push(value);
  else named.set(key, value);
}
const vip = named.get("vip");
if (!vip || servers.length === 0) throw new Error("--vip and at least one --server are required");
const config = { vip, port: numberArg(named, "port", 4567) };
const metricsPort = numberArg(named, "metrics-port", 9578);
const intervalMs = numberArg(named, "interval", 300);
const timeoutMs = numberArg(named, "timeout", 500);
const fall = numberArg(named, "fall", 2);
const rise = numberArg(named, "rise", 2);
const forget = (named.get("forget-flows") ?? "yes") !== "no";

function log(event: string, fields: Record<string, unknown> = {}): void {
  console.log(JSON.stringify({ event, at: Date.now(), ...fields }));
}

/** At least one shard, and every shard answered this scrape (`fake_tcp_shard_up{shard} 1`). */
function everyShardUp(body: string): boolean {
  const values = [...body.matchAll(/^fake_tcp_shard_up\{[^}]*\} (\S+)$/gm)].map((m) => m[1]);
  return values.length > 0 && values.every((v) => v === "1");
}

/** One check: resolves true when the server's metrics say every shard is alive. */
function check(server: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(
      { host: server, port: metricsPort, path: "/metrics", timeout: timeoutMs, agent: false },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          if (body.length < 1 << 20) body += chunk;
        });
        res.on("end", () => resolve(res.statusCode === 200 && everyShardUp(body)));
        res.on("error", () => resolve(false));
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", () => resolve(false));
    req.end();
  });
}

const state = servers.map((address) => ({ address, live: false, streak: 0 }));
let installed: string | null = null;

function install(): void {
  const live = state.filter((s) => s.live).map((s) => s.address);
  const key = live.join(",");
  if (key === installed) return;
  execFileSync("nft", ["-f", "-"], { input: replaceServers(config, live), stdio: "pipe" });
  if (installed === null) log("ready", { live });
  installed = key;
}

/** Deletes the balancer's flows to `server`: their next segment is balanced anew. */
function forgetFlows(server: string): number {
  // conntrack prints its summary on stderr, and exits 1 when nothing matched.
  const res = spawnSync(
    "conntrack",
    ["-D", "-p", "tcp", "--reply-src", server, "--reply-port-src", String(config.port)],
    { encoding: "utf8", timeout: 5_000 },
  );
  return Number(/(\d+) flow entries/.exec(`${res.stderr}${res.stdout}`)?.[1] ?? 0);
}

let checksDone = 0;

async function round(): Promise<void> {
  const results = await Promise.all(state.map((s) => check(s.address)));
  checksDone++;
  const wentDown: string[] = [];
  const cameUp: string[] = [];
  state.forEach((s, i) => {
    s.streak = results[i] === s.live ? 0 : s.streak + 1;
    if (s.streak < (s.live ? fall : rise)) return;
    s.live = !s.live;
    s.streak = 0;
    (s.live ? cameUp : wentDown).push(s.address);
  });
  // The first list goes in after `rise` rounds, when every healthy server has risen.
  if (installed === null ? checksDone < rise : cameUp.length + wentDown.length === 0) return;
  install();
  for (const server of cameUp) log("up", { server });
  for (const server of wentDown)
    log("down", { server, flowsForgotten: forget ? forgetFlows(server) : null });
}

let stopped = false;
for (const signal of ["SIGTERM", "SIGINT"] as const)
  process.on(signal, () => {
    stopped = true;
  });

while (!stopped) {
  const started = Date.now();
  try {
    await round();
  } catch (err) {
    log("error", { message: err instanceof Error ? err.message : String(err) });
  }
  await new Promise((r) => setTimeout(r, Math.max(0, intervalMs - (Date.now() - started))));
}
