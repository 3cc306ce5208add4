/**
 * A checksummed TCP transfer between two namespaces (tools/tcp-transfer): a sink in one, a
 * source in the other; each side reports the bytes it saw and their SHA-256.
 */
import type { Namespace } from "./namespace.js";
import { toolPath } from "./paths.js";
import { ManagedProcess } from "./process.js";

export interface TransferReport {
  bytes: number;
  sha256: string;
}

/**
 * Sends `bytes` from `from` to a sink on `to` bound to `address`:`port`; resolves with what the
 * source sent and what the sink received (equal when the path carried the stream intact).
 */
export async function tcpTransfer(
  from: Namespace,
  to: Namespace,
  opts: { address: string; port: number; bytes: number; timeoutMs: number },
): Promise<{ sent: TransferReport; received: TransferReport }> {
  const sink = new ManagedProcess(`tcp-sink@${to.name}`, to, process.execPath, [
    toolPath("tcp-transfer"),
    "sink",
    "--bind",
    opts.address,
    "--port",
    String(opts.port),
  ]);
  try {
    await sink.waitFor((l) => l.json?.event === "ready", 5_000);
    const source = await from.execAsync(
      process.execPath,
      [
        toolPath("tcp-transfer"),
        "source",
        "--target",
        `${opts.address}:${opts.port}`,
        "--bytes",
        String(opts.bytes),
      ],
      opts.timeoutMs,
    );
    if (source.code !== 0)
      throw new Error(`tcp-transfer source exited ${source.code}: ${source.stderr}`);
    const sent = JSON.parse(source.stdout.trim().split("\n").at(-1)!) as TransferReport;
    const received = (await sink.waitFor((l) => typeof l.json?.sha256 === "string", 20_000))
      .json as unknown as TransferReport;
    return { sent, received };
  } finally {
    await sink.stop(1_000);
  }
}
