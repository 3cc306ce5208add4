/**
 * The client's side of flow groups (see fake-tcp-common's flow-control.ts and
 * docs/wire-protocol.md, "Flow groups"): a busy UDP peer's datagrams spread over `--flows`
 * connections, each opened by another shard so that the device steers its replies to that
 * shard's queue.
 *
 * - The shard that owns the peer (its UDP socket got the peer's datagrams) keeps the peer's
 *   session and first connection, and a {@link SpreadGroup}: after the server answered OPEN
 *   with the group's token, it asks the other shards to open one further connection each
 *   ({@link FlowMember}) and hands them whole batches of the peer's datagrams in turn.
 * - A member connection sends JOIN with the token first and carries nothing else until the
 *   server answered JOINED; from then on its datagrams from the server go straight to the
 *   peer from its own shard's socket on the same `--local` address (so the peer sees one
 *   source), and the batches its owner hands it go into the tunnel.
 * - A member lost (RST, dead peer, refused join) is taken out of the rotation and opened again
 *   after a back-off while the session lives; the others carry the traffic meanwhile.
 * - Datagrams from the server that arrive on members never pass the owner's shard, whose peer
 *   table ages the session by its traffic: each member that delivered some tells the owner so,
 *   at most once per `activityMs`, and the group refreshes the session (otherwise a peer whose
 *   traffic comes only from the server, over members only, would be idled out or evicted).
 */
import {
  BatchRoundRobin,
  decodeFlowMessage,
  encodeFlowMessage,
  FLOW_CONTROL_LENGTH,
  FlowMessageType,
  type FlowToken,
  isFlowControl,
  NO_TOKEN,
  PackedDatagrams,
  type RelayCounters,
  type ShardMesh,
  type SocketAddress,
  sendToTunnel,
  type TunnelSocket,
  unpackDatagrams,
} from "fake-tcp-common";
import type { ReplySocket } from "./peer-session.js";

/** Control messages are sent again at this interval until answered... */
const CONTROL_RETRY_MS = 300;
/** ...at most this many times; then the connection is given up (a member) or left alone. */
const CONTROL_TRIES = 10;
/** Back-off before a lost member is opened again: doubling from the first to the last. */
const REOPEN_FIRST_MS = 500;
const REOPEN_MAX_MS = 8_000;

/** What the flows of a shard need from the shard. */
export interface FlowShard {
  readonly mesh: ShardMesh;
  /** Keyed mode: control messages carry the key's MAC. */
  readonly key: Uint8Array | undefined;
  /** `--flows` resolved. */
  readonly flows: number;
  readonly totals: RelayCounters;
  /** Opens a connection to exactly `target` (the address the peer's first connection uses). */
  connect(target: SocketAddress): Promise<TunnelSocket>;
  /** This shard's reply socket for listen address `index`. */
  replyVia(index: number): ReplySocket | undefined;
  /** Writes the stack's run (after datagrams were sent into the tunnel). */
  flushTunnel(): void;
  /**
   * How often members report that they delivered datagrams to their peer (ms; default
   * {@link ACTIVITY_MS}): well within the peer table's idle timeout.
   */
  readonly activityMs?: number;
}

/** Default of `FlowShard.activityMs`. */
export const ACTIVITY_MS = 1_000;

/** The peer a group spreads, as the member shards need it (structured-clonable). */
export interface SpreadPeer {
  readonly address: SocketAddress;
  readonly record: Uint8Array | undefined;
  /** The index of the `--local` address the peer sends to. */
  readonly listen: number;
}

type MeshMessage =
  | {
      t: "fopen";
      group: number;
      flow: number;
      token: FlowToken;
      target: SocketAddress;
      peer: SpreadPeer;
    }
  | { t: "fup"; group: number; flow: number }
  | { t: "fdown"; group: number; flow: number }
  | { t: "fdata"; group: number; flow: number; packed: ArrayBuffer }
  | { t: "fclose"; group: number; flow: number }
  | { t: "factive"; group: number };

/** A flow of a group as its owner sees it: the first connection, or a member in a shard. */
interface FlowTarget {
  readonly flow: number;
  /** The owner's own connection (flow 0), sent to directly. */
  readonly local: TunnelSocket | undefined;
  readonly shard: number;
  readonly packed: PackedDatagrams;
}

