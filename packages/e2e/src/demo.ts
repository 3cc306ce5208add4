/**
 * The demo (`npm run demo`): builds the rig, starts the tunnel, pushes iperf3 UDP through it
 * in both directions, and shows from a capture on the NAT router's WAN that only TCP crossed.
 * Everything it creates is removed at the end, on failure and on Ctrl-C.
 *
 * Usage: node dist/demo.js [--seconds 3] [--bitrate 50e6]
 */
import { ADDR } from "./addresses.js";
import type { IperfUdpResult } from "./iperf.js";
import { destroyAllNamespaces } from "./namespace.js";
import { Rig } from "./rig.js";
import { parseArgs } from "./tools/args.js";

const args = parseArgs(process.argv.slice(2));
const seconds = Number(args.get("seconds") ?? 3);
const bitrate = Number(args.get("bitrate") ?? 50e6);
/** The whole demo must end well within a minute, whatever happens. */
const DEMO_DEADLINE_MS = 50_000;

function step(text: string): void {
  console.log(`\n▶ ${text}`);
}

function mbit(bps: number): string {
  return `${(bps / 1e6).toFixed(1)} Mbit/s`;
}

function describeIperf(label: string, r: IperfUdpResult): string {
  return `  ${label}: received ${mbit(r.receivedBitsPerSecond)} (offered ${mbit(bitrate)}), lost ${r.lostPackets}/${r.packets} datagrams (${r.lostPercent.toFixed(2)}%), jitter ${r.jitterMs.toFixed(3)} ms`;
}

async function main(): Promise<number> {
  console.log("fake-tcp tunnel demo: UDP carried as fake TCP through a NAT that blocks UDP");
  console.log(`
   A (iperf3 client) ─┐                        UDP blocked here
                      ├─ R: NAT router ══ WAN (TCP only) ══ S: fake-tcp-server ── B (iperf3 server)
   C: fake-tcp-client ┘   ${ADDR.routerLan} / ${ADDR.routerWan}          ${ADDR.tunnelServer}            ${ADDR.appServer}
`);
  step("Building the network namespaces and starting fake-tcp-server (S) and fake-tcp-client (C)");
  const started = Date.now();
  const rig = await Rig.create({ mode: "tunnel" });
  try {
    const ns = rig.topology.namespaces.map((n) => `${n.role}=${n.name}`).join(" ");
    console.log(`  namespaces: ${ns}`);
    console.log(
      `  client: UDP ${ADDR.tunnelClient}:${rig.localPort} → fake TCP to ${ADDR.tunnelServer}:${rig.serverPort}; server → UDP ${ADDR.appServer}:${rig.appPort}`,
    );
    console.log(`  ready in ${Date.now() - started} ms`);

    step("Checking that plain UDP cannot cross R's WAN");
    await rig.startEcho();
    // A second echo on B, at a port A does not redirect into the tunnel.
    await rig.startEcho(rig.appPort + 1);
    const blocked = await rig.udpEcho({
      count: 3,
      waitMs: 500,
      target: { host: ADDR.appServer, port: rig.appPort + 1 },
    });
    console.log(
      `  direct UDP A → B: ${blocked.totalReceived}/${blocked.totalSent} echoed (R drops UDP on its WAN)`,
    );
    const tunneled = await rig.udpEcho({ count: 3 });
    console.log(
      `  the same through the tunnel: ${tunneled.totalReceived}/${tunneled.totalSent} echoed`,
    );

    step(
      `Capturing on R's WAN and running iperf3 UDP at ${mbit(bitrate)} for ${seconds} s each way`,
    );
    const capture = await rig.captureWan();
    const forward = await rig.iperf({ bitrate, seconds });
    console.log(describeIperf("A → B", forward));
    const reverse = await rig.iperf({ bitrate, seconds, reverse: true });
    console.log(describeIperf("B → A", reverse));
    const wan = await capture.stop();

    step("Packets seen on R's WAN interface, by protocol");
    console.log(
      `  TCP ${wan.tcp}   UDP ${wan.udp}   ICMP ${wan.icmp}   other IP ${wan.other}   (ARP ${wan.arp}, IP fragments ${wan.fragments})`,
    );
    const onlyTcp = wan.udp === 0 && wan.icmp === 0 && wan.other === 0;
    console.log(
      onlyTcp
        ? `  ✔ only TCP crossed the WAN: ${forward.packets + reverse.packets} UDP datagrams rode inside TCP (${(wan.tcpPayloadBytes / 1e6).toFixed(1)} MB of TCP payload)`
        : "  ✘ something other than TCP crossed the WAN",
    );
    if (wan.oversize > 0)
      console.log(
        `  ${wan.oversize} of the ${wan.tcp} TCP packets were runs of segments longer than the MTU: segmentation offload lets a run cross this virtual link whole (a physical NIC would send its segments one by one)`,
      );
    const stats = await rig.server!.requestStats();
    console.log(`  server: ${stats.opened} connection(s) opened, ${stats.connections} open now`);
    const ok =
      onlyTcp && tunneled.totalReceived > 0 && blocked.totalReceived === 0 && forward.packets > 0;
    return ok ? 0 : 1;
  } finally {
    step("Tearing down (programs stopped, namespaces removed)");
    await rig.destroy();
    console.log(`  done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }
}

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    console.error(`\ndemo: ${signal}: tearing down (programs stopped, namespaces removed)`);
    destroyAllNamespaces();
    process.exit(130);
  });
}

const deadline = setTimeout(() => {
  console.error(`demo: did not finish within ${DEMO_DEADLINE_MS / 1000} s; tearing down`);
  destroyAllNamespaces();
  process.exit(1);
}, DEMO_DEADLINE_MS);
deadline.unref();

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(`\ndemo failed: ${err instanceof Error ? err.message : String(err)}`);
    destroyAllNamespaces();
    process.exitCode = 1;
  },
);
