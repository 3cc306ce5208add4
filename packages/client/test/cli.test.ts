/**
 * Bad input to the built `fake-tcp-client`: every case exits with code 2 and one stderr line
 * naming the problem, without a stack trace. Runs inside a throw-away namespace, so name
 * resolution and everything the program touches stays there.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupAll, Netns, realDeviceGate } from "../../../test-support/netns.js";
import {
  expectOneLineError,
  RunningProgram,
  runProgram,
} from "../../common/test/program-harness.js";

const gate = realDeviceGate();

describe.skipIf(gate.skip)("fake-tcp-client bad input", () => {
  let ns: Netns;
  const dir = mkdtempSync(join(tmpdir(), "ftc-cli-"));
  const big = join(dir, "big.bin");
  const fits = join(dir, "fits.bin");
  beforeAll(() => {
    ns = new Netns("ftcc");
    writeFileSync(big, Buffer.alloc(1441));
    writeFileSync(fits, Buffer.alloc(1440));
  });
  afterAll(() => {
    cleanupAll();
    rmSync(dir, { recursive: true, force: true });
  });

  const remote = ["--remote", "127.0.0.1:4567"];
  it.each([
    [["--remote", "127.0.0.1:4567"], /missing required option --local/],
    [["--local", "1234"], /missing required option --remote/],
    [["--local", "1234", ...remote, "--frobnicate"], /unknown option --frobnicate/],
    [["--local", "localhost:1234", ...remote], /--local: "localhost" is not an IP address/],
    [["--local", "70000", ...remote], /--local: port 70000 is out of range/],
    [["--local", "::1:1234", ...remote], /--local: "::1:1234" is not PORT/],
    [["--local", "1234", "--remote", "4567"], /--remote: "4567" is not HOST:PORT/],
    [["--local", "1234", "--remote", "host:0"], /--remote: port 0 is out of range/],
    [["--local", "1234", "--remote", "[::1]:80", "-4"], /IPv6 address but -4/],
    [
      ["--local", "1234", "--remote", "no-such-host.invalid:4567"],
      /cannot resolve host "no-such-host.invalid"/,
    ],
    [["--local", "1234", ...remote, "--tun-local", "1.2.3"], /--tun-local: "1.2.3" is not an IPv4/],
    [["--local", "1234", ...remote, "--tun-peer6", "x"], /--tun-peer6: "x" is not an IPv6/],
    [["--local", "1234", ...remote, "--tun", "bad/name"], /--tun: "bad\/name" is not a valid/],
    [["--local", "1234", ...remote, "--queues", "0"], /--queues: "0"/],
    [["--local", "1234", ...remote, "--idle-timeout", "soon"], /--idle-timeout: "soon"/],
    [["--local", "1234", ...remote, "--new-peer-rate", "0"], /--new-peer-rate: "0" is not a whole/],
    [
      ["--local", "1234", ...remote, "--flows", "0"],
      /--flows: "0" is not a whole number from 1 to 16/,
    ],
    [["--local", "1234", ...remote, "--flows", "17"], /--flows: "17" is not a whole number/],
    [["--local", "1234", ...remote, "--flow-rate", "fast"], /--flow-rate: "fast" is not a whole/],
    [["--local", "1234", ...remote, "--log-level", "chatty"], /--log-level: "chatty"/],
    [["--local", "1234", ...remote, "--handshake-packet", "/nonexistent/hs"], /does not exist/],
    [["--local", "1234", ...remote, "--handshake-packet", "/tmp"], /is a directory/],
    [["--local", "1234", ...remote, "--key-file", "/tmp"], /--key-file: \/tmp is a directory/],
    [["--local", "1234", ...remote, "--local", "1235"], /--local was given more than once/],
    [["--local", "10.99.99.99:1234", ...remote, "--no-auto-rules"], /not an address of this host/],
  ])("%j", (args, message) => {
    const line = expectOneLineError(runProgram(ns, "client", args));
    expect(line).toMatch(/^fake-tcp-client: error: /);
    expect(line).toMatch(message);
  });

  it("genkey prints a new key for --key-file; extra arguments are refused", () => {
    const first = runProgram(ns, "client", ["genkey"]);
    const second = runProgram(ns, "client", ["genkey"]);
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/^[A-Za-z0-9+/]{43}=\n$/);
    expect(second.stdout).not.toBe(first.stdout);
    const line = expectOneLineError(runProgram(ns, "client", ["genkey", "extra"]));
    expect(line).toMatch(/^fake-tcp-client: error: genkey takes no arguments/);
  });
  it("an oversized handshake packet names the limit (1440 bytes with IPv6 at MTU 1500)", () => {
    const line = expectOneLineError(
      runProgram(ns, "client", ["--local", "1234", ...remote, "--handshake-packet", big]),
    );
    expect(line).toMatch(/is 1441 bytes but at most 1440 fit/);
  });

  it("a bad environment variable is reported like a flag", () => {
    const result = runProgram(ns, "client", ["--local", "1234"], {
      env: { FAKE_TCP_REMOTE: "nope" },
    });
    expect(expectOneLineError(result)).toMatch(/--remote: "nope" is not HOST:PORT/);
  });

  it("missing privilege: nft and the TUN device name CAP_NET_ADMIN", () => {
    const asNobody = [
      "setpriv",
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      "--inh-caps=-all",
      "--bounding-set=-all",
    ];
    const withRules = runProgram(ns, "client", ["--local", "1234", ...remote], {
      wrapper: asNobody,
    });
    expect(expectOneLineError(withRules)).toMatch(/nft: .*permission denied.*CAP_NET_ADMIN/);
    const withoutRules = runProgram(
      ns,
      "client",
      ["--local", "1234", ...remote, "--no-auto-rules"],
      { wrapper: asNobody },
    );
    expect(expectOneLineError(withoutRules)).toMatch(/CAP_NET_ADMIN/);
  });

  it("missing /dev/net/tun says how to get it", () => {
    // A private mount namespace with an empty /dev/net: the host's /dev is untouched.
    const result = runProgram(ns, "client", ["--local", "1234", ...remote, "--no-auto-rules"], {
      wrapper: [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount -t tmpfs none /dev/net && exec "$@"',
        "sh",
      ],
    });
    expect(expectOneLineError(result)).toMatch(/\/dev\/net\/tun is missing.*modprobe tun/);
  });

  it("a TUN name already taken by another interface", () => {
    ns.exec("ip", ["link", "add", "taken0", "type", "veth", "peer", "name", "taken0p"]);
    const result = runProgram(ns, "client", ["--local", "1234", ...remote, "--tun", "taken0"]);
    expect(expectOneLineError(result)).toMatch(/"taken0" already exists.*choose another --tun/);
    // Nothing was left behind by the failed start.
    expect(ns.exec("nft", ["list", "ruleset"])).not.toContain("fake_tcp_taken0");
  });

  it("a UDP port already in use", async () => {
    const holder = new RunningProgram(ns, "client", [
      "--local",
      "2345",
      ...remote,
      "--no-auto-rules",
      "--tun",
      "hold0",
    ]);
    await holder.waitFor("fake-tcp-client running");
    const result = runProgram(ns, "client", ["--local", "2345", ...remote, "--tun", "second0"]);
    expect(expectOneLineError(result)).toMatch(/UDP 127.0.0.1:2345 is already in use/);
    expect((await holder.stop()).code).toBe(0);
  });

  it("--help prints usage and examples, exit 0", () => {
    const result = runProgram(ns, "client", ["--help"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("--handshake-packet");
    expect(result.stdout).toContain("Examples:");
    expect(result.stdout).toContain("FAKE_TCP_");
  });
});
