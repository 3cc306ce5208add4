/**
 * Errors the programs report to the user as one line.
 *
 * A `UsageError` means the user can fix it (a wrong flag, an address, a missing privilege):
 * the program prints its message alone and exits with code 2. Anything else is an internal
 * error: exit code 1.
 */

/** Exit code for bad input: flags, addresses, files, privileges, names already taken. */
export const EXIT_USAGE = 2;
/** Exit code for an unexpected internal error. */
export const EXIT_INTERNAL = 1;

/** A problem the user can fix; `message` names the problem and the fix, on one line. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

/** The errno name of a Node system error (`EPERM`, `ENOENT`...), or undefined. */
export function errnoCode(err: unknown): string | undefined {
  if (typeof err === "object" && err !== null && "code" in err) {
    const code = (err as { code: unknown }).code;
    if (typeof code === "string") return code;
  }
  return undefined;
}

/** The message of any thrown value, squeezed onto one line. */
export function oneLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.replace(/\s*\n\s*/g, "; ").trim();
}
