/**
 * The command line both programs share: option definitions (yargs, every option also from a
 * `FAKE_TCP_*` environment variable), and their validation into a typed configuration with
 * one-line errors.
 */
import { availableParallelism } from "node:os";
import { UDP_MAX_SEGMENTS } from "fake-tcp-tun/udp";
import yargs, { type Options } from "yargs";
import { parseIPv4, parseIPv6, parseListenAddress, type SocketAddress } from "./address.js";
import {
  CONFIG_OPTION,
  configFileValues,
  configOptionDefinition,
  markConfigFileSources,
} from "./config-file.js";
import { UsageError } from "./errors.js";
import { readKeyFile } from "./key-file.js";
import { LOG_LEVELS, type LogLevel } from "./logger.js";
import { DEFAULT_TIME_SLICE_MS, MAX_TIME_SLICE_MS, MIN_TIME_SLICE_MS } from "./time-slice.js";
import { DEFAULT_UDP_RUN } from "./udp-run-writer.js";
import { programVersion } from "./version.js";

/** Which program is parsing: the defaults of the TUN addresses differ. */
export type Role = "client" | "server";

/** Default TUN names and addresses ("local" = OS side, "peer" = the stack's own address). */
export const ROLE_DEFAULTS = {
  client: {
    tun: "ftc0",
    tunLocal: "192.168.200.1",
    tunPeer: "192.168.200.2",
    tunLocal6: "fcc8::1",
    tunPeer6: "fcc8::2",
  },
  server: {
    tun: "fts0",
    tunLocal: "192.168.201.1",
    tunPeer: "192.168.201.2",
    tunLocal6: "fcc9::1",
    tunPeer6: "fcc9::2",
  },
} as const;

/** Numeric defaults shared by both programs (seconds unless named otherwise). */
export const DEFAULTS = {
  mtu: 1500,
  idleTimeoutSeconds: 180,
  keepaliveSeconds: 10,
  maxConnections: 4096,
  statsIntervalSeconds: 60,
  logLevel: "info" as LogLevel,
};

/** An address pair of the TUN device. */
export interface TunAddressPair {
  /** The OS side of the TUN (`--tun-local`). */
  readonly local: string;
  /** The stack's own address (`--tun-peer`): connections leave from / arrive at it. */
  readonly peer: string;
}

/** The validated options both programs share. */
export interface CommonConfig {
  readonly tun: string;
  readonly ipv4: TunAddressPair;
  /** Undefined with `-4/--ipv4-only`. */
  readonly ipv6: TunAddressPair | undefined;
  readonly ipv4Only: boolean;
  readonly mtu: number;
  readonly handshakePacketPath: string | undefined;
  readonly queues: number;
  readonly idleTimeoutMs: number;
  /** 0 disables keepalives. */
  readonly keepaliveMs: number;
  readonly maxConnections: number;
  /** 0 disables the periodic stats line (SIGUSR1 still works). */
  readonly statsIntervalMs: number;
  readonly logLevel: LogLevel;
  readonly autoRules: boolean;
  /**
   * Open the TUN with a virtio header so that the kernel completes the TCP checksum (the
   * stack writes only the pseudo-header seed). Off only for troubleshooting.
   */
  readonly checksumOffload: boolean;
  /**
   * Write runs of datagrams as one packet that the kernel segments (needs checksumOffload).
   * Off: every segment is written alone and so keeps the IPv4 ID 0 the stack writes (within a
   * run the kernel numbers the IDs 0, 1, 2...).
   */
  readonly segmentationOffload: boolean;
  /**
   * Most datagrams per segmented send towards a UDP peer (`--udp-run`): the burst the
   * receiving application's socket buffer must take at once. 1: one datagram per send.
   */
  readonly udpRun: number;
  /**
   * Yield the core after each send to a UDP peer (`--udp-yield`, default off), so that a
   * receiver on this host that the send woke can read before the next send.
   */
  readonly udpYield: boolean;
  /**
   * Time slice each shard thread asks the kernel for, in ms (`--time-slice`; 0: the kernel's
   * default). See time-slice.ts for why a long one helps local receivers.
   */
  readonly timeSliceMs: number;
  /** Keyed mode (`--key-file`): the file's path and the 32-byte key read from it at parse time. */
  readonly keyFile: string | undefined;
  readonly key: Uint8Array | undefined;
  /** Where the Prometheus endpoint listens (`--metrics`); undefined: no endpoint. */
  readonly metrics: SocketAddress | undefined;
}

