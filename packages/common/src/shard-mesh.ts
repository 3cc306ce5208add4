/**
 * Messages between the shards of one program, for what has to cross shards: the flows of one
 * spread UDP peer (see flow-group.ts) live in several shards. The main thread makes one
 * MessageChannel per pair of shards at start; a shard posts to another by index. A message to
 * the shard itself is delivered on a later turn, like one from another shard, so the code
 * around it behaves the same with one shard as with many.
 */
import type { MessagePort, TransferListItem } from "node:worker_threads";

/** What a shard receives: the sender's index and the message. */
export type MeshHandler = (from: number, message: unknown) => void;

export class ShardMesh {
  private handler: MeshHandler = () => {};
  private closed = false;

  /**
   * `index`: this shard; `ports[i]`: the port to shard `i` (null for this shard itself and
   * when there is only one shard).
   */
  constructor(
    readonly index: number,
    private readonly ports: readonly (MessagePort | null)[] = [],
  ) {
    ports.forEach((port, from) => {
      if (port === null) return;
      port.on("message", (message: unknown) => {
        if (!this.closed) this.handler(from, message);
      });
      // A port must not keep the worker alive by itself: the shard's own handles do.
      port.unref();
    });
  }

  /** Shards the mesh reaches (this one included). */
  get count(): number {
    return Math.max(1, this.ports.length);
  }

  onMessage(handler: MeshHandler): void {
    this.handler = handler;
  }

  /** Posts `message` to shard `to` (`transfer`: buffers moved, not copied). */
  post(to: number, message: unknown, transfer?: readonly TransferListItem[]): void {
    if (this.closed) return;
    if (to === this.index) {
      setImmediate(() => {
        if (!this.closed) this.handler(this.index, message);
      });
      return;
    }
    const port = this.ports[to];
    if (port) port.postMessage(message, transfer);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const port of this.ports) port?.close();
  }
}