/** The flows of one shard: the groups it owns and the member connections it hosts. */
export class ClientFlows {
  readonly counters = {
    /** Groups this shard owns now. */
    flowGroups: 0,
    /** Member connections this shard holds now (joined or joining). */
    flowMembers: 0,
    /** Members whose join the server confirmed. */
    flowJoins: 0,
    /** Members lost (closed, failed to connect or to join). */
    flowMemberLosses: 0,
  };
  private readonly groups = new Map<number, SpreadGroup>();
  private readonly members = new Map<string, FlowMember>();
  /** Groups that took datagrams in the current batch. */
  private readonly touched = new Set<SpreadGroup>();
  private nextGroup = 1;
  private readonly activityTimer: NodeJS.Timeout | undefined;

  constructor(readonly shard: FlowShard) {
    shard.mesh.onMessage((from, message) => this.handle(from, message as MeshMessage));
    if (shard.flows > 1) {
      this.activityTimer = setInterval(
        () => this.reportActivity(),
        shard.activityMs ?? ACTIVITY_MS,
      ).unref();
    }
  }

  /** True when a peer may be spread at all (more than one flow). */
  get enabled(): boolean {
    return this.shard.flows > 1;
  }

  /**
   * Starts spreading a peer whose first connection `sock` is open (a server of ours).
   * `onActive` runs when members delivered datagrams from the server to the peer (at most once
   * per `activityMs` per member): the session's traffic that its own shard does not see.
   */
  startGroup(sock: TunnelSocket, peer: SpreadPeer, onActive: () => void = () => {}): SpreadGroup {
    const group = new SpreadGroup(this, this.nextGroup++, sock, peer, onActive);
    this.groups.set(group.id, group);
    this.counters.flowGroups++;
    return group;
  }

  /** @internal */
  touch(group: SpreadGroup): void {
    this.touched.add(group);
  }

  /** The end of a batch of datagrams from UDP: each group's batch leaves, the turn passes. */
  endBatch(): void {
    if (this.touched.size === 0) return;
    for (const group of this.touched) group.endBatch();
    this.touched.clear();
  }

  /** @internal */
  post(to: number, message: MeshMessage, transfer?: ArrayBuffer[]): void {
    this.shard.mesh.post(to, message, transfer);
  }

  /** @internal */
  groupEnded(group: SpreadGroup): void {
    if (this.groups.delete(group.id)) this.counters.flowGroups--;
    this.touched.delete(group);
  }

  /** @internal */
  memberEnded(member: FlowMember, lost: boolean): void {
    if (this.members.get(member.name) === member) {
      this.members.delete(member.name);
      this.counters.flowMembers--;
    }
    if (lost) {
      this.counters.flowMemberLosses++;
      this.post(member.owner, { t: "fdown", group: member.group, flow: member.flow });
    }
  }

  /** Resets every member connection and ends every group (at stop). */
  closeAll(): void {
    clearInterval(this.activityTimer);
    for (const group of [...this.groups.values()]) group.close();
    for (const member of [...this.members.values()]) member.close(false);
  }

  /** Tells the owners of the members that delivered datagrams since the last report. */
  private reportActivity(): void {
    for (const member of this.members.values()) {
      if (member.takeHeard()) this.post(member.owner, { t: "factive", group: member.group });
    }
  }

  private handle(from: number, m: MeshMessage): void {
    switch (m.t) {
      case "fopen": {
        const name = memberName(from, m.group, m.flow);
        this.members.get(name)?.close(false);
        const via = this.shard.replyVia(m.peer.listen);
        if (via === undefined) {
          this.post(from, { t: "fdown", group: m.group, flow: m.flow });
          return;
        }
        const member = new FlowMember(this, name, from, m.group, m.flow, m.peer, via);
        this.members.set(name, member);
        this.counters.flowMembers++;
        member.connect(m.target, m.token);
        break;
      }
      case "fdata": {
        const member = this.members.get(memberName(from, m.group, m.flow));
        if (member === undefined) {
          this.shard.totals.queueDrops += unpackDatagrams(m.packed, () => {});
          return;
        }
        member.sendPacked(m.packed);
        break;
      }
      case "fclose":
        this.members.get(memberName(from, m.group, m.flow))?.close(false);
        break;
      case "fup":
        this.groups.get(m.group)?.memberUp(m.flow, from);
        break;
      case "fdown":
        this.groups.get(m.group)?.memberDown(m.flow);
        break;
      case "factive":
        this.groups.get(m.group)?.active();
        break;
    }
  }
}

function memberName(owner: number, group: number, flow: number): string {
  return `${owner}/${group}/${flow}`;
}