const TUN_GROUP = "Tunnel device:";
const TUNING_GROUP = "Tuning:";
const OPS_GROUP = "Operation:";

/** yargs definitions of the options both programs share, with role-specific defaults. */
export function commonOptionDefinitions(role: Role): Record<string, Options> {
  const d = ROLE_DEFAULTS[role];
  return {
    tun: {
      type: "string",
      default: d.tun,
      describe: "TUN device name (also names the nft table: inet fake_tcp_<tun>)",
      group: TUN_GROUP,
    },
    "tun-local": {
      type: "string",
      default: d.tunLocal,
      describe: "IPv4 address of the OS side of the TUN",
      group: TUN_GROUP,
    },
    "tun-peer": {
      type: "string",
      default: d.tunPeer,
      describe: `IPv4 address of the fake-TCP stack (the ${role === "client" ? "source of connections, masqueraded" : "DNAT target"})`,
      group: TUN_GROUP,
    },
    "tun-local6": {
      type: "string",
      default: d.tunLocal6,
      describe: "IPv6 address of the OS side of the TUN",
      group: TUN_GROUP,
    },
    "tun-peer6": {
      type: "string",
      default: d.tunPeer6,
      describe: "IPv6 address of the fake-TCP stack",
      group: TUN_GROUP,
    },
    "ipv4-only": {
      alias: "4",
      type: "boolean",
      default: false,
      describe:
        role === "client"
          ? "use IPv4 only: resolve --remote to A records, no IPv6 on the TUN"
          : "use IPv4 only: no IPv6 on the TUN, no IPv6 rules",
      group: TUN_GROUP,
    },
    mtu: {
      requiresArg: true,
      default: String(DEFAULTS.mtu),
      describe: "MTU of the TUN device (largest IP packet)",
      group: TUN_GROUP,
    },
    "handshake-packet": {
      type: "string",
      describe: "file sent as the first datagram of every connection (must fit the MTU)",
      group: TUNING_GROUP,
    },
    queues: {
      requiresArg: true,
      default: String(availableParallelism()),
      defaultDescription: "number of cores",
      describe: "TUN queues",
      group: TUNING_GROUP,
    },
    "idle-timeout": {
      requiresArg: true,
      default: String(DEFAULTS.idleTimeoutSeconds),
      describe: "seconds without a packet after which a connection is closed",
      group: TUNING_GROUP,
    },
    keepalive: {
      requiresArg: true,
      default: String(DEFAULTS.keepaliveSeconds),
      describe: "seconds between keepalive ACKs on an idle connection (0: off)",
      group: TUNING_GROUP,
    },
    "max-connections": {
      requiresArg: true,
      default: String(DEFAULTS.maxConnections),
      describe: "most connections at once",
      group: TUNING_GROUP,
    },
    "auto-rules": {
      type: "boolean",
      default: true,
      describe:
        "enable forwarding and add nftables rules at start, remove them at exit (--no-auto-rules: off)",
      group: OPS_GROUP,
    },
    "checksum-offload": {
      type: "boolean",
      default: true,
      describe:
        "let the kernel complete TCP checksums (virtio header on the TUN); --no-checksum-offload: compute them in the program (and no segmentation offload)",
      group: TUNING_GROUP,
    },
    "segmentation-offload": {
      type: "boolean",
      default: true,
      describe:
        "write runs of datagrams as one packet the kernel cuts into the same segments; --no-segmentation-offload: one write per segment, IPv4 ID 0 on every packet",
      group: TUNING_GROUP,
    },
    "udp-run": {
      requiresArg: true,
      default: String(DEFAULT_UDP_RUN),
      describe: `most datagrams per segmented send to a UDP peer (1-${UDP_MAX_SEGMENTS}; 1: one datagram per send): smaller bursts suit receivers with small socket buffers, at some CPU`,
      group: TUNING_GROUP,
    },
    "udp-yield": {
      type: "boolean",
      default: false,
      describe:
        "after each send to a UDP peer, yield the core (sched_yield) so that a receiver on this host that the send woke reads first: fewer drops at receivers with small socket buffers, at more CPU on a busy host",
      group: TUNING_GROUP,
    },
    "time-slice": {
      requiresArg: true,
      default: String(DEFAULT_TIME_SLICE_MS),
      describe: `time slice in ms each shard thread asks the kernel for (${MIN_TIME_SLICE_MS}-${MAX_TIME_SLICE_MS}; 0: the kernel's default; Linux >= 6.12): a long one (10) lets receivers on this host that a send woke run at once, but delays the programs' own wake-ups`,
      group: TUNING_GROUP,
    },
    "key-file": {
      type: "string",
      describe: `keyed mode: FILE holds a key that both ends share (made by \`${role === "client" ? "fake-tcp-client" : "fake-tcp-server"} genkey\`); the ${role === "client" ? "client then talks only to a server with the same key" : "server then answers only clients with the same key and is silent to anything else"}, not to phantun`,
      group: OPS_GROUP,
    },
    "log-level": {
      type: "string",
      default: DEFAULTS.logLevel,
      describe: `log level: ${LOG_LEVELS.join(", ")}`,
      group: OPS_GROUP,
    },
    "stats-interval": {
      requiresArg: true,
      default: String(DEFAULTS.statsIntervalSeconds),
      describe: "seconds between counter lines at info level (0: off; SIGUSR1 logs them too)",
      group: OPS_GROUP,
    },
    metrics: {
      type: "string",
      describe:
        "serve Prometheus metrics at http://IP:PORT/metrics (PORT alone: 127.0.0.1:PORT); off unless given",
      group: OPS_GROUP,
    },
  };
}

