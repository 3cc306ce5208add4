import { afterAll, describe, expect, it } from "vitest";
import { cleanupAll, Netns, realDeviceGate } from "../../../test-support/netns.js";
import { EgressMap, sourceAddressTowards } from "../src/egress-map.js";
import { UsageError } from "../src/errors.js";
import { buildApplyScript, buildRuleset, NftTable, ruleLines, tableName } from "../src/nft.js";
import { queueRuleLine, ShareQueueRules } from "../src/share-rules.js";

describe("nft rule text", () => {
  it("client: untracked, stateless rewrite of the stack's flows both ways, nothing of the host's own on them", () => {
    const spec = {
      role: "client",
      tun: "ftc0",
      tunnel4: "192.168.200.2",
      tunnel6: "fcc8::2",
      flowTimeoutSeconds: 300,
    } as const;
    expect(buildRuleset(spec)).toBe(
      [
        "table inet fake_tcp_ftc0 {",
        "\tmap egress4 {",
        "\t\ttype ipv4_addr : ipv4_addr",
        "\t}",
        "\tset flows4 {",
        "\t\ttype ipv4_addr . inet_service . inet_service",
        "\t\tflags dynamic,timeout",
        "\t\ttimeout 300s",
        "\t\tsize 262144",
        "\t}",
        "\tmap egress6 {",
        "\t\ttype ipv6_addr : ipv6_addr",
        "\t}",
        "\tset flows6 {",
        "\t\ttype ipv6_addr . inet_service . inet_service",
        "\t\tflags dynamic,timeout",
        "\t\ttimeout 300s",
        "\t\tsize 262144",
        "\t}",
        "\tchain inbound {",
        "\t\ttype filter hook prerouting priority raw; policy accept;",
        '\t\tiifname "ftc0" ip saddr 192.168.200.2 update @flows4 { ip daddr . tcp dport . tcp sport } notrack',
        '\t\tiifname != "ftc0" ip saddr . tcp sport . tcp dport @flows4 fib daddr type local notrack ip daddr set 192.168.200.2',
        '\t\tiifname "ftc0" ip6 saddr fcc8::2 update @flows6 { ip6 daddr . tcp dport . tcp sport } notrack',
        '\t\tiifname != "ftc0" ip6 saddr . tcp sport . tcp dport @flows6 fib daddr type local notrack ip6 daddr set fcc8::2',
        "\t}",
        "\tchain outbound {",
        "\t\ttype filter hook postrouting priority srcnat; policy accept;",
        '\t\toifname != "ftc0" ip saddr 192.168.200.2 ip saddr set ip daddr map @egress4',
        '\t\toifname != "ftc0" ip6 saddr fcc8::2 ip6 saddr set ip6 daddr map @egress6',
        '\t\toifname != "ftc0" ip saddr 192.168.200.2 drop',
        '\t\toifname != "ftc0" ip6 saddr fcc8::2 drop',
        "\t}",
        "\tchain local {",
        "\t\ttype filter hook output priority raw; policy accept;",
        "\t\tip daddr . tcp dport . tcp sport @flows4 drop",
        "\t\tip6 daddr . tcp dport . tcp sport @flows6 drop",
        "\t}",
        "}",
        "",
      ].join("\n"),
    );
    // IPv4 only: nothing of IPv6, and the default flow timeout.
    const v4 = buildRuleset({ role: "client", tun: "ftc0", tunnel4: "192.168.200.2" });
    expect(v4).not.toContain("ip6");
    expect(v4).not.toContain("flows6");
    expect(v4).toContain("timeout 240s");
    // No masquerade and no conntrack state anywhere in the client's rules.
    expect(buildRuleset(spec)).not.toMatch(/masquerade|ct state/);
  });

  it("server: untracked, stateless rewrite of the listen port on local addresses, IPv4 only without an IPv6 address", () => {
    const spec = {
      role: "server",
      tun: "fts0",
      port: 4567,
      tunnel4: "192.168.201.2",
      flowTimeoutSeconds: 200,
    } as const;
    expect(buildRuleset(spec)).toBe(
      [
        "table inet fake_tcp_fts0 {",
        "\tmap clients4 {",
        "\t\ttype inet_service . ipv4_addr : ipv4_addr",
        "\t\tflags dynamic,timeout",
        "\t\ttimeout 200s",
        "\t\tsize 262144",
        "\t}",
        "\tchain inbound {",
        "\t\ttype filter hook prerouting priority raw; policy accept;",
        '\t\tiifname != "fts0" tcp dport 4567 fib daddr type local update @clients4 { tcp sport . ip saddr : ip daddr } notrack ip daddr set 192.168.201.2',
        '\t\tiifname "fts0" tcp sport 4567 notrack',
        "\t}",
        "\tchain outbound {",
        "\t\ttype filter hook postrouting priority srcnat; policy accept;",
        '\t\toifname != "fts0" ip saddr 192.168.201.2 tcp sport 4567 ip saddr set tcp dport . ip daddr map @clients4',
        '\t\toifname != "fts0" ip saddr 192.168.201.2 tcp sport 4567 drop',
        "\t}",
        "}",
        "",
      ].join("\n"),
    );
    expect(ruleLines({ ...spec, tunnel6: "fcc9::2" })).toEqual([
      'iifname != "fts0" tcp dport 4567 fib daddr type local update @clients4 { tcp sport . ip saddr : ip daddr } notrack ip daddr set 192.168.201.2',
      'iifname != "fts0" tcp dport 4567 fib daddr type local update @clients6 { ip6 saddr : ip6 daddr } notrack ip6 daddr set fcc9::2',
      'iifname "fts0" tcp sport 4567 notrack',
      'oifname != "fts0" ip saddr 192.168.201.2 tcp sport 4567 ip saddr set tcp dport . ip daddr map @clients4',
      'oifname != "fts0" ip6 saddr fcc9::2 tcp sport 4567 ip6 saddr set ip6 daddr map @clients6',
      'oifname != "fts0" ip saddr 192.168.201.2 tcp sport 4567 drop',
      'oifname != "fts0" ip6 saddr fcc9::2 tcp sport 4567 drop',
    ]);
  });

  it("the apply script replaces a stale table in the same transaction", () => {
    const script = buildApplyScript({ role: "client", tun: "t-1.x", tunnel4: "10.0.0.2" });
    expect(script.startsWith("table inet fake_tcp_t-1.x\ndelete table inet fake_tcp_t-1.x\n")).toBe(
      true,
    );
  });

  it("gives every interface name its own table, and refuses names unsafe in a script", () => {
    const names = ["a-b", "a.b", "a_b", "ab", "a--b", "a..b"];
    expect(new Set(names.map(tableName)).size).toBe(names.length);
    expect(tableName("wg.0-a")).toBe("fake_tcp_wg.0-a");
    for (const bad of ['x"accept#', "a b", "a;b", "", "x".repeat(16)]) {
      expect(() => tableName(bad)).toThrow(/cannot be used in nft rules/);
      expect(() => buildRuleset({ role: "client", tun: bad, tunnel4: "10.0.0.2" })).toThrow();
    }
  });
});

