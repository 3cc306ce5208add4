/**
 * The server's side of flow groups (see fake-tcp-common's flow-control.ts and
 * docs/wire-protocol.md, "Flow groups"): the connections a client spreads one UDP peer over
 * are joined back into one UDP socket towards `--remote`, so the application sees one peer.
 *
 * - OPEN on a relay's connection makes that relay's UDP socket a group's ({@link ServerGroup},
 *   in the shard that accepted the connection): the group answers OPENED with its token
 *   (this shard, a number, a random secret).
 * - JOIN on a fresh connection (nothing relayed yet) in any shard asks the token's shard; that
 *   shard accepts only the group's secret, from the group's client address, up to
 *   `MAX_GROUP_FLOWS` flows. Accepted: the joining relay gives up its own UDP socket, answers
 *   JOINED, and from then on hands what the client sends to the group's socket; refused: the
 *   connection is reset. Nothing else changes for the group: a forged join can at most be
 *   refused.
 * - The group's UDP socket spreads each batch from the application to the next flow in turn;
 *   it lives while any of its flows does (the first connection may end and come back as a
 *   member).
 */
import {
  BatchRoundRobin,
  decodeFlowMessage,
  encodeFlowMessage,
  FlowMessageType,
  type FlowToken,
  newGroupSecret,
  PackedDatagrams,
  type RunCounting,
  type ShardMesh,
  sameSecret,
  sendToTunnel,
  type UdpRunWriter,
  unpackDatagrams,
} from "fake-tcp-common";
import type { UdpBatch, UdpBatchSocket } from "fake-tcp-tun/udp";
import type { Relay, ServerCounters } from "./relay.js";

/** Most flows one group takes (a client asks for at most 16). */
export const MAX_GROUP_FLOWS = 16;

/** What the groups of a shard need from the shard. */
export interface FlowGroupsShard {
  readonly mesh: ShardMesh;
  readonly key: Uint8Array | undefined;
  readonly totals: ServerCounters;
  readonly runs: UdpRunWriter;
  readonly counting: RunCounting;
  flushTunnel(): void;
}

type MeshMessage =
  | { t: "sjoin"; group: number; secret: Uint8Array; address: string; member: number }
  | { t: "sjoined"; group: number; member: number; ok: boolean }
  | { t: "sup"; group: number; packed: ArrayBuffer }
  | { t: "sdown"; member: number; packed: ArrayBuffer }
  | { t: "sleft"; group: number; member: number }
  | { t: "sclose"; member: number };

/** A flow of a group as the group sees it: a relay of this shard, or a member elsewhere. */
interface GroupFlow {
  readonly local: Relay | undefined;
  readonly shard: number;
  readonly member: number;
  readonly packed: PackedDatagrams;
}

/** The flow-group state of one relay. */
export type RelayRole =
  | { kind: "alone" }
  | { kind: "owner"; group: ServerGroup }
  | { kind: "joining" }
  | { kind: "member"; shard: number; group: number; id: number; packed: PackedDatagrams };

/** The groups and member relays of one shard. */
export class ServerFlows {
  readonly counters = {
    /** Groups whose UDP socket is in this shard, now. */
    flowGroups: 0,
    /** Relays of this shard that joined a group (here or in another shard), now. */
    flowMembers: 0,
    /** Joins accepted. */
    flowJoins: 0,
    /** Joins refused (unknown group, wrong secret or address, group full, not fresh). */
    flowJoinsRefused: 0,
    /** Control messages dropped: bad MAC, unknown type, or one that makes no sense here. */
    flowControlDropped: 0,
  };
  private readonly groups = new Map<number, ServerGroup>();
  /** Relays of this shard joining or joined, by member number. */
  private readonly members = new Map<number, Relay>();
  /** Member relays that packed datagrams for their group in the current tunnel batch. */
  private readonly pending = new Set<Relay>();
  private nextGroup = 1;
  private nextMember = 1;

  constructor(readonly shard: FlowGroupsShard) {
    shard.mesh.onMessage((from, message) => this.handle(from, message as MeshMessage));
  }