/** What the program's own options look like to {@link parseCommandLine}. */
export interface CommandLineSpec {
  readonly program: string;
  readonly role: Role;
  readonly usage: string;
  readonly options: Record<string, Options>;
  readonly examples: readonly (readonly [string, string])[];
  readonly epilog: string;
}

/** Result of parsing: the raw option values, or null when --help/--version was printed. */
export type RawArguments = Record<string, unknown>;

/** Prefix of the environment variables that stand in for options: `FAKE_TCP_TUN_LOCAL`. */
export const ENV_PREFIX = "FAKE_TCP";

/** The environment variable that stands in for option `name` (`tun-local` -> FAKE_TCP_TUN_LOCAL). */
export function envName(name: string): string {
  return `${ENV_PREFIX}_${name.toUpperCase().replace(/-/g, "_")}`;
}

/**
 * Values of the `FAKE_TCP_*` variables that name a known option. Done here rather than by
 * yargs' `.env()` so that an unrelated `FAKE_TCP_*` variable is not an "unknown option".
 */
function optionsFromEnv(options: Record<string, Options>, env: NodeJS.ProcessEnv) {
  const values: Record<string, string | boolean> = {};
  for (const [name, option] of Object.entries(options)) {
    const raw = env[envName(name)];
    if (raw === undefined || raw === "") continue;
    if (option.type === "boolean") {
      if (/^(1|true|yes|on)$/i.test(raw)) values[name] = true;
      else if (/^(0|false|no|off)$/i.test(raw)) values[name] = false;
      else
        throw new UsageError(`${envName(name)}: "${raw}" is not a boolean (use 1/0, true/false)`);
    } else {
      values[name] = raw;
    }
  }
  return values;
}

/** Turns yargs' wording into ours: options are named with their dashes. */
function rephraseYargsMessage(message: string): string {
  const flags = (list: string) =>
    list
      .split(",")
      .map((name) => name.trim())
      .map((name) => (name.length === 1 ? `-${name}` : `--${name}`))
      .join(", ");
  const unknown = /^Unknown arguments?: (.*)$/s.exec(message);
  if (unknown) return `unknown option ${flags(unknown[1])}`;
  const missing = /^Missing required arguments?: (.*)$/s.exec(message);
  if (missing) return `missing required option ${flags(missing[1])}`;
  const noValue = /^Not enough arguments following: (.*)$/s.exec(message);
  if (noValue) return `option ${flags(noValue[1])} needs a value`;
  return message.replace(/\n/g, "; ") || "invalid arguments";
}

/**
 * Parses `argv` (and `FAKE_TCP_*` environment variables, which the command line overrides)
 * with yargs. Prints help or the version and returns null for --help/--version. Throws a
 * `UsageError` for unknown options, missing required options or bad choices.
 */
