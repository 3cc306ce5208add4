/** The programs' version: that of this package (the packages are released together). */
import { readFileSync } from "node:fs";

let cached: string | undefined;

/** The `version` of fake-tcp-common's package.json ("unknown" if it cannot be read). */
export function programVersion(): string {
  if (cached === undefined) {
    try {
      const text = readFileSync(new URL("../package.json", import.meta.url), "utf8");
      cached = String((JSON.parse(text) as { version?: unknown }).version ?? "unknown");
    } catch {
      cached = "unknown";
    }
  }
  return cached;
}
