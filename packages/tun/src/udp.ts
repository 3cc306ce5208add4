/**
 * `fake-tcp-tun/udp`: batched UDP sockets (recvmmsg/sendmmsg, SO_REUSEPORT) from the same
 * native addon as the TUN binding, so one native package keeps one build step.
 */
export {
  ADDRESS_RECORD_BYTES,
  encodeUdpAddress,
  formatAddressRecord,
  UdpBatch,
} from "./udp-batch.js";
export {
  DEFAULT_MAX_DATAGRAM_BYTES,
  DEFAULT_UDP_BATCH_SIZE,
  UDP_MAX_SEGMENTED_BYTES,
  UDP_MAX_SEGMENTS,
  type UdpBatchHandler,
  UdpBatchSocket,
  type UdpBatchSocketStats,
  type UdpBindOptions,
  UdpReceiveArea,
} from "./udp-socket.js";
