import { describe, expect, it } from "vitest";
import { Cleanup } from "../src/lifecycle.js";

describe("Cleanup", () => {
  it("undoes newest first, keeps going after a failure, runs each step once", async () => {
    const order: string[] = [];
    const errors: string[] = [];
    const cleanup = new Cleanup();
    cleanup.add("rules", () => {
      order.push("rules");
    });
    cleanup.add("device", () => {
      throw new Error("boom");
    });
    cleanup.add("sockets", async () => {
      order.push("sockets");
    });
    await cleanup.run((what) => errors.push(what));
    await cleanup.run((what) => errors.push(what));
    expect(order).toEqual(["sockets", "rules"]);
    expect(errors).toEqual(["device"]);
  });
});
