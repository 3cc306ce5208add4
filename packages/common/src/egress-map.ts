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
 * How long a shard trusts what it wrote itself: another shard may have written another source
 * since (it saw a route this one has not seen yet); after this, the next connection writes
 * again.
 */
const WRITTEN_TRUST_MS = 10_000;

/**
 * Keeps the `egress4`/`egress6` map of the client's table current for the servers it
 * connects to. One per shard; each remembers what it last wrote, so nft runs only when the
 * source towards a server changed (or was not written by this shard lately).
 */
export class EgressMap {
  private readonly table: string;
  private readonly written = new Map<string, { source: string; at: number }>();
  private readonly pending = new Map<string, Promise<void>>();

  constructor(
    tun: string,
    private readonly nft: NftCommand = ["nft"],
    private readonly sourceTowards = sourceAddressTowards,
  ) {
    this.table = tableName(tun);
  }

  /**
   * Makes sure the stack's segments to `server` leave with the host's current source towards
   * it. Rejects when there is no route (the connection attempt fails and is retried later).
   */
  async prepare(server: string, family: 4 | 6): Promise<void> {
    const inFlight = this.pending.get(server);
    if (inFlight) return inFlight;
    const work = this.update(server, family).finally(() => this.pending.delete(server));
    this.pending.set(server, work);
    return work;
  }

  private async update(server: string, family: 4 | 6): Promise<void> {
    let source: string;
    try {
      source = await this.sourceTowards(server, family);
    } catch (err) {
      throw new Error(`no route to ${server}: ${errnoCode(err) ?? String(err)}`);
    }
    const last = this.written.get(server);
    if (last?.source === source && Date.now() - last.at < WRITTEN_TRUST_MS) return;
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
