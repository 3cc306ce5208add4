export {
  createMemoryPair,
  MemoryLink,
  type MemoryPair,
  type MemoryPairOptions,
  MemoryQueue,
} from "./memory-pair.js";
