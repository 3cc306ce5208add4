/**
 * The configuration file (`--config FILE`): TOML, one `key = value` per option, keyed by the
 * option's long name exactly as on the command line (`tun-local = "10.0.0.1"`,
 * `auto-rules = false`). The keys are derived from the option definitions, so every option a
 * program has is a key of its file, with nothing to add when an option is added.
 *
 * TOML rather than YAML: flat `key = value` lines like WireGuard's own files, and no implicit
 * typing (YAML 1.1 reads `no` as false, `010` as 8, `1:30` as 90), so what the file says is
 * what the program gets; smol-toml is small and has no dependencies.
 */
import { readFileSync } from "node:fs";
import { parse, TomlError } from "smol-toml";
import type { Options } from "yargs";
import { errnoCode, oneLine, UsageError } from "./errors.js";

/** The option that names the file; it cannot appear inside one. */
export const CONFIG_OPTION = "config";

/** Options that are not settings (yargs' own): never keys of a file. */
const NOT_SETTINGS = new Set([CONFIG_OPTION, "help", "version"]);

/** Option values read from a file, as the command line would give them (text or boolean). */
export type FileValues = Record<string, string | boolean>;

/**
 * Finds the file named by `--config FILE` / `--config=FILE` in `argv`, else by the
 * environment variable `envVar`. Throws when the option is repeated or has no value.
 */
export function configFilePath(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  envVar: string,
): string | undefined {
  const found: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") break;
    if (arg === `--${CONFIG_OPTION}`) {
      const value = argv[i + 1];
      if (value === undefined || value.startsWith("-")) {
        throw new UsageError(`option --${CONFIG_OPTION} needs a value (the file); see --help`);
      }
      found.push(value);
      i++;
    } else if (arg.startsWith(`--${CONFIG_OPTION}=`)) {
      found.push(arg.slice(CONFIG_OPTION.length + 3));
    }
  }
  if (found.length > 1) {
    throw new UsageError(`--${CONFIG_OPTION} was given more than once; give it once`);
  }
  const path = found[0] ?? env[envVar];
  if (path === "") throw new UsageError(`--${CONFIG_OPTION} needs a file name`);
  return path;
}

/** The closest known key to a misspelt one (edit distance at most 3), for the error. */
function closestKey(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = 4;
  for (const candidate of known) {
    const d = editDistance(key, candidate);
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(
        previous[j] + 1,
        row[j - 1] + 1,
        previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    previous = row;
  }
  return previous[b.length];
}

/**
 * Checks the parsed document against the options: every key a long option name, booleans for
 * boolean options, a string or a number for the others (numbers become text, as on the
 * command line, so that the programs' own validation applies unchanged).
 */
export function configValues(
  document: Record<string, unknown>,
  options: Record<string, Options>,
  file: string,
): FileValues {
  const settings = Object.keys(options).filter((name) => !NOT_SETTINGS.has(name));
  const aliasOf = new Map<string, string>();
  for (const name of settings) {
    const alias = options[name].alias;
    for (const a of alias === undefined ? [] : Array.isArray(alias) ? alias : [alias]) {
      aliasOf.set(a, name);
    }
  }
  const values: FileValues = {};
  for (const [key, value] of Object.entries(document)) {
    const option = settings.includes(key) ? options[key] : undefined;
    if (option === undefined) {
      let fix: string;
      if (NOT_SETTINGS.has(key)) fix = "it is not a setting; remove it";
      else if (aliasOf.has(key)) fix = `write the long name: ${aliasOf.get(key)} = ...`;
      else if (key.startsWith("no-") && options[key.slice(3)]?.type === "boolean") {
        fix = `write ${key.slice(3)} = false`;
      } else {
        const near = closestKey(key, settings);
        fix = near
          ? `did you mean "${near}"? (keys are the long option names, see --help)`
          : "keys are the long option names without dashes in front, see --help";
      }
      throw new UsageError(`${file}: unknown key "${key}": ${fix}`);
    }
    if (option.type === "boolean") {
      if (typeof value !== "boolean") {
        throw new UsageError(
          `${file}: key "${key}" must be true or false (unquoted), not ${describe(value)}`,
        );
      }
      values[key] = value;
    } else if (typeof value === "string" || typeof value === "number") {
      values[key] = String(value);
    } else {
      throw new UsageError(
        `${file}: key "${key}" must be a string or a number (e.g. ${key} = "..."), not ${describe(value)}`,
      );
    }
  }
  return values;
}

function describe(value: unknown): string {
  if (Array.isArray(value)) return "a list";
  if (value !== null && typeof value === "object") {
    return value.constructor?.name === "TomlDate" ? "a date" : "a table";
  }
  return `${typeof value} ${JSON.stringify(value)}`;
}

/** Reads and checks a configuration file. Throws a `UsageError` naming the file. */
export function loadConfigFile(file: string, options: Record<string, Options>): FileValues {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    const code = errnoCode(err);
    const fix =
      code === "ENOENT"
        ? "no such file; check the path"
        : code === "EACCES"
          ? "permission denied; make it readable by the user the program runs as"
          : code === "EISDIR"
            ? "is a directory; name a file"
            : oneLine(err);
    throw new UsageError(`--${CONFIG_OPTION} ${file}: ${fix}`);
  }
  let document: Record<string, unknown>;
  try {
    document = parse(text) as Record<string, unknown>;
  } catch (err) {
    if (err instanceof TomlError) {
      const what = err.message.split("\n")[0].replace(/^Invalid TOML document: /, "");
      const fix = /redefine/.test(what)
        ? "a key is given twice; keep one"
        : "write key = value, strings in quotes";
      throw new UsageError(`${file}:${err.line}:${err.column}: not valid TOML: ${what} (${fix})`);
    }
    throw err;
  }
  return configValues(document, options, file);
}

