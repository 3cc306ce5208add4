/** CPU time and memory of a process from /proc (Linux). */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

/** CPU time fields of /proc/PID/stat, in clock ticks. */
export interface ProcCpuTicks {
  utime: number;
  stime: number;
}

/**
 * Parses the text of /proc/PID/stat. The command name (field 2) is in parentheses and may
 * itself contain spaces and parentheses, so fields are counted from the LAST ')'.
 * utime and stime are fields 14 and 15 (1-based).
 */
export function parseProcStat(text: string): ProcCpuTicks {
  const close = text.lastIndexOf(")");
  if (close < 0) throw new Error("malformed /proc/PID/stat: no ')'");
  // After ") " come field 3 (state), 4, ...; field n is at index n - 3.
  const rest = text
    .slice(close + 1)
    .trim()
    .split(/\s+/);
  const utime = Number(rest[14 - 3]);
  const stime = Number(rest[15 - 3]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) {
    throw new Error("malformed /proc/PID/stat: utime/stime are not numbers");
  }
  return { utime, stime };
}

let clockTicks: number | null = null;

/** Kernel clock ticks per second (USER_HZ), from `getconf CLK_TCK` (100 on Linux). */
export function clockTicksPerSecond(): number {
  if (clockTicks === null) {
    try {
      clockTicks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());
    } catch {
      clockTicks = 100;
    }
    if (!(clockTicks > 0)) clockTicks = 100;
  }
  return clockTicks;
}

/**
 * CPU seconds (user + system) used so far by process `pid`. /proc/PID/stat of a thread-group
 * leader sums every thread of the process, live or exited (worker threads included), so one
 * read covers the whole program.
 */
export function processCpuSeconds(pid: number): number {
  const ticks = parseProcStat(readFileSync(`/proc/${pid}/stat`, "utf8"));
  return (ticks.utime + ticks.stime) / clockTicksPerSecond();
}
