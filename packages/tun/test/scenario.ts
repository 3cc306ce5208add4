/**
 * Runs a scenario program of test/fixtures inside a namespace. A scenario prints its JSON
 * report as the last line of its stdout, with `error` set when the scenario itself failed.
 */
import type { Netns } from "../../../test-support/netns.js";

// biome-ignore lint/suspicious/noExplicitAny: a scenario's JSON report
export type ScenarioReport = Record<string, any>;

/**
 * Runs `cmd` in `ns` as scenario `name`, killed after `timeoutMs`. Resolves with its report plus
 * `exitCode` and `stderr`; rejects, with what it printed, on a timeout, an `error` or no report.
 */
export function runScenarioProgram(
  ns: Netns,
  name: string,
  cmd: string[],
  timeoutMs: number,
): Promise<ScenarioReport> {
  const child = ns.spawn(cmd[0], cmd.slice(1));
  let out = "";
  let err = "";
  child.stdout?.setEncoding("utf8").on("data", (c: string) => {
    out += c;
  });
  child.stderr?.setEncoding("utf8").on("data", (c: string) => {
    err += c;
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`scenario ${name} timed out; stderr: ${err}`));
    }, timeoutMs);
    child.once("exit", (code) => {
      clearTimeout(timer);
      const line = out.trim().split("\n").pop() ?? "";
      try {
        const report = JSON.parse(line) as ScenarioReport;
        if (report.error) reject(new Error(`scenario ${name}: ${report.error}; stderr: ${err}`));
        else resolve({ ...report, exitCode: code, stderr: err });
      } catch {
        reject(
          new Error(`scenario ${name} exited ${code} without a report: ${out}; stderr: ${err}`),
        );
      }
    });
  });
}