export function parseCommandLine(
  argv: readonly string[],
  spec: CommandLineSpec,
  env: NodeJS.ProcessEnv = process.env,
  version = programVersion(),
): RawArguments | null {
  const own: Record<string, Options> = {};
  for (const [name, option] of Object.entries(spec.options)) {
    own[name] = { group: "Main:", ...option };
  }
  const all = {
    ...own,
    ...commonOptionDefinitions(spec.role),
    [CONFIG_OPTION]: configOptionDefinition,
  };
  for (const option of Object.values(all)) {
    if (option.type === "string") option.requiresArg = true;
  }
  // Precedence: command line, then environment, then the file.
  const file = configFileValues(argv, env, envName(CONFIG_OPTION), all);
  const fromEnv = optionsFromEnv(all, env);
  const parser = yargs([...argv])
    .scriptName(spec.program)
    .usage(spec.usage)
    .options(all)
    .config({ ...file.values, ...fromEnv })
    .strictOptions()
    // Numbers stay text: the validators below give precise errors ("0x10" is not a port).
    .parserConfiguration({
      "duplicate-arguments-array": true,
      "strip-dashed": true,
      "parse-numbers": false,
      "parse-positional-numbers": false,
    })
    .help("help")
    .alias("help", "h")
    .version(version)
    .epilog(spec.epilog)
    .wrap(Math.min(110, process.stdout.columns ?? 100))
    .exitProcess(false)
    .fail((msg, err) => {
      throw new UsageError(`${rephraseYargsMessage(msg ?? err?.message ?? "")}; see --help`);
    });
  for (const [command, description] of spec.examples) parser.example(command, description);
  const parsed = parser.parseSync() as RawArguments;
  if (parsed.help === true || parsed.version === true) return null;
  markConfigFileSources(parsed, file.file, file.values, fromEnv);
  return parsed;
}

/** Reads one string option, refusing repeated flags. */
export function stringOption(args: RawArguments, key: string, flag: string): string | undefined {
  const value = args[key];
  if (value === undefined || value === null) return undefined;
  if (Array.isArray(value)) throw new UsageError(`${flag} was given more than once; give it once`);
  if (typeof value === "boolean") {
    throw new UsageError(`${flag} needs a value; see --help`);
  }
  return String(value);
}

/** Reads one boolean option, refusing repeated flags. */
export function booleanOption(args: RawArguments, key: string, flag: string): boolean {
  const value = args[key];
  if (Array.isArray(value)) throw new UsageError(`${flag} was given more than once; give it once`);
  return value === true;
}

/** Parses an integer option within [min, max]. */
export function integerOption(
  args: RawArguments,
  key: string,
  flag: string,
  min: number,
  max: number,
): number {
  const text = stringOption(args, key, flag) ?? "";
  if (!/^\d+$/.test(text.trim()) || Number(text) < min || Number(text) > max) {
    throw new UsageError(`${flag}: "${text}" is not a whole number from ${min} to ${max}`);
  }
  return Number(text);
}

/** Parses a duration in seconds (decimals allowed) into milliseconds, within [min, max] s. */
export function secondsOption(
  args: RawArguments,
  key: string,
  flag: string,
  min: number,
  max: number,
): number {
  const text = (stringOption(args, key, flag) ?? "").trim();
  const seconds = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text) || seconds < min || seconds > max) {
    throw new UsageError(`${flag}: "${text}" is not a number of seconds from ${min} to ${max}`);
  }
  return Math.round(seconds * 1000);
}

/**
 * Checks a TUN interface name: what the kernel accepts (at most 15 bytes, not "." or "..")
 * restricted to letters, digits, "_", "-" and ".". The name goes into nft rules (quoted) and
 * names the nft table, so a quote, a "#" or a space must never reach them; "%" would make the
 * kernel pick a number.
 */
export function parseTunName(text: string): string {
  if (
    text.length === 0 ||
    text.length > 15 ||
    text === "." ||
    text === ".." ||
    !/^[A-Za-z0-9_.-]+$/.test(text)
  ) {
    throw new UsageError(
      `--tun: ${JSON.stringify(text)} is not a valid interface name (1-15 letters, digits, "_", "-" or ".")`,
    );
  }
  return text;
}

