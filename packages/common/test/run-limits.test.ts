/**
 * The largest run the stack's writer builds (derived from the IP length fields in fake-tcp's
 * wire module) is the largest the TUN queue accepts: the two packages do not import each
 * other, so this test is where the two statements of the limit meet.
 */
import { wire } from "fake-tcp";
import { MAX_SEGMENTED_PAYLOAD_V4, MAX_SEGMENTED_PAYLOAD_V6 } from "fake-tcp-tun";
import { describe, expect, it } from "vitest";

describe("segmentation run limits", () => {
  it("the writer's largest run payload is the TUN queue's, per family", () => {
    expect(wire.maxSegmentedPayload(4)).toBe(MAX_SEGMENTED_PAYLOAD_V4);
    expect(wire.maxSegmentedPayload(6)).toBe(MAX_SEGMENTED_PAYLOAD_V6);
  });

  it("a data segment's headers are the IP header and a 20-byte TCP header", () => {
    expect(wire.dataHeaderLength(4)).toBe(40);
    expect(wire.dataHeaderLength(6)).toBe(60);
  });
});
