#!/usr/bin/env python3
"""Minimal ICMP echo (ping) for the rig: the `ping` tool is not installed everywhere.

Usage: icmp-ping.py DEST [--count N] [--interval S] [--timeout S]
Prints one JSON line: {"sent": N, "received": N, "rtt_ms": [...]}. Bounded by COUNT and TIMEOUT.
"""
import argparse
import json
import os
import select
import socket
import struct
import sys
import time

sys.dont_write_bytecode = True  # raw_packets.py is imported from the repository: no __pycache__
from raw_packets import checksum  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dest")
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args()
    ident = os.getpid() & 0xFFFF
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sent_at = {}
    rtts = []
    deadline = None
    seq = 0
    next_send = time.time()
    while True:
        now = time.time()
        if seq < min(args.count, 1000) and now >= next_send:
            body = struct.pack("!d", now) + b"e2e-ping" * 4
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            packet = struct.pack("!BBHHH", 8, 0, checksum(header + body), ident, seq) + body
            sock.sendto(packet, (args.dest, 0))
            sent_at[seq] = now
            seq += 1
            next_send = now + args.interval
            if seq == args.count:
                deadline = now + args.timeout
        if deadline is not None and (now >= deadline or len(rtts) == args.count):
            break
        ready, _, _ = select.select([sock], [], [], 0.05)
        if ready:
            data, _ = sock.recvfrom(2048)
            ihl = (data[0] & 0x0F) * 4
            icmp_type, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if icmp_type == 0 and rid == ident and rseq in sent_at:
                rtts.append(round((time.time() - sent_at.pop(rseq)) * 1000, 3))
    print(json.dumps({"sent": seq, "received": len(rtts), "rtt_ms": rtts}))


if __name__ == "__main__":
    main()
