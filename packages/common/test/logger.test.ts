/**
 * The programs' logger does not block on stdout: with a stdout pipe that nobody reads, the
 * process still gets past its log calls and its timers still run; once the pipe is read,
 * every line arrives before the exit. A process.exit right after logging loses no line either
 * (pino writes the buffer synchronously on exit).
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const WRITER = fileURLToPath(new URL("./fixtures/log-writer.mjs", import.meta.url));

/** Runs the writer with stdout unread until it has reported on stderr (or 10 s passed). */
async function runWriter(
  lines: number,
  how: "flush" | "exit",
): Promise<{
  report: { loggedMs: number; ticks: number } | null;
  stdoutLines: number;
  code: number | null;
}> {
  const child = spawn(process.execPath, [WRITER, String(lines), how], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout.pause();
  let stderr = "";
  const reported = new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 10_000);
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
      if (stderr.includes("\n")) {
        clearTimeout(timer);
        resolve(true);
      }
    });
  });
  const ok = await reported;
  // Now read stdout to the end.
  let stdout = "";
  child.stdout.on("data", (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  child.stdout.resume();
  if (!ok) child.kill("SIGKILL");
  const code = await new Promise<number | null>((resolve) => child.once("close", resolve));
  return {
    report: ok ? JSON.parse(stderr.split("\n")[0]) : null,
    stdoutLines: stdout.split("\n").filter((l) => l.includes('"msg":"line"')).length,
    code,
  };
}

describe("logger", () => {
  // ~3 MiB of lines: far more than a pipe holds (64 KiB), less than the logger's buffer.
  const LINES = 20_000;

  it("gets past its log calls while stdout is not read, then delivers every line (flush at exit)", async () => {
    const { report, stdoutLines, code } = await runWriter(LINES, "flush");
    expect(report).not.toBeNull();
    expect(report!.ticks).toBeGreaterThan(0);
    expect(code).toBe(0);
    expect(stdoutLines).toBe(LINES);
  });

  it("delivers every line when the process exits right after logging", async () => {
    const child = spawn(process.execPath, [WRITER, String(LINES), "exit"], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let stdout = "";
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.once("close", resolve));
    expect(code).toBe(0);
    expect(stdout.split("\n").filter((l) => l.includes('"msg":"line"')).length).toBe(LINES);
  });
});
