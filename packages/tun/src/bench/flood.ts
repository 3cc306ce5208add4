/**
 * The benchmark's packet source and sink: `native/udp-flood.c`, compiled here with the
 * system C compiler into a temporary directory (Node's dgram cannot send fast enough).
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** Path of the C source shipped with the package (dist/bench -> native/). */
export const FLOOD_SOURCE = join(
  dirname(fileURLToPath(import.meta.url)),
  "..",
  "..",
  "native",
  "udp-flood.c",
);

/** Compiles the flood program into `dir` and returns the binary's path. */
export function compileFlood(dir: string): string {
  const out = join(dir, "udp-flood");
  try {
    execFileSync("cc", ["-O2", "-pthread", "-o", out, FLOOD_SOURCE], { stdio: "pipe" });
  } catch (error) {
    throw new Error(
      `cannot compile ${FLOOD_SOURCE} (a C compiler is needed: apt-get install build-essential): ${(error as Error).message}`,
    );
  }
  return out;
}

/** Starts the flood program; `lines` gets each JSON line it prints. */
export function startFlood(
  binary: string,
  args: string[],
  onLine: (msg: Record<string, unknown>) => void,
): { child: ChildProcess; done: Promise<Record<string, unknown>> } {
  const child = spawn(binary, args, { stdio: ["ignore", "pipe", "inherit"] });
  let last: Record<string, unknown> = {};
  let pending = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    pending += chunk;
    for (let nl = pending.indexOf("\n"); nl >= 0; nl = pending.indexOf("\n")) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (!line.startsWith("{")) continue;
      last = JSON.parse(line) as Record<string, unknown>;
      onLine(last);
    }
  });
  const done = new Promise<Record<string, unknown>>((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code) =>
      code === 0 ? resolve(last) : reject(new Error(`udp-flood ${args[0]} exited with ${code}`)),
    );
  });
  return { child, done };
}