/** The owner's side of one spread peer. */
export class SpreadGroup {
  private readonly rotation = new BatchRoundRobin<FlowTarget>();
  private token: FlowToken | undefined;
  private closed = false;
  private tries = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly reopenTimers = new Map<number, NodeJS.Timeout>();
  private readonly backoff = new Map<number, number>();
  /** The member shard of each flow (1..flows-1). */
  private readonly hosts = new Map<number, number>();
  /** Set once the first connection is gone: the session ends when no flow is left. */
  private onEmpty: (() => void) | undefined;

  constructor(
    private readonly flows: ClientFlows,
    readonly id: number,
    private readonly primary: TunnelSocket,
    private readonly peer: SpreadPeer,
    private readonly onActive: () => void,
  ) {
    this.rotation.add({
      flow: 0,
      local: primary,
      shard: flows.shard.mesh.index,
      packed: new PackedDatagrams(),
    });
    this.sendOpen();
  }

  /** Flows carrying datagrams now (the first connection included). */
  get size(): number {
    return this.rotation.size;
  }

  /** True once a member carries datagrams: the peer's datagrams go through `send`. */
  get spreading(): boolean {
    return this.rotation.size > 1 || this.onEmpty !== undefined;
  }

  /** One datagram from the peer (valid during the call only). */
  send(datagram: Uint8Array): void {
    const target = this.rotation.current();
    if (target === undefined) {
      // Every flow is being opened again.
      this.flows.shard.totals.queueDrops++;
      return;
    }
    this.flows.touch(this);
    if (target.local !== undefined) {
      sendToTunnel(target.local, datagram, this.flows.shard.totals);
      return;
    }
    if (!target.packed.add(datagram)) {
      this.postPacked(target);
      target.packed.add(datagram);
    }
  }

  /** @internal The batch ended: what a member got leaves, the next batch goes to the next flow. */
  endBatch(): void {
    const target = this.rotation.current();
    if (target !== undefined && target.local === undefined && target.packed.count > 0)
      this.postPacked(target);
    this.rotation.next();
  }

  /** A control message the server sent on the first connection. */
  control(view: Uint8Array): void {
    const message = decodeFlowMessage(view, this.flows.shard.key);
    if (message?.type !== FlowMessageType.Opened || this.closed || this.token !== undefined) return;
    this.token = message.token;
    this.clearTimer();
    const { mesh, flows } = this.flows.shard;
    for (let flow = 1; flow < flows; flow++) {
      this.hosts.set(flow, (mesh.index + flow) % mesh.count);
      this.openMember(flow);
    }
  }

  /** @internal A member delivered datagrams from the server to the peer. */
  active(): void {
    if (!this.closed) this.onActive();
  }

  /** @internal A member's join was confirmed. */
  memberUp(flow: number, shard: number): void {
    if (this.closed) return;
    this.backoff.delete(flow);
    this.rotation.add({ flow, local: undefined, shard, packed: new PackedDatagrams() });
  }

  /** @internal A member was lost: out of the rotation, opened again after a back-off. */
  memberDown(flow: number): void {
    const target = this.rotation.list.find((t) => t.flow === flow);
    if (target) this.rotation.remove(target);
    if (this.closed) return;
    if (this.rotation.size === 0 && this.onEmpty !== undefined) {
      this.onEmpty();
      return;
    }
    if (this.reopenTimers.has(flow)) return;
    const wait = this.backoff.get(flow) ?? REOPEN_FIRST_MS;
    this.backoff.set(flow, Math.min(wait * 2, REOPEN_MAX_MS));
    const timer = setTimeout(() => {
      this.reopenTimers.delete(flow);
      if (!this.closed) this.openMember(flow);
    }, wait);
    timer.unref();
    this.reopenTimers.set(flow, timer);
  }

  /**
   * The first connection ended. True when other flows carry the peer on: the first flow is
   * opened again as a member (in this shard) and `onEmpty` runs if the group later has no flow
   * left; false when the session has to end.
   */
  firstLost(onEmpty: () => void): boolean {
    const first = this.rotation.list.find((t) => t.local !== undefined);
    if (first) this.rotation.remove(first);
    if (this.closed || this.token === undefined || this.rotation.size === 0) return false;
    this.onEmpty = onEmpty;
    this.flows.counters.flowMemberLosses++;
    this.hosts.set(0, this.flows.shard.mesh.index);
    this.memberDown(0);
    return true;
  }

