/**
 * Port sharing (`--share`): the verdict on each new SYN to the shared port. The queueing rule
 * (see `share-rules.ts` in fake-tcp-common) hands this program only SYNs of connections not yet
 * admitted; a SYN whose timestamp carries a valid key token is accepted with the share mark
 * bit (the nft table then remembers its client end and rewrites it, and the rest of its
 * connection, to the stack without asking again); every other SYN is accepted unchanged and
 * reaches the host's own service as if this program did not exist. Runs in the main thread
 * (one verdict per connection, whatever the shard count): the TUN's steering still gives the
 * admitted connection to the shard that owns its ports.
 */
import { TunnelKey, verifyKeyedSyn } from "fake-tcp";
import { SHARE_MARK } from "fake-tcp-common";
import { NfQueue, type NfQueueBatch } from "fake-tcp-tun/nfqueue";

/** Counters of the verdicts. */
export interface ShareVerdictStats {
  /** SYNs with a valid token: admitted to the tunnel. */
  admitted: number;
  /** Every other SYN: left to the host's service. */
  passed: number;
}

export interface ShareVerdictOptions {
  readonly queue: number;
  /** The tunnel key (32 bytes). */
  readonly key: Uint8Array;
  /** The shared port (`--listen`). */
  readonly port: number;
  /** Clock (ms since the epoch), for tests. */
  readonly now?: () => number;
}

/** The verdict program of one shared port; {@link close} unbinds it. */
export class ShareVerdict {
  readonly stats: ShareVerdictStats = { admitted: 0, passed: 0 };
  private readonly queue: NfQueue;

  private constructor(options: ShareVerdictOptions) {
    const key = new TunnelKey(options.key);
    const port = options.port;
    const now = options.now ?? Date.now;
    const stats = this.stats;
    this.queue = NfQueue.open({
      queue: options.queue,
      // IPv6 header, TCP header and 40 bytes of options: the whole SYN the token is in.
      copyBytes: 128,
      // Full queue or socket buffer (a SYN flood beyond what this thread checks): SYNs pass
      // to the host's service (its SYN cookies answer them); a keyed client's SYN that
      // passes this way gets a SYN-ACK it does not accept and is sent again.
      failOpen: true,
      maxLength: 8192,
      batchSize: 256,
      recvBufferBytes: 8 << 20,
    });
    this.queue.onPackets((b: NfQueueBatch) => {
      const t = now();
      for (let i = 0; i < b.count; i++) {
        if (verifyKeyedSyn(b.buffer, key, port, t, b.start(i), b.length(i))) {
          b.accept(i, (b.mark(i) | SHARE_MARK) >>> 0);
          stats.admitted++;
        } else {
          stats.passed++;
        }
      }
    });
  }

  /** Binds the queue; throws (with the errno code) when it cannot. */
  static open(options: ShareVerdictOptions): ShareVerdict {
    return new ShareVerdict(options);
  }

  /** The queue's own counters (fail-open, errors). */
  queueStats() {
    return this.queue.stats();
  }

  close(): void {
    this.queue.close();
  }
}
