/**
 * Keyed mode's key file: the text `genkey` writes and reads back, every way a file can be
 * wrong (one-line errors naming the fix), the warning for a file others may read, and the
 * window scale a keyed SYN takes from the host's buffer limits.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { UsageError } from "../src/errors.js";
import {
  keyFilePermissionWarning,
  newKeyText,
  parseKeyText,
  readKeyFile,
} from "../src/key-file.js";
import { commonConfig, parseCommandLine } from "../src/options.js";
import { hostWindowScale } from "../src/tunnel.js";

const dir = mkdtempSync(join(tmpdir(), "key-file-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string, mode = 0o600): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  chmodSync(path, mode);
  return path;
}

describe("the key file", () => {
  it("genkey's text is 32 random bytes in base64 on one line, read back as written", () => {
    const a = newKeyText();
    const b = newKeyText();
    expect(a).toMatch(/^[A-Za-z0-9+/]{43}=\n$/);
    expect(a).not.toBe(b);
    const key = parseKeyText(a)!;
    expect(key).toHaveLength(32);
    expect(Buffer.from(key).toString("base64")).toBe(a.trim());
    expect(readKeyFile(file("good", a))).toEqual(key);
    // Surrounding space and a CRLF are fine.
    expect(readKeyFile(file("spaced", `  ${a.trim()}\r\n`))).toEqual(key);
  });

  it.each([
    ["empty", ""],
    ["too short", "AAAA"],
    ["31 bytes", `${Buffer.alloc(31, 7).toString("base64")}\n`],
    ["33 bytes", `${Buffer.alloc(33, 7).toString("base64")}\n`],
    ["not base64", `${"!".repeat(43)}=\n`],
    ["two keys", `${newKeyText()}${newKeyText()}`],
    ["non-canonical padding bits", `${"A".repeat(42)}B=\n`],
  ])("refuses a file that is not one key: %s", (name, text) => {
    expect(() => readKeyFile(file(name, text))).toThrow(
      /^--key-file: .* is not a key \(32 bytes in base64 on one line\); make one with `fake-tcp-server genkey > FILE`/,
    );
  });

  it("refuses what is not a readable regular file, naming the problem", () => {
    expect(() => readKeyFile(join(dir, "missing"))).toThrow(/does not exist; make one with/);
    expect(() => readKeyFile(dir)).toThrow(/is a directory/);
    expect(() => readKeyFile("/dev/null")).toThrow(/is not a regular file/);
    expect(() => readKeyFile(file("huge", "A".repeat(5000)))).toThrow(/is 5000 bytes, not a key/);
    for (const f of [() => readKeyFile(dir)]) expect(f).toThrow(UsageError);
  });

  it("warns when the group or others may read it", () => {
    const text = newKeyText();
    expect(keyFilePermissionWarning(file("private", text, 0o600))).toBeNull();
    expect(keyFilePermissionWarning(file("owner-ro", text, 0o400))).toBeNull();
    expect(keyFilePermissionWarning(file("group", text, 0o640))).toMatch(
      /readable by its group \(mode 640\).*chmod 600/,
    );
    expect(keyFilePermissionWarning(file("world", text, 0o644))).toMatch(
      /readable by anyone on this host \(mode 644\)/,
    );
  });

  it("--key-file and FAKE_TCP_KEY_FILE load the key into the configuration", () => {
    const path = file("cli", newKeyText());
    const spec = {
      program: "t",
      role: "server" as const,
      usage: "",
      options: {},
      examples: [],
      epilog: "",
    };
    const none = commonConfig(parseCommandLine([], spec, {})!);
    expect(none.key).toBeUndefined();
    const flag = commonConfig(parseCommandLine(["--key-file", path], spec, {})!);
    expect(flag.keyFile).toBe(path);
    expect(flag.key).toEqual(readKeyFile(path));
    const env = commonConfig(parseCommandLine([], spec, { FAKE_TCP_KEY_FILE: path })!);
    expect(env.key).toEqual(readKeyFile(path));
    expect(() => commonConfig(parseCommandLine(["--key-file", dir], spec, {})!)).toThrow(
      /--key-file: .* is a directory/,
    );
  });
});

describe("the window scale of a keyed SYN", () => {
  const host = (rmem: string, rmemMax: string) => (path: string) =>
    path.endsWith("tcp_rmem") ? rmem : rmemMax;

  it("is what the host's kernel announces for its largest receive buffer", () => {
    expect(hostWindowScale(host("4096\t131072\t6291456\n", "212992\n"))).toBe(7);
    expect(hostWindowScale(host("4096\t131072\t33554432\n", "212992\n"))).toBe(10);
    expect(hostWindowScale(host("4096\t131072\t6291456\n", "67108864\n"))).toBe(11);
  });

  it("is Linux's default, 7, when the limits cannot be read", () => {
    expect(
      hostWindowScale(() => {
        throw new Error("no /proc");
      }),
    ).toBe(7);
    expect(hostWindowScale(host("garbage", "junk"))).toBe(7);
  });

  it("reads this host's limits", () => {
    const scale = hostWindowScale();
    expect(scale).toBeGreaterThanOrEqual(0);
    expect(scale).toBeLessThanOrEqual(14);
  });
});