  /** A control message a client sent on `relay`'s connection (`isFlowControl` true). */
  control(relay: Relay, view: Uint8Array): void {
    const message = decodeFlowMessage(view, this.shard.key);
    if (message === null) {
      this.counters.flowControlDropped++;
      return;
    }
    const role = relay.role;
    if (message.type === FlowMessageType.Open) {
      let group: ServerGroup;
      if (role.kind === "owner") group = role.group;
      else if (role.kind === "alone") {
        group = new ServerGroup(this, this.nextGroup++, relay);
        this.groups.set(group.id, group);
        this.counters.flowGroups++;
        relay.role = { kind: "owner", group };
      } else {
        this.counters.flowControlDropped++;
        return;
      }
      this.answer(relay, FlowMessageType.Opened, message.flow, group.token);
      return;
    }
    if (message.type === FlowMessageType.Join) {
      if (role.kind === "member") {
        // The client sent JOIN again before our JOINED reached it.
        this.answer(relay, FlowMessageType.Joined, message.flow, message.token);
        return;
      }
      if (
        role.kind !== "alone" ||
        relay.carried > 0 ||
        message.token.shard >= this.shard.mesh.count
      ) {
        this.refuse(relay);
        return;
      }
      const member = this.nextMember++;
      relay.role = { kind: "joining" };
      relay.joinToken = message.token;
      relay.joinFlow = message.flow;
      this.members.set(member, relay);
      relay.memberNumber = member;
      this.shard.mesh.post(message.token.shard, {
        t: "sjoin",
        group: message.token.group,
        secret: message.token.secret,
        address: relay.sock.remoteAddress,
        member,
      });
      return;
    }
    this.counters.flowControlDropped++;
  }

  /** A member relay's datagram from the client, for its group's socket. */
  up(relay: Relay, view: Uint8Array): void {
    const role = relay.role;
    if (role.kind !== "member") return;
    if (role.shard === this.shard.mesh.index) {
      const group = this.groups.get(role.group);
      if (group) group.toApp(view);
      else this.shard.totals.queueDrops++;
      return;
    }
    if (!role.packed.add(view)) {
      this.postUp(role);
      role.packed.add(view);
    }
    this.pending.add(relay);
  }

  /** The end of a batch from the tunnel: member datagrams leave for their groups' shards. */
  endTunnelBatch(): void {
    if (this.pending.size === 0) return;
    for (const relay of this.pending) {
      const role = relay.role;
      if (role.kind === "member" && role.packed.count > 0) this.postUp(role);
    }
    this.pending.clear();
  }

  /** A relay ended: its group loses a flow (and ends with its last one). */
  relayEnded(relay: Relay): void {
    const role = relay.role;
    this.pending.delete(relay);
    if (role.kind === "owner") role.group.flowEnded(relay);
    else if (role.kind === "member" || role.kind === "joining") {
      const member = relay.memberNumber;
      if (this.members.get(member) === relay) this.members.delete(member);
      if (role.kind === "member") {
        this.counters.flowMembers--;
        this.shard.mesh.post(role.shard, { t: "sleft", group: role.group, member });
      }
    }
  }

  /** Ends every group (at stop): their sockets close, their members are reset. */
  closeAll(): void {
    for (const group of [...this.groups.values()]) group.close();
  }

  /** @internal */
  groupEnded(group: ServerGroup): void {
    if (this.groups.delete(group.id)) this.counters.flowGroups--;
  }

  /** @internal */
  post(to: number, message: MeshMessage, transfer?: ArrayBuffer[]): void {
    this.shard.mesh.post(to, message, transfer);
  }

  private postUp(role: Extract<RelayRole, { kind: "member" }>): void {
    const packed = role.packed.take();
    this.post(role.shard, { t: "sup", group: role.group, packed }, [packed]);
  }

  private answer(relay: Relay, type: FlowMessageType, flow: number, token: FlowToken): void {
    relay.sock.send(encodeFlowMessage({ type, flow, token }, this.shard.key));
    this.shard.flushTunnel();
  }

  private refuse(relay: Relay): void {
    this.counters.flowJoinsRefused++;
    relay.close("join-refused");
  }

