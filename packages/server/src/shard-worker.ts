/** Entry of a server shard's worker_thread (see `shard.ts`). */
import { runShardWorker } from "fake-tcp-common";
import { startServerShard } from "./shard.js";

runShardWorker(startServerShard);