/** Where the file-given values of parsed arguments came from (for error messages). */
const SOURCES = Symbol("config file sources");

interface FileSources {
  readonly file: string;
  /** The long option names whose parsed value is the file's. */
  readonly keys: ReadonlySet<string>;
}

/** Records that `keys` of `args` hold the values of `file` (not overridden). */
export function markFileValues(
  args: Record<string, unknown>,
  file: string,
  keys: Iterable<string>,
): void {
  Object.defineProperty(args, SOURCES, {
    value: { file, keys: new Set(keys) } satisfies FileSources,
    enumerable: false,
  });
}

/**
 * Runs the validation of parsed arguments; a `UsageError` about an option whose value came
 * from the configuration file is reworded to name the file and the key:
 * `--mtu: "abc" is not...` becomes `/etc/fake-tcp/wg.toml: key "mtu": "abc" is not...`.
 */
export function validateArguments<T>(args: Record<string, unknown>, validate: () => T): T {
  try {
    return validate();
  } catch (err) {
    const sources = (args as { [SOURCES]?: FileSources })[SOURCES];
    if (!(err instanceof UsageError) || sources === undefined) throw err;
    const flag = /^(?:-\w\/)?--([a-z0-9-]+)(?::\s*)?/.exec(err.message);
    if (flag === null || !sources.keys.has(flag[1])) throw err;
    // "--mtu: why" keeps only the why; "--tun-local and --tun-peer must differ" stays whole.
    const rest = flag[0].includes(":") ? err.message.slice(flag[0].length) : err.message;
    throw new UsageError(`${sources.file}: key "${flag[1]}": ${rest}`);
  }
}

/** The yargs definition of `--config` (also `FAKE_TCP_CONFIG`). */
export const configOptionDefinition: Options = {
  type: "string",
  describe:
    'TOML file of options, keys = long option names (tun-local = "10.0.0.1"); the command line and FAKE_TCP_* variables override it',
  group: "Operation:",
};

/** Is this a request for --help or --version (which must work even with a broken file)? */
function asksForHelp(argv: readonly string[]): boolean {
  const end = argv.indexOf("--");
  return (end < 0 ? argv : argv.slice(0, end)).some((a) =>
    ["--help", "-h", "--version"].includes(a),
  );
}

/**
 * The values of the configuration file named on the command line or in the environment
 * (none: `{}`), checked against `options`.
 */
export function configFileValues(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  envVar: string,
  options: Record<string, Options>,
): { file: string | undefined; values: FileValues } {
  if (asksForHelp(argv)) return { file: undefined, values: {} };
  const file = configFilePath(argv, env, envVar);
  return { file, values: file === undefined ? {} : loadConfigFile(file, options) };
}

/** Long option name to the key yargs gives it with "strip-dashed": `tun-local` -> `tunLocal`. */
function camelCase(name: string): string {
  return name.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/**
 * Marks the parsed `args` whose value is still the file's (neither the environment nor the
 * command line gave another), so that {@link validateArguments} can name the file.
 */
export function markConfigFileSources(
  args: Record<string, unknown>,
  file: string | undefined,
  fileValues: FileValues,
  envValues: Record<string, unknown>,
): void {
  if (file === undefined) return;
  const keys = Object.keys(fileValues).filter(
    (key) => !(key in envValues) && args[camelCase(key)] === fileValues[key],
  );
  markFileValues(args, file, keys);
}
