/**
 * The fleet balancer's ruleset text (src/fleet-balancer.ts): what the health checker installs
 * for each number of live servers. That nft accepts it and that it balances is the fleet
 * test's part (fleet.test.ts loads it in a namespace and runs traffic through it).
 */
import { describe, expect, it } from "vitest";
import { balancerRuleset, pickRule, replaceServers } from "../src/fleet-balancer.js";

const config = { vip: "10.210.1.100", port: 4567 };

describe("fleet balancer ruleset", () => {
  it("round-robins new flows over every live server, in list order", () => {
    expect(pickRule(config, ["10.0.0.1", "10.0.0.2", "10.0.0.3"])).toBe(
      "ip daddr 10.210.1.100 tcp dport 4567 dnat to numgen inc mod 3 map { 0 : 10.0.0.1, 1 : 10.0.0.2, 2 : 10.0.0.3 }",
    );
  });

  it("sends everything to a lone server, and has no DNAT rule without one", () => {
    expect(pickRule(config, ["10.0.0.2"])).toBe(
      "ip daddr 10.210.1.100 tcp dport 4567 dnat to 10.0.0.2",
    );
    expect(pickRule(config, [])).toBe("");
    expect(replaceServers(config, [])).toBe("flush chain ip fleet_lb pick\n");
  });

  it("replaces only the pick chain's rule, in one transaction", () => {
    expect(replaceServers(config, ["10.0.0.1", "10.0.0.3"])).toBe(
      "flush chain ip fleet_lb pick\nadd rule ip fleet_lb pick ip daddr 10.210.1.100 tcp dport 4567 dnat to numgen inc mod 2 map { 0 : 10.0.0.1, 1 : 10.0.0.3 }\n",
    );
  });

  it("drops invalid segments and whatever reaches the balancer itself at the virtual port", () => {
    const table = balancerRuleset(config, ["10.0.0.1"]);
    expect(table).toContain("ip daddr 10.210.1.100 tcp dport 4567 ct state invalid counter drop");
    expect(table).toMatch(/hook input[^}]*ip daddr 10\.210\.1\.100 tcp dport 4567 counter drop/);
    expect(table).toMatch(/hook prerouting priority dstnat[^}]*dnat to 10\.0\.0\.1/);
  });
});
