export {
  createMemoryPair,
  MemoryLink,
  type MemoryPair,
  type MemoryPairOptions,
  MemoryQueue,
} from "./memory-pair.js";
export {
  PHANTUN_UNACKED_LIMIT,
  type PhantunCloseReason,
  PhantunConnection,
  type PhantunConnectionCounters,
  PhantunPeer,
  type PhantunPeerCounters,
  type PhantunPeerOptions,
  type PhantunState,
} from "./phantun-peer.js";
