/** Argument helpers of the connection probe (kept apart so they can be tested). */
import { readFileSync } from "node:fs";

/** "1,1000" -> [1, 1000]; throws on anything but a list of positive whole numbers. */
export function listOption(text: string): number[] {
  const values = text.split(",").map((part) => part.trim());
  if (values.length === 0 || values.some((v) => !/^\d+$/.test(v) || Number(v) < 1)) {
    throw new Error(`"${text}" is not a comma-separated list of positive whole numbers`);
  }
  return values.map(Number);
}

/**
 * The soft "Max open files" limit from the text of /proc/self/limits; null when unlimited or
 * not found.
 */
export function parseNofileLimit(limits: string): number | null {
  const m = /^Max open files\s+(\S+)/m.exec(limits);
  if (!m || m[1] === "unlimited") return null;
  const value = Number(m[1]);
  return Number.isFinite(value) ? value : null;
}

/** This process's soft open-file limit (null when unknown or unlimited). */
export function nofileLimit(): number | null {
  try {
    return parseNofileLimit(readFileSync("/proc/self/limits", "utf8"));
  } catch {
    return null;
  }
}