/** `--key-file`: the path and the key it holds (read now, so that a bad file stops the start). */
function keyOption(args: RawArguments): Pick<CommonConfig, "keyFile" | "key"> {
  const keyFile = stringOption(args, "keyFile", "--key-file");
  return { keyFile, key: keyFile === undefined ? undefined : readKeyFile(keyFile) };
}

/** Validates the shared options into a {@link CommonConfig}. */
export function commonConfig(args: RawArguments): CommonConfig {
  const ipv4Only = booleanOption(args, "ipv4Only", "-4/--ipv4-only");
  const ipv4 = {
    local: parseIPv4(stringOption(args, "tunLocal", "--tun-local") ?? "", "--tun-local"),
    peer: parseIPv4(stringOption(args, "tunPeer", "--tun-peer") ?? "", "--tun-peer"),
  };
  if (ipv4.local === ipv4.peer) {
    throw new UsageError(
      "--tun-local and --tun-peer must differ (OS side and stack side of the TUN)",
    );
  }
  let ipv6: TunAddressPair | undefined;
  if (!ipv4Only) {
    ipv6 = {
      local: parseIPv6(stringOption(args, "tunLocal6", "--tun-local6") ?? "", "--tun-local6"),
      peer: parseIPv6(stringOption(args, "tunPeer6", "--tun-peer6") ?? "", "--tun-peer6"),
    };
    if (ipv6.local === ipv6.peer) {
      throw new UsageError(
        "--tun-local6 and --tun-peer6 must differ (OS side and stack side of the TUN)",
      );
    }
  }
  const logLevel = stringOption(args, "logLevel", "--log-level") as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new UsageError(`--log-level: "${logLevel}" is not one of ${LOG_LEVELS.join(", ")}`);
  }
  const mtu = integerOption(args, "mtu", "--mtu", 576, 65535);
  if (ipv6 && mtu < 1280) {
    throw new UsageError(`--mtu: ${mtu} is below 1280, the IPv6 minimum; use a larger --mtu or -4`);
  }
  return {
    tun: parseTunName(stringOption(args, "tun", "--tun") ?? ""),
    ipv4,
    ipv6,
    ipv4Only,
    mtu,
    handshakePacketPath: stringOption(args, "handshakePacket", "--handshake-packet"),
    queues: integerOption(args, "queues", "--queues", 1, 256),
    idleTimeoutMs: secondsOption(args, "idleTimeout", "--idle-timeout", 1, 86_400),
    keepaliveMs: secondsOption(args, "keepalive", "--keepalive", 0, 86_400),
    maxConnections: integerOption(args, "maxConnections", "--max-connections", 1, 1_000_000),
    statsIntervalMs: secondsOption(args, "statsInterval", "--stats-interval", 0, 86_400),
    logLevel,
    autoRules: booleanOption(args, "autoRules", "--auto-rules"),
    checksumOffload: booleanOption(args, "checksumOffload", "--checksum-offload"),
    segmentationOffload: booleanOption(args, "segmentationOffload", "--segmentation-offload"),
    udpRun: integerOption(args, "udpRun", "--udp-run", 1, UDP_MAX_SEGMENTS),
    udpYield: booleanOption(args, "udpYield", "--udp-yield"),
    timeSliceMs: timeSliceOption(args),
    ...keyOption(args),
    metrics: metricsAddress(stringOption(args, "metrics", "--metrics")),
  };
}

/** `--time-slice`: milliseconds, 0 (the kernel's default) or 0.1-100 (what the kernel takes). */
function timeSliceOption(args: RawArguments): number {
  const text = (stringOption(args, "timeSlice", "--time-slice") ?? "").trim();
  const ms = Number(text);
  if (
    !/^\d+(\.\d+)?$/.test(text) ||
    (ms !== 0 && ms < MIN_TIME_SLICE_MS) ||
    ms > MAX_TIME_SLICE_MS
  ) {
    throw new UsageError(
      `--time-slice: "${text}" is not 0 or a number of milliseconds from ${MIN_TIME_SLICE_MS} to ${MAX_TIME_SLICE_MS}`,
    );
  }
  return ms;
}

/** `--metrics`: an IP address and port to listen on, or nothing. */
function metricsAddress(text: string | undefined): SocketAddress | undefined {
  return text === undefined ? undefined : parseListenAddress(text, "--metrics");
}
