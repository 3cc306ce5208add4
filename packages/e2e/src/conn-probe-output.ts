/** What the connection probe (tools/conn-probe.ts) prints, as `pnpm bench --connections` reads it. */

/** One load step of the probe: `flows` sockets sharing `offeredMbps`, echoed back. */
export interface LoadStep {
  flows: number;
  offeredMbps: number;
  seconds: number;
  sent: number;
  sendDrops: number;
  /** What the probe managed to send, Mbit/s (below offered when it could not keep up). */
  sentMbps: number;
  echoed: number;
  /** Echoed datagrams as Mbit/s of payload (each crossed the tunnel both ways). */
  echoedMbps: number;
  lossPercent: number;
}
