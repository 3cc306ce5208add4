"""Packet building shared by the rig's raw-socket tools (Node has no raw sockets).

The scripts import it from their own folder; they turn off bytecode caching first, so that
running them (as root, inside namespaces) leaves no __pycache__ in the repository.
"""
import struct


def checksum(data: bytes) -> int:
    """The Internet checksum (ones' complement of the ones'-complement sum of 16-bit words)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_header(src: bytes, dst: bytes, payload_len: int, ttl: int = 64) -> bytes:
    # The kernel fills in total length and the header checksum for IP_HDRINCL sockets.
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, 0, 0x4000, ttl, 6, 0, src, dst)


def tcp_segment(src, dst, sport, dport, seq, ack, flags, options=b"", payload=b"",
                good_checksum=True, data_offset=None):
    """A TCP segment from src to dst (4-byte addresses), window 65535, checksum filled in."""
    words = data_offset if data_offset is not None else (20 + len(options)) // 4
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, words << 4, flags, 0xFFFF, 0, 0)
    segment = header + options + payload
    pseudo = struct.pack("!4s4sBBH", src, dst, 0, 6, len(segment))
    csum = checksum(pseudo + segment)
    if not good_checksum:
        csum ^= 0x5A5A
    return segment[:16] + struct.pack("!H", csum) + segment[18:]
