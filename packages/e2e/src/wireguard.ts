/**
 * WireGuard (wireguard-go, userspace) between A and B, so that a real VPN runs through the
 * tunnel: A's peer endpoint is the tunnel client's --local address; B learns A's endpoint
 * from the first handshake (the tunnel server's address on B's link).
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ADDR } from "./addresses.js";
import type { Namespace } from "./namespace.js";
import { uniqueName } from "./namespace.js";
import { ManagedProcess } from "./process.js";
import type { Rig } from "./rig.js";

export interface WireGuardEnd {
  ns: Namespace;
  /** Interface name (unique: wireguard-go's control socket path is shared by all namespaces). */
  iface: string;
  /** Address inside the VPN. */
  address: string;
  publicKey: string;
  process: ManagedProcess;
}

export interface WireGuardPair {
  a: WireGuardEnd;
  b: WireGuardEnd;
  /** Latest handshake time on A (seconds since epoch, 0 = none yet). */
  latestHandshake(): number;
  stop(): Promise<void>;
}

export interface WireGuardOptions {
  /** UDP port B's wireguard listens on (the tunnel server's --remote port). */
  listenPortB: number;
  /** A's peer endpoint host:port (the tunnel client's --local, or B directly). */
  endpointForA: string;
  /** Interface MTU (1428 over IPv4 fake TCP on a 1500 link). */
  mtu?: number;
  addressA?: string;
  addressB?: string;
}

/**
 * Starts wireguard-go in `ns` on a new interface with `address`/24, up with `mtu`, and makes
 * its private key (not yet set: `wg set ... private-key FILE`).
 */
export async function startWireGuardEnd(
  ns: Namespace,
  address: string,
  mtu: number,
): Promise<Omit<WireGuardEnd, "publicKey"> & { privateKey: string }> {
  const iface = uniqueName("wg");
  const privateKey = ns.exec("wg", ["genkey"]).trim();
  const proc = new ManagedProcess(`wireguard-go@${ns.role}`, ns, "wireguard-go", ["-f", iface], {
    ...process.env,
    WG_PROCESS_FOREGROUND: "1",
  });
  const deadline = Date.now() + 10_000;
  while ((await ns.execAsync("ip", ["link", "show", "dev", iface], 5_000)).code !== 0) {
    if (!proc.running || Date.now() > deadline)
      throw new Error(`wireguard-go did not start\n${proc.tail()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  ns.exec("ip", ["addr", "add", `${address}/24`, "dev", iface]);
  ns.exec("ip", ["link", "set", iface, "mtu", String(mtu), "up"]);
  return { ns, iface, address, process: proc, privateKey };
}

/** Starts wireguard-go on A and B, configures keys and peers, and returns the pair. */
export async function startWireGuard(
  a: Namespace,
  b: Namespace,
  opts: WireGuardOptions,
): Promise<WireGuardPair> {
  const mtu = opts.mtu ?? 1428;
  const endA = await startWireGuardEnd(a, opts.addressA ?? "10.99.0.1", mtu);
  const endB = await startWireGuardEnd(b, opts.addressB ?? "10.99.0.2", mtu);
  const pubA = a.exec("wg", ["pubkey"], endA.privateKey).trim();
  const pubB = b.exec("wg", ["pubkey"], endB.privateKey).trim();
  // `wg set` reads keys from files only: a private temporary directory, removed at once.
  const keyDir = mkdtempSync(join(tmpdir(), "e2e-wg-"));
  try {
    const keyA = join(keyDir, "a.key");
    const keyB = join(keyDir, "b.key");
    writeFileSync(keyA, endA.privateKey, { mode: 0o600 });
    writeFileSync(keyB, endB.privateKey, { mode: 0o600 });
    a.exec("wg", ["set", endA.iface, "private-key", keyA]);
    b.exec("wg", ["set", endB.iface, "private-key", keyB, "listen-port", String(opts.listenPortB)]);
  } finally {
    rmSync(keyDir, { recursive: true, force: true });
  }
  a.exec("wg", [
    "set",
    endA.iface,
    "peer",
    pubB,
    "endpoint",
    opts.endpointForA,
    "allowed-ips",
    `${endB.address}/32`,
  ]);
  b.exec("wg", ["set", endB.iface, "peer", pubA, "allowed-ips", `${endA.address}/32`]);
  const { privateKey: _a, ...restA } = endA;
  const { privateKey: _b, ...restB } = endB;
  return {
    a: { ...restA, publicKey: pubA },
    b: { ...restB, publicKey: pubB },
    latestHandshake(): number {
      const out = a.exec("wg", ["show", endA.iface, "latest-handshakes"]);
      const m = /\s(\d+)\s*$/.exec(out.trim());
      return m ? Number(m[1]) : 0;
    },
    async stop(): Promise<void> {
      await endA.process.stop(2_000);
      await endB.process.stop(2_000);
      // wireguard-go removes its control socket on a clean exit only.
      for (const iface of [endA.iface, endB.iface])
        rmSync(`/var/run/wireguard/${iface}.sock`, { force: true });
    },
  };
}

/**
 * Runs `body` with WireGuard between the rig's A and B through the tunnel (the rig's apps
 * stopped, as WireGuard takes their ports; MTU 1428), and stops WireGuard after it.
 */
export async function withWireGuardThroughTunnel<T>(
  rig: Rig,
  body: (wg: WireGuardPair) => Promise<T>,
): Promise<T> {
  await rig.stopApps();
  const wg = await startWireGuard(rig.a, rig.b, {
    listenPortB: rig.appPort,
    endpointForA: `${ADDR.tunnelClient}:${rig.localPort}`,
    mtu: 1428,
  });
  try {
    return await body(wg);
  } finally {
    await wg.stop();
  }
}
