/**
 * First 32-bit word of every latency probe datagram. The app host redirects UDP whose payload
 * starts with it to the bench's echo application, so probes and iperf3 share the app port
 * (the tunnel server forwards everything to that one port).
 */
export const PROBE_MAGIC = 0xfeedbe11;
