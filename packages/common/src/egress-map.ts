/**
 * The client host's egress map: for each server address, the host's own address that the
 * kernel would use as source towards it. The client's host rules give the stack's segments
 * this source on the way out (a stateless rewrite, see `nft.ts`), so the map must name the
 * address of the route the kernel takes now. It is looked up before every connection: after
 * roaming (a new address, another route) the old connection dies of dead-peer detection and
 * the reconnect picks up the new source.
 */
import { createSocket } from "node:dgram";
import { errnoCode } from "./errors.js";
import { EGRESS_MAP, type NftCommand, nftFailure, runNft, tableName } from "./nft.js";

/** The address the kernel chooses as source towards `address` (no packet is sent). */
export function sourceAddressTowards(address: string, family: 4 | 6): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createSocket(family === 4 ? "udp4" : "udp6");
    const done = (err: Error | null, source?: string) => {
      socket.close();
      if (err) reject(err);
      else resolve(source!);
    };
    socket.on("error", (err) => done(err));
    // Connecting a UDP socket only asks the routing table; the port does not matter.
    socket.connect(9, address, () => {
      try {
        done(null, socket.address().address);
      } catch (err) {
        done(err as Error);
      }
    });
  });
}

/** One element of the egress map, in nft syntax. */
export function egressElement(server: string, source: string): string {
  return `{ ${server} : ${source} }`;
}

/**
 * How long a shard trusts what it wrote itself without writing it again: another shard may
 * have written another source since (it saw a route this one has not seen yet). Past this,
 * the next connection to that server writes it again, in the background.
 */
const WRITTEN_TRUST_MS = 10_000;

/** What an {@link EgressMap} knows is in the map: server address -> source address. */
export type EgressEntries = Readonly<Record<string, string>>;

/**
 * Keeps the `egress4`/`egress6` map of the client's table current for the servers it
 * connects to. One per shard; each remembers what is in the map (what it wrote, or what the
 * main thread wrote at start), so that a connection waits for nft only when the source
 * towards its server changed or was never written: an nft run takes tens of milliseconds,
 * much more on a loaded machine, and a new peer's datagrams wait for the connection.
 */
export class EgressMap {
  private readonly table: string;
  private readonly written = new Map<string, { source: string; at: number }>();
  private readonly pending = new Map<string, Promise<void>>();

  constructor(
    tun: string,
    known: EgressEntries = {},
    private readonly nft: NftCommand = ["nft"],
    private readonly sourceTowards = sourceAddressTowards,
  ) {
    this.table = tableName(tun);
    const now = Date.now();
    for (const [server, source] of Object.entries(known))
      this.written.set(server, { source, at: now });
  }

  /** What this map believes is written (to hand to the shards). */
  entries(): EgressEntries {
    return Object.fromEntries([...this.written].map(([server, { source }]) => [server, source]));
  }

  /**
   * Makes sure the stack's segments to `server` leave with the host's current source towards
   * it. Rejects when there is no route or nft fails (the connection attempt fails and is
   * retried later).
   */
  async prepare(server: string, family: 4 | 6): Promise<void> {
    let source: string;
    try {
      source = await this.sourceTowards(server, family);
    } catch (err) {
      throw new Error(`no route to ${server}: ${errnoCode(err) ?? String(err)}`);
    }
    const last = this.written.get(server);
    if (last?.source === source) {
      // Believed to be in place: connect now, and write it again in the background now and
      // then (a failure there is the next connection's to report).
      if (Date.now() - last.at >= WRITTEN_TRUST_MS)
        this.write(server, family, source).catch(() => {});
      return;
    }
    await this.write(server, family, source);
  }

  /** Writes `server : source` (one nft run at a time per server). */
  private write(server: string, family: 4 | 6, source: string): Promise<void> {
    const key = `${server} ${source}`;
    const inFlight = this.pending.get(key);
    if (inFlight) return inFlight;
    const work = this.replace(server, family, source).finally(() => this.pending.delete(key));
    this.pending.set(key, work);
    return work;
  }

  private async replace(server: string, family: 4 | 6, source: string): Promise<void> {
    const map = `inet ${this.table} ${EGRESS_MAP[family]}`;
    const element = egressElement(server, source);
    // `add` succeeds when the element is missing or already says the same; a different
    // source (roaming, or another shard's older write) is replaced in one transaction.
    let result = await runNft(this.nft, ["add", "element", ...map.split(" "), element]);
    if (result.code !== 0 && /File exists/i.test(result.stderr)) {
      const script = `delete element ${map} { ${server} }\nadd element ${map} ${element}\n`;
      result = await runNft(this.nft, ["-f", "-"], script);
    }
    if (result.code !== 0) throw nftFailure(`updating ${map}`, result.stderr);
    this.written.set(server, { source, at: Date.now() });
  }
}