const gate = realDeviceGate();

describe.skipIf(gate.skip)("nft table in a throw-away namespace", () => {
  afterAll(cleanupAll);

  it("applies, replaces a stale table, and removes", async () => {
    const ns = new Netns("ftcn");
    const nft = ["ip", "netns", "exec", ns.name, "nft"];
    const spec = {
      role: "server",
      tun: "fts0",
      port: 4567,
      tunnel4: "192.168.201.2",
      tunnel6: "fcc9::2",
    } as const;
    const table = new NftTable(spec, nft);
    expect(await table.exists()).toBe(false);

    // A crashed run left a table of the same name with different content.
    ns.exec("nft", ["-f", "-"], {
      input: [
        "table inet fake_tcp_fts0 {",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat;",
        "    tcp dport 9999 dnat ip to 10.1.1.1",
        "  }",
        "}",
        "",
      ].join("\n"),
    });
    expect(await table.exists()).toBe(true);

    expect(await table.apply()).toEqual({ staleRemoved: true });
    const listed = ns.exec("nft", ["list", "table", "inet", "fake_tcp_fts0"]);
    // Every rule as written (nft lists the rules the way they were given).
    for (const rule of ruleLines(spec)) expect(listed).toContain(rule);
    expect(listed).not.toContain("9999");

    // Applying again (no stale table this time... but ours) stays idempotent.
    expect(await table.apply()).toEqual({ staleRemoved: true });
    expect(ns.exec("nft", ["list", "ruleset"]).match(/table inet fake_tcp_fts0/g)).toHaveLength(1);

    expect(await table.remove()).toBe(true);
    expect(ns.exec("nft", ["list", "ruleset"])).not.toContain("fake_tcp_fts0");
    expect(await table.remove()).toBe(false);
    ns.destroy();
  });

  it("client table lists exactly its rules, and the egress map takes, keeps and replaces a server's source", async () => {
    const ns = new Netns("ftcn");
    const nft = ["ip", "netns", "exec", ns.name, "nft"];
    const spec = {
      role: "client",
      tun: "ftc0",
      tunnel4: "192.168.200.2",
      tunnel6: "fcc8::2",
    } as const;
    const table = new NftTable(spec, nft);
    expect(await table.apply()).toEqual({ staleRemoved: false });
    const listed = ns.exec("nft", ["list", "table", "inet", "fake_tcp_ftc0"]);
    for (const rule of ruleLines(spec)) expect(listed).toContain(rule);

    // The source towards a server as the routing table says (here: scripted, as roaming).
    let source4 = "198.51.100.7";
    const egress = new EgressMap("ftc0", nft, async (_server, family) =>
      family === 4 ? source4 : "2001:db8::7",
    );
    const elements = (map: string) => ns.exec("nft", ["list", "map", "inet", "fake_tcp_ftc0", map]);
    await egress.prepare("203.0.113.1", 4);
    await egress.prepare("2001:db8:1::1", 6);
    expect(elements("egress4")).toContain("203.0.113.1 : 198.51.100.7");
    expect(elements("egress6")).toContain("2001:db8:1::1 : 2001:db8::7");
    // Roaming: the next connection writes the new source in place of the old.
    source4 = "198.51.100.8";
    await egress.prepare("203.0.113.1", 4);
    expect(elements("egress4")).toContain("203.0.113.1 : 198.51.100.8");
    expect(elements("egress4")).not.toContain("198.51.100.7");
    // Another shard that still believes the old source finds the element changed: replaced.
    const other = new EgressMap("ftc0", nft, async () => "198.51.100.9");
    await other.prepare("203.0.113.1", 4);
    expect(elements("egress4")).toContain("203.0.113.1 : 198.51.100.9");
    await table.remove();
    ns.destroy();
  });

  it("the source towards an address is the one the routing table picks", async () => {
    expect(await sourceAddressTowards("127.0.0.1", 4)).toBe("127.0.0.1");
    await expect(sourceAddressTowards("::1", 6)).resolves.toBe("::1");
  });
});

