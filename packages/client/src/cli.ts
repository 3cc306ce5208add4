/**
 * The client's command line: `fake-tcp-client --local PORT --remote HOST:PORT [options]`.
 */
import { availableParallelism } from "node:os";
import {
  type CommonConfig,
  commonConfig,
  type HostPort,
  integerOption,
  parseCommandLine,
  parseHostPort,
  parseListenAddress,
  type SocketAddress,
  stringOption,
  validateArguments,
} from "fake-tcp-common";

/** The client's validated configuration. */
export interface ClientConfig extends CommonConfig {
  /** Where the client listens for UDP (wildcard addresses allowed). */
  readonly local: SocketAddress;
  /** The server, resolved again for every new connection. */
  readonly remote: HostPort;
  /** New UDP peers admitted per second (and at once), over all shards. */
  readonly newPeerRate: number;
  /**
   * `--flows`: the most fake-TCP connections one UDP peer is spread over (a server of ours
   * only); undefined: chosen at start from the shard count (see `defaultFlows`).
   */
  readonly flows: number | undefined;
  /** `--flow-rate`: datagrams a peer sends and receives in a second before it is spread (0: at once). */
  readonly flowRate: number;
}

/**
 * Default of `--flow-rate`: 10,000 datagrams a second (~110 Mbit/s of 1400-byte datagrams),
 * about a tenth of what one shard carries: a peer below it gains nothing from more cores, and
 * thousands of quiet peers should not cost several connections each.
 */
export const DEFAULT_FLOW_RATE = 10_000;

/**
 * The default of `--flows` for `shards` shards on a host with `cores` cores: one flow per
 * shard (more flows than shards would add reordering and connections but no core), but no
 * more than half the cores: the UDP applications on the same hosts (WireGuard, a game) and
 * the kernel's share of every datagram need the rest. A spread flow costs more CPU in all
 * (every other batch crosses threads, two threads wake where one did), which only pays where
 * cores are idle: on 2 cores one flow carried more, with less CPU, at every rate measured
 * (docs/benchmarks.md, "One flow on two cores"). At most 4: each further flow adds a
 * connection per busy peer and a batch of reordering, while the UDP application behind the
 * server still reads one socket, so the gain levels off.
 */
export function defaultFlows(shards: number, cores: number): number {
  return Math.max(1, Math.min(shards, Math.floor(cores / 2), 4));
}

/** `--flows` as given, or its default for `shards` shards on this host. */
export function flowsFor(config: Pick<ClientConfig, "flows">, shards: number): number {
  return config.flows ?? defaultFlows(shards, availableParallelism());
}

/** Default of `--new-peer-rate`. */
export const DEFAULT_NEW_PEER_RATE = 1000;

export const CLIENT_PROGRAM = "fake-tcp-client";

const EPILOG = [
  "Every option can also be set by an environment variable: FAKE_TCP_ and the option name in",
  "capitals with _ for -, e.g. FAKE_TCP_REMOTE=vpn.example.com:4567, FAKE_TCP_AUTO_RULES=0.",
  "Host setup (unless --no-auto-rules): enables IPv4 (and IPv6) forwarding and adds the table",
  "inet fake_tcp_<tun> that masquerades the --tun-peer addresses; removed at exit.",
  "",
  "New UDP peers: at most --new-peer-rate a second get a connection. When the peer table is",
  "full (--max-connections), a newcomer takes the place of a peer silent for 30 s (or half",
  "--idle-timeout) or is dropped: an active peer is never pushed out.",
  "Reconnects: after a peer's connection fails, its next one waits (the first retry at once,",
  "then about 0.5 s doubling up to 5 s; at most 5 such retries a second over all peers), and",
  "is made only when the peer sends again. A connection that lasted 10 s with traffic from",
  "the server starts the schedule over.",
].join("\n");

/**
 * Parses and validates the client's arguments. Returns null when --help or --version was
 * printed. Throws a `UsageError` for bad input.
 */
export function parseClientArgs(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): ClientConfig | null {
  const args = parseCommandLine(
    argv,
    {
      program: CLIENT_PROGRAM,
      role: "client",
      usage:
        "$0 --local [IP:]PORT --remote HOST:PORT [options]\n$0 genkey   (prints a new key for --key-file)\n\nUDP on --local <-> fake TCP to --remote.",
      options: {
        local: {
          alias: "l",
          type: "string",
          demandOption: true,
          describe: "UDP listen address: PORT (= 127.0.0.1:PORT), IP:PORT or [IPv6]:PORT",
        },
        remote: {
          alias: "r",
          type: "string",
          demandOption: true,
          describe: "the fake-tcp-server (or phantun server): HOST:PORT, IP:PORT or [IPv6]:PORT",
        },
        "new-peer-rate": {
          requiresArg: true,
          default: String(DEFAULT_NEW_PEER_RATE),
          describe:
            "new UDP peers (source addresses) given a connection per second, and at once; the rest are dropped until there is room",
          group: "Tuning:",
        },
        flows: {
          requiresArg: true,
          defaultDescription: "min(shards, cores / 2, 4)",
          describe:
            "most fake-TCP connections one busy UDP peer is spread over, each in another shard on both ends (only with a server of ours; a phantun server always gets one)",
          group: "Tuning:",
        },
        "flow-rate": {
          requiresArg: true,
          default: String(DEFAULT_FLOW_RATE),
          describe:
            "datagrams a UDP peer sends and receives within one second before its further --flows connections open (0: as soon as the first is up)",
          group: "Tuning:",
        },
      },
      examples: [
        ["$0 --local 1234 --remote vpn.example.com:4567", "UDP on 127.0.0.1:1234 to the server"],
        [
          "$0 --local [::]:51820 --remote 203.0.113.7:4567 -4",
          "UDP on every local address, IPv4 tunnel only",
        ],
        [
          "FAKE_TCP_REMOTE=vpn.example.com:4567 $0 --local 1234 --no-auto-rules",
          "remote from the environment, host rules managed by hand",
        ],
        [
          "$0 --local 1234 --remote vpn.example.com:443 --key-file tunnel.key",
          "keyed: the server's key file, copied here",
        ],
      ],
      epilog: EPILOG,
    },
    env,
  );
  if (!args) return null;
  return validateArguments(args, () => {
    const common = commonConfig(args);
    const local = parseListenAddress(stringOption(args, "local", "--local") ?? "", "--local");
    const remote = parseHostPort(stringOption(args, "remote", "--remote") ?? "", "--remote");
    const newPeerRate = integerOption(args, "newPeerRate", "--new-peer-rate", 1, 1_000_000);
    const flows =
      args.flows === undefined ? undefined : integerOption(args, "flows", "--flows", 1, 16);
    const flowRate = integerOption(args, "flowRate", "--flow-rate", 0, 10_000_000);
    return { ...common, local, remote, newPeerRate, flows, flowRate };
  });
}
