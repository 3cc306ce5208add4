/**
 * `--config FILE`: every option by its long name, precedence command line > environment >
 * file, and one-line errors that name the file, the key and the fix.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseClientArgs } from "../../client/src/cli.js";
import { parseServerArgs } from "../../server/src/cli.js";
import { commonOptionDefinitions } from "../src/options.js";

const dir = mkdtempSync(join(tmpdir(), "fake-tcp-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;
function file(text: string): string {
  const path = join(dir, `c${files++}.toml`);
  writeFileSync(path, text);
  return path;
}

function serverError(argv: string[], env: NodeJS.ProcessEnv = {}): string {
  try {
    parseServerArgs(argv, env);
  } catch (err) {
    expect((err as Error).name).toBe("UsageError");
    const message = (err as Error).message;
    expect(message).not.toContain("\n");
    return message;
  }
  throw new Error("no error");
}

const examples = join(import.meta.dirname, "../../../docs/examples");

describe("configuration file", () => {
  it("sets every option by its long name, typed as TOML", () => {
    const path = file(
      [
        "listen = 4567",
        'remote = "127.0.0.1:51820"',
        'tun = "wg9"',
        'tun-local = "10.77.0.1"',
        'tun-peer = "10.77.0.2"',
        "ipv4-only = true",
        "mtu = 1400",
        "idle-timeout = 2.5",
        "keepalive = 0",
        "max-connections = 7",
        "auto-rules = false",
        "checksum-offload = false",
        'log-level = "warn"',
        "stats-interval = 0",
        "queues = 1",
      ].join("\n"),
    );
    const config = parseServerArgs(["--config", path], {});
    expect(config).toMatchObject({
      listen: 4567,
      remote: { host: "127.0.0.1", port: 51820 },
      tun: "wg9",
      ipv4: { local: "10.77.0.1", peer: "10.77.0.2" },
      ipv6: undefined,
      mtu: 1400,
      idleTimeoutMs: 2500,
      keepaliveMs: 0,
      maxConnections: 7,
      autoRules: false,
      checksumOffload: false,
      logLevel: "warn",
      statsIntervalMs: 0,
      queues: 1,
    });
  });

  it("accepts every option of both programs as a key (derived from the definitions)", () => {
    for (const role of ["client", "server"] as const) {
      const lines = Object.entries(commonOptionDefinitions(role)).map(([name, option]) =>
        option.type === "boolean"
          ? `${name} = ${String(option.default)}`
          : option.default === undefined
            ? ""
            : `${name} = ${JSON.stringify(String(option.default))}`,
      );
      const own =
        role === "client"
          ? ['local = "1234"', 'remote = "192.0.2.1:4567"', "new-peer-rate = 5"]
          : ["listen = 4567", 'remote = "127.0.0.1:51820"'];
      const path = file([...own, ...lines].join("\n"));
      const parse = role === "client" ? parseClientArgs : parseServerArgs;
      expect(parse(["--config", path], {})).not.toBeNull();
    }
  });

  it("lets the environment override the file and the command line override both", () => {
    const path = file('listen = 4567\nremote = "127.0.0.1:51820"\ntun = "file0"\nmtu = 1400');
    const env = { FAKE_TCP_TUN: "env0", FAKE_TCP_MTU: "1300" };
    const config = parseServerArgs(["--config", path, "--mtu", "1280"], env);
    expect(config).toMatchObject({ tun: "env0", mtu: 1280, listen: 4567 });
    // The file named by FAKE_TCP_CONFIG, and phantun's --local still overriding listen.
    const fromEnv = parseServerArgs(["--local", "5000"], { FAKE_TCP_CONFIG: path });
    expect(fromEnv).toMatchObject({ tun: "file0", listen: 5000, mtu: 1400 });
    // A boolean of the file turned back on from the command line.
    const off = file('listen = 1\nremote = "127.0.0.1:2"\nauto-rules = false');
    expect(parseServerArgs(["--config", off, "--auto-rules"], {})?.autoRules).toBe(true);
  });

  it("names the file, the key and the fix in one line", () => {
    const base = 'listen = 4567\nremote = "127.0.0.1:51820"\n';
    const cases: [string, RegExp][] = [
      [
        `${base}tun-locl = "10.0.0.1"`,
        /c\d+\.toml: unknown key "tun-locl": did you mean "tun-local"/,
      ],
      [`${base}local = 4567`, /unknown key "local": write the long name: listen = \.\.\./],
      [`${base}no-auto-rules = true`, /unknown key "no-auto-rules": write auto-rules = false/],
      [`${base}config = "x.toml"`, /unknown key "config": it is not a setting/],
      [
        `${base}auto-rules = "no"`,
        /key "auto-rules" must be true or false \(unquoted\), not string "no"/,
      ],
      [`${base}mtu = [1400]`, /key "mtu" must be a string or a number .*not a list/],
      [`${base}[mtu]\nx = 1`, /key "mtu" must be a string or a number .*not a table/],
      [
        `${base}mtu = "lots"`,
        /c\d+\.toml: key "mtu": "lots" is not a whole number from 576 to 65535/,
      ],
      [`${base}tun-peer = "300.1.1.1"`, /c\d+\.toml: key "tun-peer": /],
      [
        `${base}tun-local6 = "fcc9::2"`,
        /c\d+\.toml: key "tun-local6": --tun-local6 and --tun-peer6 must differ/,
      ],
      [
        'listen = "port"\nremote = "127.0.0.1:1"',
        /c\d+\.toml: key "listen": "port" is not a port number/,
      ],
      [
        `${base}mtu = 1400\nmtu = 1500`,
        /c\d+\.toml:4:\d+: not valid TOML: .*\(a key is given twice; keep one\)/,
      ],
      [
        "listen 4567",
        /c\d+\.toml:1:\d+: not valid TOML: .*\(write key = value, strings in quotes\)/,
      ],
    ];
    for (const [text, expected] of cases) {
      expect(serverError(["--config", file(text)])).toMatch(expected);
    }
    expect(serverError(["--config", join(dir, "missing.toml")])).toMatch(
      /--config .*missing\.toml: no such file; check the path/,
    );
    expect(serverError(["--config", dir])).toMatch(/is a directory; name a file/);
    expect(serverError(["--config", "a.toml", "--config=b.toml"])).toMatch(/more than once/);
    expect(serverError(["--config"])).toMatch(/--config needs a value/);
    // Missing required options still name the option, whether or not a file was given.
    expect(serverError(["--config", file("listen = 1")])).toMatch(
      /missing required option --remote/,
    );
    // A bad value overridden on the command line is not the file's fault.
    expect(serverError(["--config", file(`${base}mtu = 1400`), "--mtu", "x"])).toMatch(/^--mtu:/);
  });

  it("--help works even when the file is broken", () => {
    const write = process.stdout.write;
    process.stdout.write = () => true;
    try {
      expect(parseServerArgs(["--config", file("{{{"), "--help"], {})).toBeNull();
    } finally {
      process.stdout.write = write;
    }
  });

  it("parses the shipped examples, commented keys included", () => {
    for (const [name, parse] of [
      ["wireguard-server.toml", parseServerArgs],
      ["wireguard-client.toml", parseClientArgs],
    ] as const) {
      const path = join(examples, name);
      expect(parse(["--config", path], {})).not.toBeNull();
      // Every commented-out "# key = value" line is a real key with a valid value.
      const text = readFileSync(path, "utf8");
      const uncommented = text.replace(/^# ([a-z0-9-]+ = .*)$/gm, "$1");
      expect(uncommented).not.toBe(text);
      expect(parse(["--config", file(uncommented)], {})).not.toBeNull();
    }
  });
});
