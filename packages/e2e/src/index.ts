/**
 * fake-tcp-e2e: the namespace NAT rig used by the end-to-end tests, the demo and the benchmark.
 */
export { ADDR, IFACE, type RigMode } from "./addresses.js";
export { Capture, countPcap, type ProtocolCounts } from "./capture.js";
export type { LoadStep } from "./conn-probe-output.js";
export {
  FLEET_ADDR,
  FLEET_CLIENT_ARGS,
  FLEET_PORTS,
  FLEET_SERVER_ARGS,
  Fleet,
  type FleetOptions,
  type HubPeer,
} from "./fleet.js";
export {
  BALANCER_TABLE,
  type BalancerConfig,
  balancerRuleset,
  pickRule,
  replaceServers,
} from "./fleet-balancer.js";
export { type FlowRun, FlowSink, flowDown, flowUp, type SinkStats } from "./flow.js";
export { type IperfUdpResult, runIperfUdp, startIperfServer } from "./iperf.js";
export {
  destroyAllNamespaces,
  linkVeth,
  Namespace,
  runAsync,
  runSync,
  uniqueName,
} from "./namespace.js";
export { CLIENT_MAIN, SERVER_MAIN, toolPath } from "./paths.js";
export { PcapStream, parseFrame, type TcpPacket, tcpPackets } from "./pcap.js";
export { type LogLine, ManagedProcess } from "./process.js";
export {
  type EchoResult,
  type EchoServerStats,
  Rig,
  type RigOptions,
  type StreamReply,
  type StreamResult,
} from "./rig.js";
export {
  type ConntrackEntry,
  conntrackFlush,
  conntrackList,
  routerDropCounters,
  routerRuleset,
} from "./router.js";
export { Topology, type TopologyOptions } from "./topology.js";
export {
  type ProgramFlavor,
  programTableName,
  startClient,
  startServer,
  TunnelProgram,
} from "./tunnel.js";
export { startWireGuard, startWireGuardEnd, type WireGuardPair } from "./wireguard.js";