  private handle(from: number, m: MeshMessage): void {
    switch (m.t) {
      case "sjoin": {
        const group = this.groups.get(m.group);
        const ok = group?.admit(from, m.member, m.secret, m.address) ?? false;
        this.post(from, { t: "sjoined", group: m.group, member: m.member, ok });
        break;
      }
      case "sjoined": {
        const relay = this.members.get(m.member);
        if (relay === undefined || relay.role.kind !== "joining" || relay.isClosed) {
          // The joining connection ended meanwhile: the group must not keep its place.
          if (m.ok) this.post(from, { t: "sleft", group: m.group, member: m.member });
          return;
        }
        const token = relay.joinToken!;
        if (!m.ok) {
          this.members.delete(m.member);
          this.refuse(relay);
          return;
        }
        relay.becomeMember();
        relay.role = {
          kind: "member",
          shard: token.shard,
          group: token.group,
          id: m.member,
          packed: new PackedDatagrams(),
        };
        this.counters.flowJoins++;
        this.counters.flowMembers++;
        this.answer(relay, FlowMessageType.Joined, relay.joinFlow, token);
        break;
      }
      case "sup": {
        const group = this.groups.get(m.group);
        if (group === undefined) {
          this.shard.totals.queueDrops += unpackDatagrams(m.packed, () => {});
          return;
        }
        unpackDatagrams(m.packed, (view) => group.toApp(view));
        this.shard.runs.flush();
        break;
      }
      case "sdown": {
        const relay = this.members.get(m.member);
        const totals = this.shard.totals;
        if (relay === undefined || relay.role.kind !== "member") {
          totals.queueDrops += unpackDatagrams(m.packed, () => {});
          return;
        }
        unpackDatagrams(m.packed, (view) => sendToTunnel(relay.sock, view, totals));
        this.shard.flushTunnel();
        break;
      }
      case "sleft":
        this.groups.get(m.group)?.memberLeft(from, m.member);
        break;
      case "sclose":
        this.members.get(m.member)?.close("group-closed");
        break;
    }
  }
}

/** One joined UDP peer: the UDP socket towards `--remote` and the flows it spreads over. */
export class ServerGroup {
  readonly token: FlowToken;
  /** The client address of the group's first connection: every member must come from it. */
  private readonly address: string;
  private readonly flows = new BatchRoundRobin<GroupFlow>();
  private readonly udp: UdpBatchSocket;
  private closed = false;

  constructor(
    private readonly owner: ServerFlows,
    readonly id: number,
    first: Relay,
  ) {
    this.token = { shard: owner.shard.mesh.index, group: id, secret: newGroupSecret() };
    this.address = first.sock.remoteAddress;
    this.udp = first.udp;
    this.flows.add({
      local: first,
      shard: owner.shard.mesh.index,
      member: 0,
      packed: new PackedDatagrams(),
    });
    first.adoptUdp((batch) => this.fromApp(batch));
  }

  /** @internal A member of `shard` asks to join: true when accepted. */
  admit(shard: number, member: number, secret: Uint8Array, address: string): boolean {
    if (this.closed || !sameSecret(secret, this.token.secret) || address !== this.address)
      return false;
    if (this.flows.size >= MAX_GROUP_FLOWS) return false;
    this.flows.add({ local: undefined, shard, member, packed: new PackedDatagrams() });
    return true;
  }

  /** A datagram from a flow of the client: to the application. */
  toApp(view: Uint8Array): void {
    if (this.closed) return;
    this.owner.shard.runs.send(this.udp, view, undefined, this.owner.shard.counting);
  }

  /** A batch from the application: to one flow, the next batch to the next. */
  fromApp(batch: UdpBatch): void {
    const flow = this.flows.current();
    const { totals } = this.owner.shard;
    if (flow === undefined) {
      totals.queueDrops += batch.count;
      return;
    }
    if (flow.local !== undefined) {
      for (let i = 0; i < batch.count; i++)
        sendToTunnel(flow.local.sock, batch.datagram(i), totals);
      this.owner.shard.flushTunnel();
    } else {
      for (let i = 0; i < batch.count; i++) {
        const view = batch.datagram(i);
        if (!flow.packed.add(view)) {
          this.postDown(flow);
          flow.packed.add(view);
        }
      }
      this.postDown(flow);
    }
    this.flows.next();
  }

  /** @internal The group's own relay (the first connection) ended. */
  flowEnded(relay: Relay): void {
    const flow = this.flows.list.find((f) => f.local === relay);
    if (flow) this.flows.remove(flow);
    if (this.flows.size === 0) this.close();
  }

  /** @internal A member in another shard ended. */
  memberLeft(shard: number, member: number): void {
    const flow = this.flows.list.find((f) => f.shard === shard && f.member === member && !f.local);
    if (flow) this.flows.remove(flow);
    if (this.flows.size === 0) this.close();
  }

  /** Closes the UDP socket; members still in other shards are reset. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const flow of this.flows.list) {
      if (flow.local !== undefined) flow.local.close("group-closed");
      else this.owner.post(flow.shard, { t: "sclose", member: flow.member });
    }
    this.udp.close();
    this.owner.shard.totals.udpSockets--;
    this.owner.groupEnded(this);
  }

  private postDown(flow: GroupFlow): void {
    if (flow.packed.count === 0) return;
    const packed = flow.packed.take();
    this.owner.post(flow.shard, { t: "sdown", member: flow.member, packed }, [packed]);
  }
}
