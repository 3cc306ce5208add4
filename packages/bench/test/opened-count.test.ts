import { describe, expect, it } from "vitest";
import { openedFromStats } from "../src/opened-count.js";

describe("openedFromStats", () => {
  it("reads the stats line's opened counter (summed over the shards)", () => {
    expect(openedFromStats({ opened: 1000 })).toBe(1000);
    expect(openedFromStats({ opened: 1000, shards: [{ opened: 480 }, { opened: 520 }] })).toBe(
      1000,
    );
  });

  it("is null when a shard did not answer or the counter is missing", () => {
    expect(openedFromStats({ opened: 480, shards: [{ opened: 480 }, {}] })).toBeNull();
    expect(openedFromStats({ connections: 3 })).toBeNull();
  });
});