describe("nft failures", () => {
  it("a missing nft names --no-auto-rules", async () => {
    const table = new NftTable({ role: "client", tun: "x", tunnel4: "10.0.0.2" }, [
      "/nonexistent/nft",
    ]);
    await expect(table.apply()).rejects.toThrow(UsageError);
    await expect(table.apply()).rejects.toThrow(/nft \(nftables\) not found.*--no-auto-rules/);
  });
});

describe.skipIf(gate.skip)("port sharing rules in a throw-away namespace", () => {
  afterAll(cleanupAll);

  it("share: admitted clients before the queue, marked SYNs after it, both families; the queue rule replaces a stale copy and goes", async () => {
    const ns = new Netns("ftcs");
    const prefix = ["ip", "netns", "exec", ns.name];
    const spec = {
      role: "server",
      tun: "fts0",
      port: 443,
      tunnel4: "192.168.201.2",
      tunnel6: "fcc9::2",
      share: true,
    } as const;
    const table = new NftTable(spec, [...prefix, "nft"]);
    await table.apply();
    const listed = ns.exec("nft", ["list", "table", "inet", "fake_tcp_fts0"]);
    for (const rule of ruleLines(spec)) expect(listed).toContain(rule);
    expect(listed).toContain("type filter hook prerouting priority raw - 10;");
    expect(listed).toContain("type filter hook prerouting priority raw + 10;");
    expect(listed).toContain("set tunnel6 {");
    expect(listed).toContain(
      "tcp sport . ip saddr @clients4 update @clients4 { tcp sport . ip saddr : ip daddr } notrack ip daddr set 192.168.201.2",
    );
    expect(listed).toContain("meta mark & 0x08000000 == 0x08000000");

    const queue = { tun: "fts0", port: 443, queue: 7, families: [4, 6] } as const;
    const rules = new ShareQueueRules(queue, prefix);
    expect(await rules.apply()).toBe(0);
    // A second start (as after a crash) finds and replaces the copies.
    expect(await rules.apply()).toBe(2);
    for (const cmd of ["iptables-nft", "ip6tables-nft"]) {
      const saved = ns.exec(cmd, ["-t", "raw", "-S", "PREROUTING"]);
      expect(saved.match(/NFQUEUE --queue-num 7 --queue-bypass/g)).toHaveLength(1);
      expect(saved).toContain("--tcp-flags FIN,SYN,RST,ACK SYN");
      expect(saved).toContain("--dst-type LOCAL");
    }
    expect(await rules.remove()).toBe(2);
    expect(ns.exec("nft", ["list", "ruleset"])).not.toContain("NFQUEUE");
    await table.remove();
    ns.destroy();
  });

  it("share rule lines name the commands as a person would type them", () => {
    const line = queueRuleLine({ tun: "fts0", port: 443, queue: 18004, families: [4] }, 4);
    expect(line).toBe(
      'iptables-nft -t raw -I PREROUTING ! -i fts0 -p tcp --dport 443 --tcp-flags SYN,ACK,RST,FIN SYN -m addrtype --dst-type LOCAL -m comment --comment "fake_tcp_fts0 share" -j NFQUEUE --queue-num 18004 --queue-bypass',
    );
  });
});
