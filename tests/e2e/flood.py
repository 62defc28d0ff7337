"""Replays recorded datagrams at a steady rate from spoofed IPv4 sources, bounded in rate and time.

Replays recorded datagrams at a steady rate from spoofed IPv4 sources (a raw socket in the WAN
namespace): `flood.py DST_IP DST_PORT RATE SECONDS SOURCES_CIDR FILE [SENDERS]`. FILE holds the
datagrams, each as a line of hex; they are sent round-robin, each from a random address of
SOURCES_CIDR and a random port. Bounded in rate and time.

Every IP packet is built before the clock starts, so the senders only call sendto(); SENDERS
processes (default 1) share the rate, each with its own socket, so one Python loop's speed is no
ceiling. Prints `start T` (CLOCK_MONOTONIC seconds when sending begins) as soon as it is known,
then `sent N in S` (datagrams the kernel took, seconds from start to the last sender's end)."""

import ipaddress
import os
import random
import socket
import struct
import sys
import time

BATCH = 50                      # datagrams a sender sends between two looks at the clock
PACKETS_MAX = 400_000           # packets built in advance, at most (~60 MB of 150-byte ones)
START_DELAY_S = 0.2             # from the last packet built to the first sent: the senders fork


def packet(src: bytes, sport: int, dst: bytes, dport: int, payload: bytes) -> bytes:
    """IPv4 + UDP; the kernel fills in the IP checksum and ID (IP_HDRINCL), UDP's is left 0."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, socket.IPPROTO_UDP, 0, src, dst)
    return ip + udp


def build(datagrams: list[bytes], count: int, cidr: str, dst: bytes, dport: int) -> list[bytes]:
    """`count` packets, datagram k % len(datagrams) in the k-th, each from its own random source."""
    net = ipaddress.ip_network(cidr)
    base, hosts = int(net.network_address), net.num_addresses - 2
    rng = random.Random(7)
    return [packet(struct.pack("!I", base + 1 + rng.randrange(hosts)), rng.randrange(1024, 65535), dst, dport,
                   datagrams[k % len(datagrams)]) for k in range(count)]


def send(packets: list[bytes], dst_ip: str, rate: float, start: float, end: float) -> int:
    """Send `packets` at `rate` a second from `start` until they run out or `end` passes; a
    sender that fell behind catches up at once. Returns how many the kernel took."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    interval = BATCH / rate
    sent, next_at = 0, start
    time.sleep(max(0.0, start - time.monotonic()))
    for i in range(0, len(packets), BATCH):
        if time.monotonic() >= end:
            break
        for p in packets[i:i + BATCH]:
            try:
                s.sendto(p, (dst_ip, 0))
                sent += 1
            except OSError:
                pass
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return sent


def main() -> int:
    dst_ip, dst_port, rate, seconds, cidr, path = sys.argv[1:7]
    senders = int(sys.argv[7]) if len(sys.argv) > 7 else 1
    rate, seconds = float(rate), float(seconds)
    datagrams = [bytes.fromhex(line) for line in open(path).read().split()]
    count = min(int(rate * seconds) + BATCH * senders, PACKETS_MAX)
    packets = build(datagrams, count, cidr, socket.inet_aton(dst_ip), int(dst_port))
    start = time.monotonic() + START_DELAY_S
    end = start + seconds
    print(f"start {start:.6f}", flush=True)
    children = []
    for k in range(senders):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:                                  # a sender: its share, then its count
            os.close(r)
            n = send(packets[k::senders], dst_ip, rate / senders, start, end)
            os.write(w, f"{n} {time.monotonic():.6f}".encode())
            os._exit(0)
        os.close(w)
        children.append((pid, r))
    sent, last = 0, start
    for pid, r in children:
        with os.fdopen(r) as f:
            n, finished = f.read().split()
        os.waitpid(pid, 0)
        sent, last = sent + int(n), max(last, float(finished))
    print(f"sent {sent} in {last - start:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
