/**
 * Runs an external command without a shell, feeding it stdin, with a time bound.
 */
import { spawn } from "node:child_process";

/** Outcome of a finished command. `code` is null when it was killed (e.g. by the time bound). */
export interface CommandResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs `argv[0]` with `argv[1..]`, writes `input` to its stdin, and resolves when it exits.
 * Rejects only when the command cannot be started (e.g. `ENOENT`: not installed).
 */
export function runCommand(
  argv: readonly string[],
  input = "",
  timeoutMs = 5_000,
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), {
      stdio: ["pipe", "pipe", "pipe"],
      timeout: timeoutMs,
      killSignal: "SIGKILL",
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      stderr += chunk;
    });
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, stdout, stderr }));
    // A command that exits before reading stdin would make the write fail with EPIPE.
    child.stdin.on("error", () => {});
    child.stdin.end(input);
  });
}
