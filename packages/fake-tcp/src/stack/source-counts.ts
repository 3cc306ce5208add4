/**
 * Connections per source: per IPv4 address, per IPv6 /64 (one subscriber's prefix: an IPv6
 * attacker has 2^64 addresses, so counting single addresses would limit nothing). Lookups
 * allocate nothing (the SYN-flood path asks on every SYN).
 */
export class SourceCounts {
  private readonly v4 = new Map<number, number>();
  /** IPv6: first address word, then second (the /64), then the count. */
  private readonly v6 = new Map<number, Map<number, number>>();

  /** Connections from the source of address words (r0, r1); r1 is ignored for IPv4. */
  count(family: 4 | 6, r0: number, r1: number): number {
    if (family === 4) return this.v4.get(r0 | 0) ?? 0;
    return this.v6.get(r0 | 0)?.get(r1 | 0) ?? 0;
  }

  add(family: 4 | 6, r0: number, r1: number): void {
    if (family === 4) {
      this.v4.set(r0 | 0, (this.v4.get(r0 | 0) ?? 0) + 1);
      return;
    }
    let inner = this.v6.get(r0 | 0);
    if (inner === undefined) {
      inner = new Map();
      this.v6.set(r0 | 0, inner);
    }
    inner.set(r1 | 0, (inner.get(r1 | 0) ?? 0) + 1);
  }

  remove(family: 4 | 6, r0: number, r1: number): void {
    if (family === 4) {
      const n = (this.v4.get(r0 | 0) ?? 0) - 1;
      if (n > 0) this.v4.set(r0 | 0, n);
      else this.v4.delete(r0 | 0);
      return;
    }
    const inner = this.v6.get(r0 | 0);
    if (inner === undefined) return;
    const n = (inner.get(r1 | 0) ?? 0) - 1;
    if (n > 0) inner.set(r1 | 0, n);
    else {
      inner.delete(r1 | 0);
      if (inner.size === 0) this.v6.delete(r0 | 0);
    }
  }

  /** Distinct sources counted (for tests and stats). */
  get size(): number {
    let n = this.v4.size;
    for (const inner of this.v6.values()) n += inner.size;
    return n;
  }
}
