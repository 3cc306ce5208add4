/**
 * Receive and send buffer size asked for on every UDP socket of the programs. The kernel's
 * default (about 208 KiB, some 150 full-size datagrams, 20 ms at 50 Mbit/s) overflows
 * whenever the event loop pauses briefly (GC, a burst from the TUN), and those datagrams are
 * lost before they reach the tunnel. The kernel caps the value at net.core.rmem_max and
 * net.core.wmem_max.
 */
export const UDP_SOCKET_BUFFER_BYTES = 4 * 1024 * 1024;
