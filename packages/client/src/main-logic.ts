/**
 * The client's process-level entry: parse, start, run until a signal, exit with the right code.
 */
import { runGenkey, runMain } from "fake-tcp-common";
import { CLIENT_PROGRAM, type ClientConfig, parseClientArgs } from "./cli.js";
import { startClient } from "./client.js";

/** Runs the client as a process with `argv` (without node and script). Exits the process. */
export async function runClientMain(argv: readonly string[]): Promise<void> {
  if (argv[0] === "genkey") {
    process.exitCode = runGenkey(CLIENT_PROGRAM, argv);
    return;
  }
  let config: ClientConfig | null = null;
  await runMain({
    program: CLIENT_PROGRAM,
    statsIntervalMs: () => config?.statsIntervalMs ?? 0,
    start: async (fatal) => {
      config = parseClientArgs(argv);
      return config ? startClient(config, { fatal }) : null;
    },
  });
}
