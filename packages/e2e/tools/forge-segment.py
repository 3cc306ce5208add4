#!/usr/bin/env python3
"""Sends one crafted IPv4/TCP segment (a forged RST, say) from the namespace it runs in.

Node has no raw sockets. The source address and port are whatever the caller names (spoofed
as the peer of a tracked flow); the kernel fills in the IP length and checksum. Prints one
JSON line with what it sent.
"""
import argparse
import json
import socket
import sys

sys.dont_write_bytecode = True  # raw_packets.py is imported from the repository: no __pycache__
from raw_packets import ipv4_header, tcp_segment  # noqa: E402

FLAGS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", required=True)
    parser.add_argument("--dst", required=True)
    parser.add_argument("--sport", type=int, required=True)
    parser.add_argument("--dport", type=int, required=True)
    parser.add_argument("--seq", type=int, required=True)
    parser.add_argument("--ack", type=int, default=0)
    parser.add_argument("--flags", default="R", help="letters of F S R P A")
    parser.add_argument("--ttl", type=int, default=64,
                        help="1: the segment dies at the first router that forwards it, after "
                             "that router's conntrack has seen it")
    args = parser.parse_args()

    flags = 0
    for letter in args.flags:
        flags |= FLAGS[letter]
    src, dst = socket.inet_aton(args.src), socket.inet_aton(args.dst)
    segment = tcp_segment(src, dst, args.sport, args.dport, args.seq % 2**32, args.ack % 2**32,
                          flags)
    ip = ipv4_header(src, dst, len(segment), args.ttl)
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    sock.sendto(ip + segment, (args.dst, 0))
    sock.close()
    print(json.dumps({"sent": 1, "seq": args.seq % 2**32, "flags": args.flags, "ttl": args.ttl}))


if __name__ == "__main__":
    main()
