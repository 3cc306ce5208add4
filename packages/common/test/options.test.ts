import { describe, expect, it } from "vitest";
import { UsageError } from "../src/errors.js";
import { type CommandLineSpec, commonConfig, envName, parseCommandLine } from "../src/options.js";
import { DEFAULT_UDP_RUN } from "../src/udp-run-writer.js";

const spec: CommandLineSpec = {
  program: "test-program",
  role: "client",
  usage: "$0 --remote X",
  options: { remote: { type: "string", demandOption: true, describe: "remote" } },
  examples: [],
  epilog: "",
};

function parse(argv: string[], env: NodeJS.ProcessEnv = {}) {
  const raw = parseCommandLine(argv, spec, env);
  if (!raw) throw new Error("unexpected help");
  return { raw, config: commonConfig(raw) };
}

describe("shared options", () => {
  it("applies the wire spec's defaults for the role", () => {
    const { config } = parse(["--remote", "x:1"]);
    expect(config.tun).toBe("ftc0");
    expect(config.ipv4).toEqual({ local: "192.168.200.1", peer: "192.168.200.2" });
    expect(config.ipv6).toEqual({ local: "fcc8::1", peer: "fcc8::2" });
    expect(config.idleTimeoutMs).toBe(180_000);
    expect(config.autoRules).toBe(true);
    expect(config.queues).toBeGreaterThanOrEqual(1);
    const server = parseCommandLine(["--remote", "x:1"], { ...spec, role: "server" }, {});
    expect(commonConfig(server!).ipv4).toEqual({ local: "192.168.201.1", peer: "192.168.201.2" });
    expect(commonConfig(server!).ipv6).toEqual({ local: "fcc9::1", peer: "fcc9::2" });
  });

  it("reads every option from FAKE_TCP_* variables, the command line winning", () => {
    const { raw, config } = parse(["--tun", "cli0"], {
      FAKE_TCP_REMOTE: "env.example:9",
      FAKE_TCP_TUN: "env0",
      FAKE_TCP_TUN_PEER: "10.9.0.2",
      FAKE_TCP_AUTO_RULES: "false",
      FAKE_TCP_IDLE_TIMEOUT: "2.5",
      FAKE_TCP_UNRELATED: "ignored",
    });
    expect(raw.remote).toBe("env.example:9");
    expect(config.tun).toBe("cli0");
    expect(config.ipv4.peer).toBe("10.9.0.2");
    expect(config.autoRules).toBe(false);
    expect(config.idleTimeoutMs).toBe(2500);
    expect(envName("tun-local6")).toBe("FAKE_TCP_TUN_LOCAL6");
  });

  it("checksum offload is on by default, off with --no-checksum-offload or FAKE_TCP_CHECKSUM_OFFLOAD=0", () => {
    expect(parse(["--remote", "x:1"]).config.checksumOffload).toBe(true);
    expect(parse(["--remote", "x:1", "--no-checksum-offload"]).config.checksumOffload).toBe(false);
    expect(
      parse(["--remote", "x:1"], { FAKE_TCP_CHECKSUM_OFFLOAD: "0" }).config.checksumOffload,
    ).toBe(false);
  });

  it("segmentation offload is on by default, off with --no-segmentation-offload or FAKE_TCP_SEGMENTATION_OFFLOAD=0", () => {
    expect(parse(["--remote", "x:1"]).config.segmentationOffload).toBe(true);
    expect(parse(["--remote", "x:1", "--no-segmentation-offload"]).config.segmentationOffload).toBe(
      false,
    );
    expect(
      parse(["--remote", "x:1"], { FAKE_TCP_SEGMENTATION_OFFLOAD: "0" }).config.segmentationOffload,
    ).toBe(false);
  });

  it("--udp-run caps datagrams per segmented UDP send: default, flag, variable, bad values", () => {
    expect(parse(["--remote", "x:1"]).config.udpRun).toBe(DEFAULT_UDP_RUN);
    expect(parse(["--remote", "x:1", "--udp-run", "8"]).config.udpRun).toBe(8);
    expect(parse(["--remote", "x:1"], { FAKE_TCP_UDP_RUN: "1" }).config.udpRun).toBe(1);
    for (const bad of ["0", "65", "8.5", "x"]) {
      expect(() => parse(["--remote", "x:1", "--udp-run", bad])).toThrow(
        /--udp-run: .* is not a whole number from 1 to 64/,
      );
    }
  });

  it("--udp-yield is off by default, on with --udp-yield or FAKE_TCP_UDP_YIELD=1", () => {
    expect(parse(["--remote", "x:1"]).config.udpYield).toBe(false);
    expect(parse(["--remote", "x:1", "--udp-yield"]).config.udpYield).toBe(true);
    expect(parse(["--remote", "x:1"], { FAKE_TCP_UDP_YIELD: "1" }).config.udpYield).toBe(true);
    expect(parse(["--remote", "x:1", "--no-udp-yield"]).config.udpYield).toBe(false);
  });

  it("--time-slice is 0 (the kernel's default) unless given, 0.1-100 ms, also as FAKE_TCP_TIME_SLICE", () => {
    expect(parse(["--remote", "x:1"]).config.timeSliceMs).toBe(0);
    expect(parse(["--remote", "x:1", "--time-slice", "10"]).config.timeSliceMs).toBe(10);
    expect(parse(["--remote", "x:1", "--time-slice", "0.1"]).config.timeSliceMs).toBe(0.1);
    expect(parse(["--remote", "x:1"], { FAKE_TCP_TIME_SLICE: "100" }).config.timeSliceMs).toBe(100);
    for (const bad of ["101", "-1", "0.05", "x", ""]) {
      expect(() => parse(["--remote", "x:1", "--time-slice", bad])).toThrow(
        /--time-slice: .* is not 0 or a number of milliseconds from 0.1 to 100/,
      );
    }
  });

  it("-4 drops IPv6 and --no-auto-rules turns host setup off", () => {
    const { config } = parse(["--remote", "x:1", "-4", "--no-auto-rules"]);
    expect(config.ipv6).toBeUndefined();
    expect(config.ipv4Only).toBe(true);
    expect(config.autoRules).toBe(false);
  });

  it.each([
    [["--bogus"], /unknown option --bogus/],
    [[], /missing required option --remote/],
    [["--queues", "0"], /--queues: "0"/],
    [["--queues", "two"], /--queues: "two"/],
    [["--idle-timeout", "-1"], /--idle-timeout/],
    [["--keepalive", "x"], /--keepalive/],
    [["--max-connections", "0"], /--max-connections/],
    [["--mtu", "1000"], /below 1280/],
    [["--tun-local", "300.1.1.1"], /--tun-local: "300.1.1.1" is not an IPv4/],
    [["--tun-peer6", "nope"], /--tun-peer6/],
    [["--tun-local", "10.0.0.1", "--tun-peer", "10.0.0.1"], /must differ/],
    [["--tun", "a/b"], /not a valid interface name/],
    [["--tun", "sixteen-chars-xx"], /not a valid interface name/],
    // A quote would end the name inside the nft rules ('x"accept#' dropped the masquerade).
    [["--tun", 'x"accept#'], /--tun: "x\\"accept#" is not a valid interface name/],
    [["--tun", "a b"], /not a valid interface name/],
    [["--tun", "tun%d"], /not a valid interface name/],
    [["--tun", "a;b"], /not a valid interface name/],
    [["--tun", "é"], /not a valid interface name/],
    [["--tun", ".."], /not a valid interface name/],
    [["--log-level", "loud"], /--log-level: "loud"/],
    [["--tun", "a", "--tun", "b"], /--tun was given more than once/],
  ])("refuses %j", (extra, message) => {
    const argv = extra.length === 0 ? [] : ["--remote", "x:1", ...extra];
    expect(() => parse(argv)).toThrow(UsageError);
    expect(() => parse(argv)).toThrow(message);
  });

  it("accepts interface names with letters, digits, _, - and .", () => {
    for (const tun of ["wg0", "a-b", "a.b", "a_b", "x".repeat(15)]) {
      expect(parse(["--remote", "x:1", "--tun", tun]).config.tun).toBe(tun);
    }
  });

  it("refuses a malformed boolean variable", () => {
    expect(() => parse(["--remote", "x:1"], { FAKE_TCP_AUTO_RULES: "maybe" })).toThrow(
      /FAKE_TCP_AUTO_RULES: "maybe" is not a boolean/,
    );
  });
});
