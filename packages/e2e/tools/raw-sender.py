#!/usr/bin/env python3
"""Raw IPv4/TCP packet sender for the rig's abuse tests (Node has no raw sockets).

Runs inside one of the rig's namespaces (the router R, on the WAN) and sends crafted packets
at the tunnel server:
  syn-flood  COUNT SYNs (seq 0, options NOP + window scale 14, like a real client) from
             spoofed addresses in --src-prefix and random ports;
  garbage    COUNT malformed packets in rotation: truncated TCP headers, bad checksums,
             data offsets past the end, random flag combinations, random payloads, RSTs
             and ACKs for unknown tuples, all from spoofed addresses.
Prints one JSON line with what it sent. Every loop is bounded by COUNT.
"""
import argparse
import ipaddress
import json
import random
import socket
import struct
import sys
import time

sys.dont_write_bytecode = True  # raw_packets.py is imported from the repository: no __pycache__
from raw_packets import ipv4_header, tcp_segment  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["syn-flood", "garbage"])
    parser.add_argument("--dst", required=True)
    parser.add_argument("--dport", type=int, required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--src-prefix", default="10.201.128.0/17")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    net = ipaddress.ip_network(args.src_prefix)
    dst = socket.inet_aton(args.dst)
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)

    def spoofed_src() -> bytes:
        host = rng.randrange(1, net.num_addresses - 1)
        return (net.network_address + host).packed

    kinds = {}
    sent = 0
    errors = 0
    start = time.time()
    for i in range(max(0, min(args.count, 1_000_000))):
        src = spoofed_src()
        sport = rng.randrange(1024, 65535)
        if args.mode == "syn-flood":
            kind = "syn"
            tcp = tcp_segment(src, dst, sport, args.dport, 0, 0, 0x02, options=b"\x01\x03\x03\x0e")
        else:
            variant = i % 8
            if variant == 0:
                kind = "truncated-header"
                full = tcp_segment(src, dst, sport, args.dport, rng.getrandbits(32), 0, 0x02)
                tcp = full[: rng.randrange(0, 20)]
            elif variant == 1:
                kind = "bad-checksum"
                tcp = tcp_segment(src, dst, sport, args.dport, 0, 0, 0x02, good_checksum=False)
            elif variant == 2:
                kind = "offset-past-end"
                tcp = tcp_segment(src, dst, sport, args.dport, 1, 1, 0x10, data_offset=15)
            elif variant == 3:
                kind = "random-flags"
                tcp = tcp_segment(src, dst, sport, args.dport, rng.getrandbits(32),
                                  rng.getrandbits(32), rng.getrandbits(8),
                                  payload=rng.randbytes(rng.randrange(0, 64)))
            elif variant == 4:
                kind = "random-bytes"
                tcp = rng.randbytes(rng.randrange(20, 200))
                tcp = struct.pack("!HH", sport, args.dport) + tcp[4:]
            elif variant == 5:
                kind = "data-unknown-tuple"
                tcp = tcp_segment(src, dst, sport, args.dport, rng.getrandbits(32),
                                  rng.getrandbits(32), 0x10, payload=rng.randbytes(100))
            elif variant == 6:
                kind = "rst-unknown-tuple"
                tcp = tcp_segment(src, dst, sport, args.dport, rng.getrandbits(32), 0, 0x04)
            else:
                kind = "syn-nonzero-seq-bad-options"
                tcp = tcp_segment(src, dst, sport, args.dport, rng.getrandbits(32) | 1, 0, 0x02,
                                  options=b"\x03\x09\xff\x00")
        packet = ipv4_header(src, dst, len(tcp)) + tcp
        try:
            sock.sendto(packet, (args.dst, 0))
            sent += 1
            kinds[kind] = kinds.get(kind, 0) + 1
        except OSError:
            errors += 1
            time.sleep(0.001)
    print(json.dumps({"mode": args.mode, "sent": sent, "errors": errors, "kinds": kinds,
                      "seconds": round(time.time() - start, 3)}))


if __name__ == "__main__":
    main()
