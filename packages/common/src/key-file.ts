/**
 * The tunnel key of keyed mode (`--key-file FILE`, `genkey`): 32 random bytes, written as
 * base64 on one line, as WireGuard writes its keys. Both programs of a tunnel read the same
 * file; anyone who has it can pass for either end, so it should be readable by its owner
 * only (a file readable by group or others is used, with a warning).
 */
import { readFileSync, statSync } from "node:fs";
import { generateTunnelKey, KEY_LENGTH } from "fake-tcp";
import { errnoCode, UsageError } from "./errors.js";

/** A key file's text: 43 base64 characters and one "=" (32 bytes), surrounding space allowed. */
const KEY_TEXT = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;

/** A new random key as the text of a key file (base64 and a newline). */
export function newKeyText(): string {
  return `${Buffer.from(generateTunnelKey()).toString("base64")}\n`;
}

/** The key in a key file's `text`, or null when the text is not one key. */
export function parseKeyText(text: string): Uint8Array | null {
  const t = text.trim();
  if (!KEY_TEXT.test(t)) return null;
  const bytes = Buffer.from(t, "base64");
  return bytes.length === KEY_LENGTH ? new Uint8Array(bytes) : null;
}

/** Reads the key file at `path` (checked: a regular file of at most a few hundred bytes). */
export function readKeyFile(path: string): Uint8Array {
  const refuse = (why: string, fix = "give the file genkey wrote") =>
    new UsageError(`--key-file: ${path} ${why}; ${fix}`);
  let text: string;
  try {
    const info = statSync(path);
    if (info.isDirectory()) throw refuse("is a directory");
    if (!info.isFile()) throw refuse("is not a regular file");
    if (info.size > 1024) throw refuse(`is ${info.size} bytes, not a key`);
    text = readFileSync(path, "utf8");
  } catch (err) {
    if (err instanceof UsageError) throw err;
    const code = errnoCode(err);
    if (code === "ENOENT")
      throw refuse("does not exist", "make one with `fake-tcp-server genkey > FILE`");
    if (code === "EACCES" || code === "EPERM") throw refuse("is not readable (permission denied)");
    throw refuse(`cannot be read (${code ?? "error"})`);
  }
  const key = parseKeyText(text);
  if (key === null)
    throw refuse(
      `is not a key (${KEY_LENGTH} bytes in base64 on one line)`,
      "make one with `fake-tcp-server genkey > FILE` and copy it to both ends",
    );
  return key;
}

/**
 * A warning about who may read the key file at `path`, or null: a file readable by its
 * group or by others lets them impersonate either end of the tunnel.
 */
export function keyFilePermissionWarning(path: string): string | null {
  let mode: number;
  try {
    mode = statSync(path).mode;
  } catch {
    return null; // it was read a moment ago; a vanished file says nothing about permissions
  }
  if ((mode & 0o044) === 0) return null;
  const who = (mode & 0o004) !== 0 ? "anyone on this host" : "its group";
  return `the key file ${path} is readable by ${who} (mode ${(mode & 0o777).toString(8).padStart(3, "0")}), who can then pass for either end of the tunnel; chmod 600 it`;
}

/**
 * `PROGRAM genkey`: prints a new key and returns 0, or explains the usage and returns 2 when
 * more arguments follow.
 */
export function runGenkey(program: string, argv: readonly string[]): number {
  if (argv.length > 1) {
    process.stderr.write(
      `${program}: error: genkey takes no arguments; run \`${program} genkey > FILE\`\n`,
    );
    return 2;
  }
  process.stdout.write(newKeyText());
  return 0;
}

/** Logs at start that the program runs keyed, and warns about a key file others may read. */
export function logKeyedMode(
  config: { readonly keyFile: string | undefined },
  logger: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void },
): void {
  if (config.keyFile === undefined) return;
  const warning = keyFilePermissionWarning(config.keyFile);
  if (warning !== null) logger.warn({ keyFile: config.keyFile }, warning);
  logger.info(
    { keyFile: config.keyFile },
    "keyed mode: only a peer with the same key is answered (not phantun, not an unkeyed peer)",
  );
}