  /** Ends the group (the session ended): every member connection is reset. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.clearTimer();
    for (const timer of this.reopenTimers.values()) clearTimeout(timer);
    this.reopenTimers.clear();
    for (const [flow, shard] of this.hosts)
      this.flows.post(shard, { t: "fclose", group: this.id, flow });
    this.flows.groupEnded(this);
  }

  private openMember(flow: number): void {
    const token = this.token;
    const host = this.hosts.get(flow);
    if (token === undefined || host === undefined) return;
    this.flows.post(host, {
      t: "fopen",
      group: this.id,
      flow,
      token,
      target: {
        address: this.primary.remoteAddress,
        port: this.primary.remotePort,
        family: this.primary.remoteAddress.includes(":") ? 6 : 4,
      },
      peer: this.peer,
    });
  }

  private postPacked(target: FlowTarget): void {
    const packed = target.packed.take();
    this.flows.post(target.shard, { t: "fdata", group: this.id, flow: target.flow, packed }, [
      packed,
    ]);
  }

  /** OPEN on the first connection, again until OPENED arrives (or the tries run out). */
  private sendOpen(): void {
    if (this.closed || this.token !== undefined || this.primary.closed) return;
    if (this.tries++ >= CONTROL_TRIES) return;
    this.primary.send(
      encodeFlowMessage(
        { type: FlowMessageType.Open, flow: 0, token: NO_TOKEN },
        this.flows.shard.key,
      ),
    );
    this.flows.shard.flushTunnel();
    this.timer = setTimeout(() => this.sendOpen(), CONTROL_RETRY_MS);
    this.timer.unref();
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/** A further connection of a group, in the shard that hosts it. */
class FlowMember {
  private sock: TunnelSocket | undefined;
  private joined = false;
  private ended = false;
  /** Datagrams went to the peer since the last activity report. */
  private heard = false;
  private tries = 0;
  private timer: NodeJS.Timeout | undefined;
  private token: FlowToken = NO_TOKEN;

  constructor(
    private readonly flows: ClientFlows,
    readonly name: string,
    readonly owner: number,
    readonly group: number,
    readonly flow: number,
    private readonly peer: SpreadPeer,
    private readonly via: ReplySocket,
  ) {}

  connect(target: SocketAddress, token: FlowToken): void {
    this.token = token;
    this.flows.shard.connect(target).then(
      (sock) => this.established(sock),
      () => this.end(true),
    );
  }

  /** Datagrams the owner handed over: into the tunnel. */
  sendPacked(packed: ArrayBuffer): void {
    const sock = this.sock;
    const totals = this.flows.shard.totals;
    if (!this.joined || sock === undefined || sock.closed) {
      totals.queueDrops += unpackDatagrams(packed, () => {});
      return;
    }
    unpackDatagrams(packed, (view) => sendToTunnel(sock, view, totals));
    this.flows.shard.flushTunnel();
  }

  /** @internal Whether datagrams went to the peer since the last call. */
  takeHeard(): boolean {
    const heard = this.heard;
    this.heard = false;
    return heard;
  }

  /** Resets the connection; `lost`: tell the owner (it opens the flow again later). */
  close(lost: boolean): void {
    const sock = this.sock;
    this.end(lost);
    sock?.close();
  }

  private established(sock: TunnelSocket): void {
    if (this.ended || sock.closed || !sock.peerIsOurs) {
      sock.close();
      this.end(!this.ended);
      return;
    }
    this.sock = sock;
    const peer = this.peer;
    sock.onDatagram((view) => {
      if (view.length === FLOW_CONTROL_LENGTH && isFlowControl(view)) {
        this.control(view);
        return;
      }
      if (!this.joined) return;
      this.via.sendTo(view, peer.address, peer.record);
      this.heard = true;
    });
    sock.once("close", () => this.end(true));
    this.sendJoin();
  }

  private control(view: Uint8Array): void {
    const message = decodeFlowMessage(view, this.flows.shard.key);
    if (message?.type !== FlowMessageType.Joined || this.joined || this.ended) return;
    this.joined = true;
    this.clearTimer();
    this.flows.counters.flowJoins++;
    this.flows.post(this.owner, { t: "fup", group: this.group, flow: this.flow });
  }

  /** JOIN, again until JOINED arrives; unanswered, the connection is given up. */
  private sendJoin(): void {
    const sock = this.sock;
    if (this.ended || this.joined || sock === undefined) return;
    if (this.tries++ >= CONTROL_TRIES) {
      this.close(true);
      return;
    }
    sock.send(
      encodeFlowMessage(
        { type: FlowMessageType.Join, flow: this.flow, token: this.token },
        this.flows.shard.key,
      ),
    );
    this.flows.shard.flushTunnel();
    this.timer = setTimeout(() => this.sendJoin(), CONTROL_RETRY_MS);
    this.timer.unref();
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private end(lost: boolean): void {
    if (this.ended) return;
    this.ended = true;
    this.clearTimer();
    this.flows.memberEnded(this, lost);
  }
}
