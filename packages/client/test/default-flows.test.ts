import { describe, expect, it } from "vitest";
import { defaultFlows } from "../src/cli.js";

describe("the default of --flows", () => {
  it("is one flow per shard, but no more than half the cores and no more than 4", () => {
    // A 2-core host keeps one connection per UDP peer: its applications need the other core.
    expect(defaultFlows(2, 2)).toBe(1);
    expect(defaultFlows(4, 2)).toBe(1);
    expect(defaultFlows(1, 1)).toBe(1);
    expect(defaultFlows(3, 3)).toBe(1);
    expect(defaultFlows(4, 4)).toBe(2);
    expect(defaultFlows(2, 8)).toBe(2);
    expect(defaultFlows(6, 6)).toBe(3);
    expect(defaultFlows(8, 8)).toBe(4);
    expect(defaultFlows(64, 64)).toBe(4);
    expect(defaultFlows(1, 64)).toBe(1);
  });
});
