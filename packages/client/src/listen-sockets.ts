/**
 * The client's UDP listening sockets.
 *
 * Replies must leave from the address the peer sent to, or the peer (WireGuard, say) drops
 * them. A wildcard listen (0.0.0.0 or ::) binds one socket per local address: the socket a
 * datagram arrived on names its destination, and replying through that socket makes the
 * kernel use it as the source. (The batched socket could do this on one wildcard socket, with
 * the destination records of IP_PKTINFO; the client does not use that yet, and link-local
 * addresses, which the batched socket cannot bind with their zone, use node:dgram, which has
 * no such records.) Addresses added to the host after start are not listened on (restart the
 * client to pick them up).
 */
import { createSocket, type Socket } from "node:dgram";
import { networkInterfaces } from "node:os";
import {
  errnoCode,
  formatAddress,
  oneLine,
  type SocketAddress,
  UDP_SOCKET_BUFFER_BYTES,
  UsageError,
} from "fake-tcp-common";
import { UdpBatchSocket } from "fake-tcp-tun/udp";

/** One bound UDP socket and the local address it stands for. */
export interface ListenSocket {
  readonly socket: Socket;
  /** The address it is bound to (concrete, never a wildcard). */
  readonly address: SocketAddress;
  /** The local address and port, e.g. `127.0.0.1:1234`, for logs. */
  readonly name: string;
}

/** True for the wildcard addresses that mean "every local address". */
export function isWildcard(address: string): boolean {
  return address === "0.0.0.0" || address === "::";
}

/**
 * The concrete addresses to bind for `listen`: itself, or for a wildcard every address of
 * the host (IPv4 for 0.0.0.0; IPv6 and IPv4 for ::, as a dual-stack :: socket would serve
 * both). Link-local IPv6 addresses carry their zone (`fe80::1%eth0`).
 */
export function bindAddresses(listen: SocketAddress): SocketAddress[] {
  if (!isWildcard(listen.address)) return [listen];
  const result: SocketAddress[] = [];
  for (const [ifname, addresses] of Object.entries(networkInterfaces())) {
    for (const info of addresses ?? []) {
      const family = info.family === "IPv4" ? 4 : 6;
      if (family === 6 && listen.family === 4) continue;
      const address =
        family === 6 && info.address.toLowerCase().startsWith("fe80:")
          ? `${info.address}%${ifname}`
          : info.address;
      result.push({ address, port: listen.port, family });
    }
  }
  return result;
}

/** Binds one UDP socket; rejects with a `UsageError` naming the address and the fix. */
export function bindUdp(address: SocketAddress): Promise<ListenSocket> {
  return new Promise((resolve, reject) => {
    const socket = createSocket({
      type: address.family === 6 ? "udp6" : "udp4",
      ipv6Only: address.family === 6,
      recvBufferSize: UDP_SOCKET_BUFFER_BYTES,
      sendBufferSize: UDP_SOCKET_BUFFER_BYTES,
    });
    const name = formatAddress(address.address, address.port);
    socket.once("error", (err) => {
      socket.close();
      const code = errnoCode(err);
      if (code === "EADDRINUSE") {
        reject(
          new UsageError(
            `--local: UDP ${name} is already in use; stop the program using it or choose another --local`,
          ),
        );
      } else if (code === "EADDRNOTAVAIL") {
        reject(new UsageError(`--local: ${address.address} is not an address of this host`));
      } else if (code === "EACCES") {
        reject(
          new UsageError(
            `--local: binding UDP ${name} is not permitted; use a port above 1023 or grant CAP_NET_BIND_SERVICE`,
          ),
        );
      } else {
        reject(new UsageError(`--local: cannot bind UDP ${name} (${code ?? err.message})`));
      }
    });
    socket.bind({ address: address.address, port: address.port, exclusive: true }, () => {
      socket.removeAllListeners("error");
      resolve({ socket, address, name });
    });
  });
}

/** Binds every socket `listen` needs; on any failure closes those already bound. */
export async function bindListenSockets(listen: SocketAddress): Promise<ListenSocket[]> {
  const listening: ListenSocket[] = [];
  try {
    for (const address of bindAddresses(listen)) {
      try {
        listening.push(await bindUdp(address));
      } catch (err) {
        // With a wildcard, an address that cannot be bound yet (IPv6 duplicate address
        // detection still running) is skipped; any other failure stops the start.
        const notAvailable = err instanceof UsageError && err.message.includes("is not an address");
        if (!(isWildcard(listen.address) && notAvailable)) throw err;
      }
    }
  } catch (err) {
    for (const listener of listening) listener.socket.close();
    throw err;
  }
  if (listening.length === 0) {
    throw new UsageError(`--local: this host has no address to listen on for ${listen.address}`);
  }
  return listening;
}

/** Binds node:dgram sockets on every address of `addresses`; all or nothing. */
export async function bindUdpAddresses(
  addresses: readonly SocketAddress[],
): Promise<ListenSocket[]> {
  const listening: ListenSocket[] = [];
  try {
    for (const address of addresses) listening.push(await bindUdp(address));
  } catch (err) {
    for (const listener of listening) listener.socket.close();
    throw err;
  }
  return listening;
}

/** A shard's batched UDP socket on one `--local` address. */
export interface BatchListenSocket {
  readonly socket: UdpBatchSocket;
  readonly address: SocketAddress;
  readonly name: string;
}

/**
 * Binds a batched UDP socket (recvmmsg/sendmmsg, synchronous sends) on `address`, with
 * SO_REUSEPORT when several shards share it. Datagrams up to `maxDatagramBytes` are received
 * (larger ones are dropped and counted by the socket). Throws a `UsageError` like
 * {@link bindUdp}.
 */
export function bindBatchUdp(
  address: SocketAddress,
  reusePort: boolean,
  maxDatagramBytes: number,
): BatchListenSocket {
  const name = formatAddress(address.address, address.port);
  try {
    const socket = UdpBatchSocket.bind({
      address: address.address,
      port: address.port,
      family: address.family,
      reusePort,
      recvBufferBytes: UDP_SOCKET_BUFFER_BYTES,
      sendBufferBytes: UDP_SOCKET_BUFFER_BYTES,
      maxDatagramBytes,
    });
    return { socket, address, name };
  } catch (err) {
    const code = errnoCode(err);
    if (code === "EADDRINUSE")
      throw new UsageError(
        `--local: UDP ${name} is already in use; stop the program using it or choose another --local`,
      );
    if (code === "EADDRNOTAVAIL")
      throw new UsageError(`--local: ${address.address} is not an address of this host`);
    throw new UsageError(`--local: cannot bind UDP ${name} (${oneLine(err)})`);
  }
}

/** Binds every address of `addresses` (each shard binds the same list); all or nothing. */
export function bindBatchUdpAddresses(
  addresses: readonly SocketAddress[],
  reusePort: boolean,
  maxDatagramBytes: number,
): BatchListenSocket[] {
  const listening: BatchListenSocket[] = [];
  try {
    for (const address of addresses)
      listening.push(bindBatchUdp(address, reusePort, maxDatagramBytes));
  } catch (err) {
    for (const listener of listening) listener.socket.close();
    throw err;
  }
  return listening;
}
