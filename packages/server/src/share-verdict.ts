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
import { ReplayCache, SynReplay, TunnelKey, timestampOptionOffset, wire } from "fake-tcp";
import { SHARE_MARK } from "fake-tcp-common";
import { NfQueue, type NfQueueBatch } from "fake-tcp-tun/nfqueue";

/** Counters of the verdicts. */
export interface ShareVerdictStats {
  /** SYNs with a valid token: admitted to the tunnel. */
  admitted: number;
  /** Every other SYN: left to the host's service. */
  passed: number;
  /** Of those: a valid token already seen from another client end (a replay). */
  replayed: number;
}

/**
 * Tokens remembered against replays: more than the keyed SYNs of a token's life (two minutes)
 * a server expects; an entry overwritten early only lets that token be replayed once more.
 */
const REPLAY_CACHE_SIZE = 65_536;

/** The client end of a SYN, in the shape the replay cache compares (no allocation per SYN). */
interface ClientEnd {
  family: 4 | 6;
  r0: number;
  r1: number;
  r2: number;
  r3: number;
  remotePort: number;
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
  readonly stats: ShareVerdictStats = { admitted: 0, passed: 0, replayed: 0 };
  private readonly queue: NfQueue;

  private constructor(options: ShareVerdictOptions) {
    const key = new TunnelKey(options.key);
    const port = options.port;
    const now = options.now ?? Date.now;
    const stats = this.stats;
    const filter = new KeyedSynFilter(key, port, stats);
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
        if (filter.admits(b.buffer, b.start(i), b.length(i), t)) {
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

/**
 * Whether a queued packet is a keyed SYN for the port, valid now, and not a replay: the checks
 * of `verifyKeyedSyn`, then the replay cache the stack keeps too, so that a SYN captured and
 * sent again from another client end goes to the service, which answers it as it answers any
 * stranger (the stack would stay silent: a difference a prober could see). A retransmission
 * from the same client end is admitted again. Allocates nothing per packet.
 */
export class KeyedSynFilter {
  private readonly parser = new wire.SegmentParser();
  private readonly replays = new ReplayCache(REPLAY_CACHE_SIZE);
  private readonly end: ClientEnd = { family: 4, r0: 0, r1: 0, r2: 0, r3: 0, remotePort: 0 };

  constructor(
    private readonly key: TunnelKey,
    private readonly port: number,
    private readonly stats: Pick<ShareVerdictStats, "replayed">,
  ) {}

  /** Packet `buf[start, start + length)` at clock `now` (ms since the epoch). */
  admits(buf: Uint8Array, start: number, length: number, now: number): boolean {
    const parser = this.parser;
    if (parser.parse(buf, start, length) !== wire.ParseError.ok) return false;
    const tcp = parser.tcp;
    if (tcp.flags !== wire.TcpFlags.SYN || tcp.dstPort !== this.port) return false;
    const ts = timestampOptionOffset(buf, tcp.optionsOffset, tcp.optionsLength);
    if (ts < 0) return false;
    const tsval = wire.read32(buf, ts);
    const slot = this.key.tokenSlot(this.port, tcp.seq, tsval, now);
    if (slot < 0) return false;
    const end = this.end;
    end.family = parser.family;
    if (parser.family === 4) {
      end.r0 = parser.ip4.src;
      end.r1 = 0;
      end.r2 = 0;
      end.r3 = 0;
    } else {
      const a = parser.ip6.src;
      end.r0 = a[0];
      end.r1 = a[1];
      end.r2 = a[2];
      end.r3 = a[3];
    }
    end.remotePort = tcp.srcPort;
    // The cache compares only the family, the remote address and the remote port.
    const tuple = end as unknown as Parameters<ReplayCache["admitSyn"]>[0];
    if (this.replays.admitSyn(tuple, tcp.seq, tsval, slot, now) === SynReplay.replay) {
      this.stats.replayed++;
      return false;
    }
    return true;
  }
}
