/** The many-connection bench's logic: options, derived figures, its docs section. */
import { describe, expect, it } from "vitest";
import { listOption, parseNofileLimit } from "../../e2e/src/tools/conn-probe-args.js";
import { parseBenchArgs } from "../src/cli-options.js";
import {
  appendConnectionsRun,
  bytesPerConnection,
  CONNECTIONS_TITLE,
  type ConnectionsRun,
  renderConnectionsSection,
  setupRate,
  shardConnections,
  shardSpread,
} from "../src/connection-figures.js";
import { connectionArgs } from "../src/connections.js";

describe("--connections", () => {
  it("takes a count and runs alone", () => {
    expect(parseBenchArgs(["--connections", "10000"]).connections).toBe(10000);
    expect(parseBenchArgs(["--connections", "10000", "--label", "x"]).label).toBe("x");
    expect(() => parseBenchArgs(["--connections"])).toThrow(/whole number from 1000 to 30000/);
    expect(() => parseBenchArgs(["--connections", "999"])).toThrow(/from 1000/);
    expect(() => parseBenchArgs(["--connections", "30001"])).toThrow(/to 30000/);
    expect(() => parseBenchArgs(["--connections", "1e4"])).toThrow(/whole number/);
    expect(() => parseBenchArgs(["--connections", "5000", "--quick"])).toThrow(/runs alone/);
  });

  it("raises the programs' limits above the connection count", () => {
    const args = connectionArgs(10000);
    const value = (list: string[], flag: string) => Number(list[list.indexOf(flag) + 1]);
    expect(value(args.client, "--max-connections")).toBeGreaterThan(10000);
    expect(value(args.server, "--max-connections")).toBeGreaterThan(10000);
    expect(value(args.server, "--max-connections-per-source")).toBe(
      value(args.server, "--max-connections"),
    );
    // Never below the programs' own defaults.
    expect(value(connectionArgs(1000).server, "--max-connections")).toBe(4096);
  });
});

describe("connection figures", () => {
  it("spread is max over mean", () => {
    expect(shardSpread([5000, 5000])).toBe(1);
    expect(shardSpread([6000, 4000])).toBeCloseTo(1.2);
    expect(shardSpread([10, 0, 0, 0])).toBe(4);
    expect(shardSpread([])).toBeNull();
    expect(shardSpread([0, 0])).toBeNull();
  });

  it("reads each shard's connections from a stats line, or says a shard is missing", () => {
    expect(
      shardConnections({ connections: 7, shards: [{ connections: 3 }, { connections: 4 }] }),
    ).toEqual([3, 4]);
    expect(shardConnections({ connections: 7 })).toEqual([7]);
    expect(shardConnections({ connections: 3, shards: [{ connections: 3 }, {}] })).toBeNull();
    expect(shardConnections({})).toBeNull();
  });

  it("per-connection bytes and set-up rate", () => {
    const p = { rssBefore: 100, rssAfter: 1100, shardConnections: [], stats: {} };
    expect(bytesPerConnection(p, 10)).toBe(100);
    expect(bytesPerConnection({ ...p, rssAfter: null }, 10)).toBeNull();
    expect(bytesPerConnection(p, 0)).toBeNull();
    const setup = {
      connections: 10000,
      answered: 10000,
      datagramsSent: 20000,
      bindMs: 100,
      allAnsweredMs: 4000,
      medianFirstReplyMs: 2000,
      p90FirstReplyMs: 3500,
      progress: [],
    };
    expect(setupRate(setup)).toBe(2500);
    expect(setupRate({ ...setup, allAnsweredMs: null })).toBeNull();
    expect(setupRate(null)).toBeNull();
  });
});

describe("connections section", () => {
  const MIB = 1024 * 1024;
  const run: ConnectionsRun = {
    label: "t",
    startedAt: new Date("2026-12-01T06:00:00Z"),
    durationSeconds: 90,
    cores: 2,
    nodeVersion: "v20.0.0",
    commit: "abc",
    loadAverage: 1,
    loadAverageEnd: 2,
    connections: 10000,
    clientArgs: ["--max-connections", "12000"],
    serverArgs: ["--max-connections", "12000"],
    setup: {
      connections: 10000,
      answered: 10000,
      datagramsSent: 12000,
      bindMs: 50,
      allAnsweredMs: 5000,
      medianFirstReplyMs: 2500,
      p90FirstReplyMs: 4500,
      progress: [],
    },
    client: {
      rssBefore: 100 * MIB,
      rssAfter: 120 * MIB,
      shardConnections: [5000, 5000],
      stats: {},
    },
    server: {
      rssBefore: 100 * MIB,
      rssAfter: 150 * MIB,
      shardConnections: [5100, 4900],
      stats: {},
    },
    load: [
      {
        flows: 1,
        offeredMbps: 200,
        seconds: 3,
        sent: 1,
        sendDrops: 0,
        sentMbps: 200,
        echoed: 1,
        echoedMbps: 199,
        lossPercent: 0.5,
      },
    ],
    errors: [],
  };

  it("states the figures against the targets", () => {
    const text = renderConnectionsSection(run, "x.json");
    expect(text).toContain("**10000 of 10000 connections**");
    expect(text).toContain("set-up 2000 connections/s");
    expect(text).toContain("server RSS with all open 150.0 MiB (target < 200 MiB: met)");
    expect(text).toContain("max/mean 1.020 (target < 1.3: met)");
    expect(text).toContain(
      "| fake-tcp-server | 100.0 MiB | 150.0 MiB | 5.1 KiB | 5100 / 4900 | 1.020 |",
    );
    expect(text).toContain("| 1 | 200 | 200.0 | 199.0 | 0.50 % | 0 |");
    expect(text).toContain("[x.json](x.json)");
    const over = renderConnectionsSection(
      { ...run, server: { ...run.server!, rssAfter: 250 * MIB, shardConnections: [8000, 2000] } },
      null,
    );
    expect(over).toContain("(target < 200 MiB: missed)");
    expect(over).toContain("(target < 1.3: missed)");
  });

  it("appends to its own section, creating it once, leaving others alone", () => {
    const first = appendConnectionsRun("# Benchmarks\n\n## Other\n\ntext\n", "### Run 1\n");
    expect(first.indexOf("## Other")).toBeLessThan(first.indexOf(CONNECTIONS_TITLE));
    const second = appendConnectionsRun(`${first}\n## Later\n\nmore\n`, "### Run 2\n");
    expect(second.split(CONNECTIONS_TITLE).length).toBe(2);
    expect(second.indexOf("### Run 1")).toBeLessThan(second.indexOf("### Run 2"));
    expect(second.indexOf("### Run 2")).toBeLessThan(second.indexOf("## Later"));
    expect(second).toContain("text\n");
  });
});

describe("connection probe arguments", () => {
  it("lists", () => {
    expect(listOption("1,1000")).toEqual([1, 1000]);
    expect(() => listOption("1,,2")).toThrow(/positive whole numbers/);
    expect(() => listOption("0")).toThrow();
  });

  it("reads the open-file limit from /proc/self/limits", () => {
    const limits = [
      "Limit                     Soft Limit           Hard Limit           Units",
      "Max open files            20000                20000                files",
    ].join("\n");
    expect(parseNofileLimit(limits)).toBe(20000);
    expect(
      parseNofileLimit("Max open files            unlimited            unlimited  files"),
    ).toBeNull();
    expect(parseNofileLimit("nothing")).toBeNull();
  });
});
