/**
 * The flow-group control messages (layout, keyed MAC), the packing of datagrams for another
 * shard, the batch rotation and the reorder-depth measure.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  BatchRoundRobin,
  decodeFlowMessage,
  encodeFlowMessage,
  FLOW_CONTROL_LENGTH,
  FlowMessageType,
  isFlowControl,
  PackedDatagrams,
  reorderDepth,
  unpackDatagrams,
} from "../src/flow-control.js";

const token = { shard: 3, group: 0xdeadbeef, secret: Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]) };
const key = new Uint8Array(32).fill(9);

describe("flow control messages", () => {
  it("round-trips, unkeyed and keyed, and has the documented layout", () => {
    const plain = encodeFlowMessage({ type: FlowMessageType.Join, flow: 2, token });
    expect(plain).toHaveLength(FLOW_CONTROL_LENGTH);
    expect(plain.subarray(0, 10).toString("hex")).toBe("f74654464c4f57310302");
    expect(plain.subarray(10, 24).toString("hex")).toBe("0003deadbeef0102030405060708");
    expect(plain.subarray(24).every((b) => b === 0)).toBe(true);
    expect(decodeFlowMessage(plain)).toEqual({ type: FlowMessageType.Join, flow: 2, token });
    const keyed = encodeFlowMessage({ type: FlowMessageType.Opened, flow: 0, token }, key);
    expect(keyed.subarray(24).some((b) => b !== 0)).toBe(true);
    expect(decodeFlowMessage(keyed, key)?.token).toEqual(token);
  });

  it("refuses a wrong or missing MAC, an unknown type, another length or magic", () => {
    const keyed = encodeFlowMessage({ type: FlowMessageType.Join, flow: 1, token }, key);
    expect(decodeFlowMessage(keyed, new Uint8Array(32).fill(8))).toBeNull();
    expect(decodeFlowMessage(keyed)).toBeNull(); // unkeyed end: MAC bytes must be zero
    const plain = encodeFlowMessage({ type: FlowMessageType.Join, flow: 1, token });
    expect(decodeFlowMessage(plain, key)).toBeNull(); // keyed end: no MAC
    const tampered = Buffer.from(keyed);
    tampered[20] ^= 1;
    expect(decodeFlowMessage(tampered, key)).toBeNull();
    const badType = Buffer.from(plain);
    badType[8] = 9;
    expect(decodeFlowMessage(badType)).toBeNull();
    expect(isFlowControl(plain.subarray(0, 39))).toBe(false);
    const badMagic = Buffer.from(plain);
    badMagic[0] = 0;
    expect(isFlowControl(badMagic)).toBe(false);
  });
});

describe("PackedDatagrams", () => {
  it("hands over exactly the datagrams packed, in order, across full buffers", () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ minLength: 0, maxLength: 1500 }), { maxLength: 80 }),
        (datagrams) => {
          const packer = new PackedDatagrams(8 * 1024);
          const out: string[] = [];
          const drain = () =>
            unpackDatagrams(packer.take(), (v) => out.push(Buffer.from(v).toString("hex")));
          for (const d of datagrams) {
            if (!packer.add(d)) {
              drain();
              expect(packer.add(d)).toBe(true);
            }
          }
          drain();
          expect(out).toEqual(datagrams.map((d) => Buffer.from(d).toString("hex")));
        },
      ),
    );
  });
});

describe("BatchRoundRobin", () => {
  it("gives each batch to the next flow and survives removals", () => {
    const rr = new BatchRoundRobin<string>();
    expect(rr.current()).toBeUndefined();
    for (const f of ["a", "b", "c"]) rr.add(f);
    const seen: string[] = [];
    for (let i = 0; i < 6; i++) {
      seen.push(rr.current()!);
      rr.next();
    }
    expect(seen).toEqual(["a", "b", "c", "a", "b", "c"]);
    rr.next(); // at "b"
    rr.remove("a");
    expect(rr.current()).toBe("b");
    rr.remove("c");
    rr.next();
    expect(rr.current()).toBe("b");
    rr.remove("b");
    expect(rr.current()).toBeUndefined();
  });
});

describe("reorderDepth", () => {
  it("is the furthest a datagram arrived behind the highest seen", () => {
    expect(reorderDepth([0, 1, 2, 3])).toBe(0);
    expect(reorderDepth([0, 2, 1, 3])).toBe(1);
    expect(reorderDepth([8, 9, 0, 1, 10])).toBe(9);
  });
});
