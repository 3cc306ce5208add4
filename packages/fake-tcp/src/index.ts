export * from "./device.js";
export { timestampOptionOffset, verifyKeyedSyn } from "./keyed/keyed-syn.js";
export { ReplayCache, SynReplay } from "./keyed/replay-cache.js";
export {
  generateTunnelKey,
  KEY_LENGTH,
  TOKEN_SLOT_MS,
  TunnelKey,
  tokenSlotOf,
} from "./keyed/tunnel-key.js";
export { BoundedQueue } from "./stack/bounded-queue.js";
export type { PortRange, PortShard, StackLogger, StackOptions } from "./stack/options.js";
export { EPHEMERAL_PORTS } from "./stack/options.js";
export { RunBuffer } from "./stack/run-buffer.js";
export {
  type CloseCause,
  type CloseInfo,
  Socket,
  type SocketCounters,
  SocketState,
} from "./stack/socket.js";
export { Stack, type StackStats } from "./stack/stack.js";
export { steeredQueue } from "./stack/tuple.js";
export { type Endpoint, parseEndpoint } from "./wire/address.js";
export * as wire from "./wire/index.js";
