/**
 * The server's command line: `fake-tcp-server --listen PORT --remote HOST:PORT [options]`.
 * phantun's `--local` is accepted as an alias of `--listen`.
 */
import {
  booleanOption,
  type CommonConfig,
  commonConfig,
  DEFAULT_SHARE_QUEUE,
  type HostPort,
  integerOption,
  parseCommandLine,
  parseHostPort,
  parsePort,
  stringOption,
  UsageError,
  validateArguments,
} from "fake-tcp-common";

/** The server's validated configuration. */
export interface ServerConfig extends CommonConfig {
  /** The public TCP port clients connect to (DNAT-ed to the stack). */
  readonly listen: number;
  /** The UDP application every connection is relayed to. */
  readonly remote: HostPort;
  /** `--share`: the port is shared with the host's own TCP service (needs `--key-file`). */
  readonly share: boolean;
  /** `--share-queue`: the NFQUEUE number of the share verdicts. */
  readonly shareQueue: number;
  /**
   * `--max-connections-per-source`: most connections from one IPv4 address or IPv6 /64, over
   * all shards (each shard admits its share, rounded up).
   */
  readonly maxConnectionsPerSource: number;
}

/**
 * The per-source bound when none is given: a quarter of `--max-connections` (rounded up), so
 * that filling the table takes at least four sources.
 */
export function defaultMaxConnectionsPerSource(maxConnections: number): number {
  return Math.ceil(maxConnections / 4);
}

export const SERVER_PROGRAM = "fake-tcp-server";

const EPILOG = [
  "Every option can also be set by an environment variable: FAKE_TCP_ and the option name in",
  "capitals with _ for -, e.g. FAKE_TCP_LISTEN=4567, FAKE_TCP_REMOTE=127.0.0.1:51820.",
  "Host setup (unless --no-auto-rules): enables IPv4 (and IPv6) forwarding where off and adds the",
  "table inet fake_tcp_<tun> that rewrites TCP port --listen on the host's own addresses to the",
  "--tun-peer addresses (untracked); all of it undone at exit.",
].join("\n");

/**
 * Parses and validates the server's arguments. Returns null when --help or --version was
 * printed. Throws a `UsageError` for bad input.
 */
export function parseServerArgs(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): ServerConfig | null {
  const args = parseCommandLine(
    argv,
    {
      program: SERVER_PROGRAM,
      role: "server",
      usage:
        "$0 --listen PORT --remote HOST:PORT [options]\n$0 genkey   (prints a new key for --key-file)\n\nfake TCP on port --listen <-> UDP to --remote, one UDP socket per connection.",
      options: {
        listen: {
          alias: "local",
          type: "string",
          demandOption: true,
          describe: "TCP port clients connect to (--local is accepted, as in phantun)",
        },
        remote: {
          alias: "r",
          type: "string",
          demandOption: true,
          describe: "UDP application to relay to: IP:PORT, [IPv6]:PORT or HOST:PORT",
        },
        share: {
          type: "boolean",
          default: false,
          describe:
            "share --listen with a TCP service of this host (nginx on 443, sshd on 22): only connections whose SYN carries the key's token reach the tunnel, all others the service (needs --key-file, and iptables-nft for the NFQUEUE rule)",
        },
        "max-connections-per-source": {
          requiresArg: true,
          defaultDescription: "a quarter of --max-connections",
          describe:
            "most connections from one client address (IPv4 address or IPv6 /64); raise it when many clients share one NAT address",
          group: "Tuning:",
        },
        "share-queue": {
          requiresArg: true,
          default: String(DEFAULT_SHARE_QUEUE),
          describe: "NFQUEUE number of --share's verdicts (one per instance)",
        },
      },
      examples: [
        ["$0 --listen 4567 --remote 127.0.0.1:51820", "relay port 4567 to a local WireGuard"],
        [
          "$0 --local 4567 --remote 127.0.0.1:51820 --handshake-packet hello.bin",
          "phantun-style flags, with a handshake packet",
        ],
        [
          "$0 genkey > tunnel.key && chmod 600 tunnel.key",
          "make a key for keyed mode (copy the file to the client too)",
        ],
        [
          "$0 --listen 443 --remote 127.0.0.1:51820 --key-file tunnel.key",
          "keyed: answers only clients with the key, silent to probes",
        ],
        [
          "$0 --listen 443 --remote 127.0.0.1:51820 --key-file tunnel.key --share",
          "keyed clients get the tunnel, everyone else this host's web server on 443",
        ],
      ],
      epilog: EPILOG,
    },
    env,
  );
  if (!args) return null;
  return validateArguments(args, () => {
    const common = commonConfig(args);
    const listenText = (stringOption(args, "listen", "--listen") ?? "").trim();
    // phantun's server takes a bare port; accept "0.0.0.0:PORT"/"[::]:PORT" too for convenience.
    const portText = /^(0\.0\.0\.0:|\[::\]:)\d+$/.test(listenText)
      ? listenText.slice(listenText.lastIndexOf(":") + 1)
      : listenText;
    const listen = parsePort(portText, "--listen");
    const remote = parseHostPort(stringOption(args, "remote", "--remote") ?? "", "--remote");
    const share = booleanOption(args, "share", "--share");
    if (share && common.key === undefined) {
      throw new UsageError(
        "--share needs --key-file: only keyed SYNs can be told from the shared service's clients",
      );
    }
    const shareQueue = integerOption(args, "shareQueue", "--share-queue", 0, 65535);
    const maxConnectionsPerSource = perSourceOption(args, common.maxConnections);
    return { ...common, listen, remote, share, shareQueue, maxConnectionsPerSource };
  });
}

/** `--max-connections-per-source`: at most `--max-connections` (more could never be used). */
function perSourceOption(args: Record<string, unknown>, maxConnections: number): number {
  if (stringOption(args, "maxConnectionsPerSource", "--max-connections-per-source") === undefined)
    return defaultMaxConnectionsPerSource(maxConnections);
  const value = integerOption(
    args,
    "maxConnectionsPerSource",
    "--max-connections-per-source",
    1,
    1_000_000,
  );
  if (value > maxConnections) {
    throw new UsageError(
      `--max-connections-per-source: ${value} is above --max-connections (${maxConnections}); raise --max-connections or lower this`,
    );
  }
  return value;
}
