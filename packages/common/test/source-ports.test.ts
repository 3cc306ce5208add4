import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { hostSourcePorts, portsOutside } from "../src/source-ports.js";

describe("the client stack's source ports under the host rules", () => {
  it("takes the larger stretch of unprivileged ports outside the host's ephemeral range", () => {
    // Linux's default: below it (31,744 ports) rather than above (4,536).
    expect(portsOutside("32768\t60999\n")).toEqual({ first: 1024, count: 31_744 });
    // A range low in the port space leaves the top.
    expect(portsOutside("1024 20000")).toEqual({ first: 20_001, count: 45_535 });
    expect(portsOutside("10000 65535")).toEqual({ first: 1024, count: 8_976 });
  });

  it("gives up when too few ports are left, or the text is not a range", () => {
    expect(portsOutside("1024 65535")).toBeUndefined();
    expect(portsOutside("1500 65000")).toBeUndefined();
    expect(portsOutside("")).toBeUndefined();
    expect(portsOutside("60999 32768")).toBeUndefined();
    expect(portsOutside("1 2 3")).toBeUndefined();
  });

  it("reads the host's setting, and falls back to Linux's default ephemeral range", () => {
    const dir = mkdtempSync(join(tmpdir(), "ports-"));
    const file = join(dir, "range");
    writeFileSync(file, "40000\t60999\n");
    expect(hostSourcePorts(file)).toEqual({ first: 1024, count: 38_976 });
    writeFileSync(file, "1024\t65535\n");
    expect(hostSourcePorts(file)).toEqual({ first: 32768, count: 28_232 });
    expect(hostSourcePorts(join(dir, "missing"))).toEqual({ first: 32768, count: 28_232 });
  });
});
