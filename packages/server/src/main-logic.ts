/**
 * The server's process-level entry: parse, start, run until a signal, exit with the right code.
 */
import { runGenkey, runMain } from "fake-tcp-common";
import { parseServerArgs, SERVER_PROGRAM, type ServerConfig } from "./cli.js";
import { startServer } from "./server.js";

/** Runs the server as a process with `argv` (without node and script). Exits the process. */
export async function runServerMain(argv: readonly string[]): Promise<void> {
  if (argv[0] === "genkey") {
    process.exitCode = runGenkey(SERVER_PROGRAM, argv);
    return;
  }
  let config: ServerConfig | null = null;
  await runMain({
    program: SERVER_PROGRAM,
    statsIntervalMs: () => config?.statsIntervalMs ?? 0,
    start: async (fatal) => {
      config = parseServerArgs(argv);
      return config ? startServer(config, { fatal }) : null;
    },
  });
}
