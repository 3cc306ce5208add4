/**
 * fake-tcp-server as a library: argument parsing, the server itself, and `main` as the bin
 * entry point runs it.
 */
export { parseServerArgs, SERVER_PROGRAM, type ServerConfig } from "./cli.js";
export { runServerMain } from "./main-logic.js";
export {
  newServerCounters,
  RELAY_BATCH_SIZE,
  Relay,
  type ServerCounters,
} from "./relay.js";
export { RelayTable, type RelayTableOptions } from "./relay-table.js";
export { type StartServerOptions, startServer } from "./server.js";
