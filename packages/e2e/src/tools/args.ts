/** Tiny `--name value` parser for the rig's helper programs (they run as separate processes). */
export function parseArgs(argv: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith("--")) continue;
    const next = argv[i + 1];
    if (next === undefined || next.startsWith("--")) out.set(arg.slice(2), "true");
    else {
      out.set(arg.slice(2), next);
      i++;
    }
  }
  return out;
}

export function numberArg(args: Map<string, string>, name: string, fallback: number): number {
  const v = args.get(name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`--${name} must be a number, got ${v}`);
  return n;
}

/** Splits "host:port". */
export function hostPort(value: string | undefined, name: string): { host: string; port: number } {
  const m = value ? /^(.*):(\d+)$/.exec(value) : null;
  if (!m) throw new Error(`--${name} must be host:port`);
  return { host: m[1], port: Number(m[2]) };
}
