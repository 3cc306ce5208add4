/**
 * The client's command line: `fake-tcp-client --local PORT --remote HOST:PORT [options]`.
 */
import {
  type CommonConfig,
  commonConfig,
  type HostPort,
  parseCommandLine,
  parseHostPort,
  parseListenAddress,
  type SocketAddress,
  stringOption,
} from "fake-tcp-common";

/** The client's validated configuration. */
export interface ClientConfig extends CommonConfig {
  /** Where the client listens for UDP (wildcard addresses allowed). */
  readonly local: SocketAddress;
  /** The server, resolved again for every new connection. */
  readonly remote: HostPort;
}

export const CLIENT_PROGRAM = "fake-tcp-client";

const EPILOG = [
  "Every option can also be set by an environment variable: FAKE_TCP_ and the option name in",
  "capitals with _ for -, e.g. FAKE_TCP_REMOTE=vpn.example.com:4567, FAKE_TCP_AUTO_RULES=0.",
  "Host setup (unless --no-auto-rules): enables IPv4 (and IPv6) forwarding and adds the table",
  "inet fake_tcp_<tun> that masquerades the --tun-peer addresses; removed at exit.",
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
        "$0 --local [IP:]PORT --remote HOST:PORT [options]\n\nUDP on --local <-> fake TCP to --remote.",
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
      ],
      epilog: EPILOG,
    },
    env,
  );
  if (!args) return null;
  const common = commonConfig(args);
  const local = parseListenAddress(stringOption(args, "local", "--local") ?? "", "--local");
  const remote = parseHostPort(stringOption(args, "remote", "--remote") ?? "", "--remote");
  return { ...common, local, remote };
}
