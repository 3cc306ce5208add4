/**
 * `--max-connections-per-source`: its default follows `--max-connections`, a value above the
 * table is refused with one line, and bad values name the flag.
 */
import { describe, expect, it } from "vitest";
import { defaultMaxConnectionsPerSource, parseServerArgs } from "../src/cli.js";

const base = ["--listen", "4567", "--remote", "127.0.0.1:51820"];

function usageError(argv: string[], env: NodeJS.ProcessEnv = {}): string {
  try {
    parseServerArgs(argv, env);
  } catch (err) {
    expect((err as Error).name).toBe("UsageError");
    expect((err as Error).message).not.toContain("\n");
    return (err as Error).message;
  }
  throw new Error("no error");
}

describe("--max-connections-per-source", () => {
  it("defaults to a quarter of --max-connections, rounded up", () => {
    expect(parseServerArgs(base, {})?.maxConnectionsPerSource).toBe(1024);
    expect(
      parseServerArgs([...base, "--max-connections", "10001"], {})?.maxConnectionsPerSource,
    ).toBe(2501);
    expect(defaultMaxConnectionsPerSource(1)).toBe(1);
    expect(defaultMaxConnectionsPerSource(4096)).toBe(1024);
  });

  it("takes a value up to --max-connections, from the command line or the environment", () => {
    const argv = [...base, "--max-connections", "12000", "--max-connections-per-source", "12000"];
    expect(parseServerArgs(argv, {})?.maxConnectionsPerSource).toBe(12000);
    const env = {
      FAKE_TCP_MAX_CONNECTIONS: "20000",
      FAKE_TCP_MAX_CONNECTIONS_PER_SOURCE: "15000",
    };
    expect(parseServerArgs(base, env)?.maxConnectionsPerSource).toBe(15000);
  });

  it("refuses a value above --max-connections, naming both flags and the fix", () => {
    const message = usageError([...base, "--max-connections-per-source", "5000"]);
    expect(message).toMatch(
      /--max-connections-per-source: 5000 is above --max-connections \(4096\)/,
    );
    expect(message).toMatch(/raise --max-connections/);
  });

  it.each([["0"], ["-1"], ["many"], ["1.5"], ["1000001"]])("refuses %s", (value) => {
    expect(usageError([...base, "--max-connections-per-source", value])).toMatch(
      /^--max-connections-per-source: ".*" is not a whole number from 1 to 1000000$/,
    );
  });

  it("refuses the flag given twice", () => {
    expect(
      usageError([
        ...base,
        "--max-connections-per-source",
        "10",
        "--max-connections-per-source",
        "20",
      ]),
    ).toMatch(/given more than once/);
  });
});
