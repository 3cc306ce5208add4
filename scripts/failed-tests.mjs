// Prints one line per failed test (or failed test file) of a vitest JSON report, with the first
// line of its error, so that the tail of a long run's log names what failed and why. Used by
// scripts/test.sh after each runtime's run; prints nothing when everything passed.
import { readFileSync } from "node:fs";
import { relative } from "node:path";
import { stripVTControlCharacters } from "node:util";

const [reportPath, runtime] = process.argv.slice(2);
const report = JSON.parse(readFileSync(reportPath, "utf8"));
// Colour codes are stripped with stripVTControlCharacters (reports can hold them).
const firstLine = (text) =>
  stripVTControlCharacters(text ?? "")
    .split("\n")
    .map((line) => line.trim())
    .find((line) => line.length > 0) ?? "(no message)";
const clip = (text) => (text.length > 240 ? `${text.slice(0, 237)}...` : text);

for (const file of report.testResults ?? []) {
  const name = relative(process.cwd(), file.name);
  const failed = (file.assertionResults ?? []).filter((test) => test.status === "failed");
  for (const test of failed)
    console.log(
      `FAILED [${runtime}] ${name} > ${[...(test.ancestorTitles ?? []), test.title].join(" > ")}: ${clip(firstLine(test.failureMessages?.[0]))}`,
    );
  // A file can fail without a failed test (an error while loading it, or in a hook).
  if (failed.length === 0 && file.status === "failed")
    console.log(`FAILED [${runtime}] ${name}: ${clip(firstLine(file.message))}`);
}
