import { describe, expect, it } from "vitest";
import {
  formatAddress,
  isHostName,
  parseHostPort,
  parseIPv4,
  parseIPv6,
  parseListenAddress,
  parsePort,
} from "../src/address.js";
import { UsageError } from "../src/errors.js";

describe("parseListenAddress", () => {
  it("reads a bare port as 127.0.0.1", () => {
    expect(parseListenAddress("1234", "--local")).toEqual({
      address: "127.0.0.1",
      port: 1234,
      family: 4,
    });
  });
  it("reads IP:PORT and [IPv6]:PORT", () => {
    expect(parseListenAddress("0.0.0.0:51820", "--local")).toEqual({
      address: "0.0.0.0",
      port: 51820,
      family: 4,
    });
    expect(parseListenAddress("[::]:1", "--local")).toEqual({ address: "::", port: 1, family: 6 });
    expect(parseListenAddress("[fe80::1]:65535", "--local").address).toBe("fe80::1");
  });
  it.each([
    ["", /is not PORT/],
    ["abc", /is not PORT/],
    ["0", /out of range/],
    ["65536", /out of range/],
    ["::1:80", /is not PORT/],
    ["[1.2.3.4]:80", /not an IP address/],
    ["host.example:80", /not an IP address/],
    ["1.2.3.4:", /not a port number/],
    ["1.2.3.4:80x", /not a port number/],
    ["[::1]80", /is not PORT/],
  ])("refuses %j", (text, message) => {
    expect(() => parseListenAddress(text, "--local")).toThrow(UsageError);
    expect(() => parseListenAddress(text, "--local")).toThrow(message);
  });
});

describe("parseHostPort", () => {
  it("keeps names for later resolution and marks IP literals", () => {
    expect(parseHostPort("vpn.example.com:4567", "--remote")).toEqual({
      host: "vpn.example.com",
      port: 4567,
      family: 0,
    });
    expect(parseHostPort("10.0.0.1:1", "--remote")).toEqual({
      host: "10.0.0.1",
      port: 1,
      family: 4,
    });
    expect(parseHostPort("[2001:db8::1]:443", "--remote")).toEqual({
      host: "2001:db8::1",
      port: 443,
      family: 6,
    });
  });
  it.each([
    ["4567", /is not HOST:PORT/],
    ["-bad-.example:1", /neither an IP address nor a valid host name/],
    ["a b:1", /neither/],
    ["[vpn.example]:1", /not an IPv6 address/],
    ["host:0", /out of range/],
  ])("refuses %j", (text, message) => {
    expect(() => parseHostPort(text, "--remote")).toThrow(message);
  });
});

describe("small parsers", () => {
  it("parsePort bounds", () => {
    expect(parsePort("1", "p")).toBe(1);
    expect(parsePort("65535", "p")).toBe(65535);
    expect(() => parsePort("-1", "p")).toThrow(/not a port number/);
    expect(() => parsePort("100000", "p")).toThrow(/not a port number/);
  });
  it("host names follow the label rules", () => {
    expect(isHostName("localhost")).toBe(true);
    expect(isHostName("a-b.c.")).toBe(true);
    expect(isHostName("a..b")).toBe(false);
    expect(isHostName(`${"a".repeat(64)}.com`)).toBe(false);
  });
  it("TUN address flags", () => {
    expect(parseIPv4(" 192.168.200.1 ", "--tun-local")).toBe("192.168.200.1");
    expect(() => parseIPv4("fcc8::1", "--tun-local")).toThrow(
      /--tun-local: "fcc8::1" is not an IPv4/,
    );
    expect(parseIPv6("[fcc8::2]", "--tun-peer6")).toBe("fcc8::2");
    expect(() => parseIPv6("1.2.3.4", "--tun-peer6")).toThrow(/not an IPv6/);
  });
  it("formatAddress brackets IPv6", () => {
    expect(formatAddress("::1", 5)).toBe("[::1]:5");
    expect(formatAddress("1.2.3.4", 5)).toBe("1.2.3.4:5");
  });
});
