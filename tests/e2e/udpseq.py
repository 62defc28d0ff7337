"""Sequence-numbered UDP datagrams between the hosts: `send` paces them out, `recv` checks each (no corruption, no duplicate) and prints a JSON summary."""

# Each datagram: 8-byte sequence number, then `size - 8` bytes derived from it (sha256 counter
# mode), so a corrupted one is told apart from a late one. The receiver counts received,
# duplicates (a sequence number seen before), corrupt (content not the one its number gives),
# and every pause between arrivals longer than GAP_S (an outage, in seconds), and how long nothing
# came before it stopped; it stops after --seconds, at SIGTERM, or when the sender's end marker
# arrives.

import argparse
import hashlib
import json
import signal
import socket
import sys
import time

END = 0xFFFFFFFFFFFFFFFF
GAP_S = 0.2                      # a pause between two arrivals longer than this is reported (seconds)


def body(seq: int, size: int) -> bytes:
    seed = seq.to_bytes(8, "big")
    out = b""
    block = 0
    while len(out) < size - 8:
        out += hashlib.sha256(seed + block.to_bytes(4, "big")).digest()
        block += 1
    return seed + out[:size - 8]


def send(host: str, port: int, rate: float, seconds: float, size: int) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start = time.monotonic()
    seq = sent = 0
    while True:
        now = time.monotonic()
        if now - start >= seconds:
            break
        due = int((now - start) * rate)
        while seq < due:
            try:
                s.sendto(body(seq, size), (host, port))
                sent += 1
            except OSError:
                pass                          # no route for a moment: the datagram is lost, counted as such
            seq += 1
        time.sleep(min(0.005, 1 / rate))
    for _ in range(3):
        try:
            s.sendto(END.to_bytes(8, "big"), (host, port))
        except OSError:
            pass
    print(json.dumps({"sent": sent, "last_seq": seq - 1}))
    return 0


def recv(port: int, seconds: float, size: int) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("0.0.0.0", port))
    s.settimeout(0.5)
    seen: set[int] = set()
    counts = {"received": 0, "duplicates": 0, "corrupt": 0, "max_seq": -1, "gaps": []}
    last = None                               # arrival of the latest datagram
    deadline = time.monotonic() + seconds
    stopped = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))     # stop now, and say what came
    print(json.dumps({"ready": True}), flush=True)
    while time.monotonic() < deadline and not stopped:
        try:
            data = s.recv(65535)
        except TimeoutError:
            continue
        seq = int.from_bytes(data[:8], "big")
        if seq == END and len(data) == 8:
            break
        counts["received"] += 1
        now = time.monotonic()
        if last is not None and now - last > GAP_S:
            counts["gaps"].append(round(now - last, 3))
        last = now
        if data != body(seq, size):
            counts["corrupt"] += 1
            continue
        if seq in seen:
            counts["duplicates"] += 1
            continue
        seen.add(seq)
        counts["max_seq"] = max(counts["max_seq"], seq)
    counts["silent_at_end"] = None if last is None else round(time.monotonic() - last, 3)
    counts["distinct"] = len(seen)
    counts["missing"] = counts["max_seq"] + 1 - len(seen)
    print(json.dumps(counts), flush=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("send", "recv"))
    p.add_argument("--host", default="")
    p.add_argument("--port", type=int, default=7100)
    p.add_argument("--rate", type=float, default=200.0, help="datagrams per second")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--size", type=int, default=1200)
    a = p.parse_args()
    if a.mode == "send":
        return send(a.host, a.port, a.rate, a.seconds, a.size)
    return recv(a.port, a.seconds, a.size)


if __name__ == "__main__":
    sys.exit(main())
