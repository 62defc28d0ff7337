"""Replays recorded datagrams at a steady rate from spoofed IPv4 sources (a raw socket in the WAN
namespace): `flood.py DST_IP DST_PORT RATE SECONDS SOURCES_CIDR FILE`. FILE holds the datagrams,
each as a line of hex; they are sent round-robin, each from a random address of SOURCES_CIDR and
a random port. Prints how many were sent. Bounded in rate and time."""

import ipaddress
import random
import socket
import struct
import sys
import time

BATCH = 50                      # datagrams sent between two looks at the clock


def packet(src: bytes, sport: int, dst: bytes, dport: int, payload: bytes) -> bytes:
    """IPv4 + UDP; the kernel fills in the IP checksum and ID (IP_HDRINCL), UDP's is left 0."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, socket.IPPROTO_UDP, 0, src, dst)
    return ip + udp


def main() -> int:
    dst_ip, dst_port, rate, seconds, cidr, path = sys.argv[1:7]
    dst, dport = socket.inet_aton(dst_ip), int(dst_port)
    net = ipaddress.ip_network(cidr)
    datagrams = [bytes.fromhex(line) for line in open(path).read().split()]
    rng = random.Random(7)
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    interval = BATCH / float(rate)
    end = time.monotonic() + float(seconds)
    sent, k, next_at = 0, 0, time.monotonic()
    while time.monotonic() < end:
        for _ in range(BATCH):
            src = (net.network_address + rng.randrange(1, net.num_addresses - 1)).packed
            try:
                s.sendto(packet(src, rng.randrange(1024, 65535), dst, dport, datagrams[k % len(datagrams)]),
                         (dst_ip, 0))
                sent += 1
            except OSError:
                pass
            k += 1
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    print(sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
