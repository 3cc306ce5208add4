/**
 * The client program: UDP peers on `--local`, each with its own fake-TCP connection to
 * `--remote`.
 */
import {
  type EgressEntries,
  EgressMap,
  formatAddress,
  type LaunchOptions,
  oneLine,
  openProgramDevice,
  type ProgramBody,
  programStarter,
  setUpHost,
  shardedProgram,
  startProgramShards,
} from "fake-tcp-common";
import { type ClientConfig, flowsFor } from "./cli.js";
import { bindListenSockets } from "./listen-sockets.js";
import { type ClientShardData, startClientShard } from "./shard.js";

/** Options for {@link startClient} beyond the configuration (for tests). */
export type StartClientOptions = LaunchOptions;

const start: ProgramBody<ClientConfig> = async (config, context, { remotes, handshakePacket }) => {
  const { logger, cleanup } = context;
  const ipv6Used = remotes.some((t) => t.family === 6);

  // Bound once here, exclusively (no SO_REUSEPORT), so that a port already in use is
  // reported before anything on the host changes; the shards bind their own sockets on the
  // same addresses when everything else is in place.
  const probe = await bindListenSockets(config.local);
  const listen = probe.map((listener) => listener.address);
  const listenNames = probe.map((listener) => listener.name);
  const closeProbe = (() => {
    let open = true;
    return () => {
      if (open) for (const listener of probe) listener.socket.close();
      open = false;
    };
  })();
  cleanup.add("UDP sockets", closeProbe);

  if (config.autoRules) {
    await setUpHost({
      rules: {
        role: "client",
        tun: config.tun,
        tunnel4: config.ipv4.peer,
        tunnel6: config.ipv6?.peer,
        // A flow is remembered while its connection may still be idle, and a minute more.
        flowTimeoutSeconds: Math.ceil(config.idleTimeoutMs / 1000) + 60,
      },
      ipv6Forwarding: ipv6Used && config.ipv6 !== undefined,
      logger,
      cleanup,
    });
  }

  // The stack's segments to the server's addresses known now need their source in the
  // egress map before the first connection (the shards then wait for nft only on a change).
  let egress: EgressEntries | undefined;
  if (config.autoRules) {
    const map = new EgressMap(config.tun);
    for (const target of remotes) {
      try {
        await map.prepare(target.address, target.family);
      } catch (err) {
        logger.warn(
          { server: target.address, err: oneLine(err) },
          "no source address towards the server yet",
        );
      }
    }
    egress = map.entries();
  }

  const device = openProgramDevice(config, context);
  closeProbe();
  const shards = await startProgramShards<ClientShardData>(device, context, {
    script: new URL("./shard-worker.js", import.meta.url),
    start: startClientShard,
    data: { config, listen, handshakePacket, egress },
    logLevel: config.logLevel,
  });
  return shardedProgram(shards, context, config, {
    listen: listenNames,
    remote: formatAddress(config.remote.host, config.remote.port),
    addresses: remotes.map((t) => t.address),
    flows: flowsFor(config, shards.length),
  });
};

/**
 * Starts the client: resolves the server, reads the handshake packet, binds UDP, sets up the
 * host and the tunnel. Throws a `UsageError` for bad input; whatever was set up is undone.
 */
export const startClient = programStarter("fake-tcp-client", start);
