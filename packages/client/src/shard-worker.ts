/** Entry of a client shard's worker_thread (see `shard.ts`). */
import { runShardWorker } from "fake-tcp-common";
import { startClientShard } from "./shard.js";

runShardWorker(startClientShard);
