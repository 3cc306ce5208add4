/**
 * fake-tcp-client as a library: argument parsing, the client itself, and `main` as the
 * bin entry point runs it.
 */
export { CLIENT_PROGRAM, type ClientConfig, parseClientArgs } from "./cli.js";
export { type StartClientOptions, startClient } from "./client.js";
export {
  bindAddresses,
  bindListenSockets,
  isWildcard,
  type ListenSocket,
} from "./listen-sockets.js";
export { runClientMain } from "./main-logic.js";
export { MAX_QUEUED_DATAGRAMS, PeerSession, type SessionContext } from "./peer-session.js";
export { PeerTable } from "./peer-table.js";
