"""A user-space UDP relay for the WAN namespace that drops, duplicates, reorders, bit-flips and replays.

    gwA --> [side a: 198.19.1.254:6000]  relay  [side b: 198.19.2.254:6000] --> gwB

Each gateway's peer is the relay's address on its side; whatever arrives on one side leaves
the other, impaired as asked. Runs until SIGTERM (the test stops it by PID) or --seconds;
prints its counts as JSON on exit, and on SIGUSR1 while it runs (the soak's accounting).

Counts are totals and, per direction ("a" = arrived from gwA, bound for gwB), split by the etun
header's type (docs/PROTOCOL.md §1, version 2) into data (FRAME, FRAME_VNET), session (SESSION
messages: sealed like data, and counted by etun as tunnel packets), handshake (INIT, RESP),
cookie (COOKIE), probe (PROBE, PROBE_REPLY) and other datagrams; with --frames the relay also
follows data frames by (direction, session, base counter) and counts, once it has seen all of a
frame's fragments, whether it passed them all on (frames_whole), some (frames_partial) or none
(frames_lost).
"""

import argparse
import collections
import json
import random
import select
import signal
import socket
import sys
import time

HOLD_MAX_S = 0.005
FRAME_FORGET_S = 10.0          # a frame not seen whole by then is counted unresolved and forgotten


KINDS = {1: "data", 2: "data", 3: "session", 4: "handshake", 5: "handshake", 6: "cookie", 7: "probe", 8: "probe"}


def kind(data: bytes) -> str:
    """What an etun datagram is, by its first byte's type (version 2)."""
    return KINDS.get(data[0] & 15, "other") if data and data[0] >> 6 == 2 else "other"


class Frames:
    """Data frames by (direction, base): fragments seen and passed on, resolved once all were seen."""

    def __init__(self, counts):
        self.counts = counts
        self.open = collections.OrderedDict()        # (dir, base) -> [count, seen, passed, first seen]

    def saw(self, direction, data, passed):
        if kind(data) != "data" or len(data) < 16 or data[3] == 0:
            return
        # Header bytes 8 (the receiver's session id) and 10..15 (the 48-bit counter) name a frame.
        base = int.from_bytes(data[10:16], "big") - data[2]
        key = (direction, data[8], base)
        f = self.open.get(key)
        if f is None:
            f = self.open[key] = [data[3], 0, 0, time.monotonic()]
        f[1] += 1
        f[2] += passed
        if f[1] >= f[0]:
            del self.open[key]
            outcome = "frames_whole" if f[2] >= f[0] else "frames_lost" if f[2] == 0 else "frames_partial"
            self.counts[f"{outcome}_{direction}"] += 1

    def expire(self):
        now = time.monotonic()
        while self.open:
            key, f = next(iter(self.open.items()))
            if now - f[3] < FRAME_FORGET_S:
                break
            del self.open[key]
            self.counts[f"frames_unresolved_{key[0]}"] += 1



def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--a", required=True, help="host:port to bind on side a")
    p.add_argument("--b", required=True, help="host:port to bind on side b")
    p.add_argument("--to-a", required=True, help="gwA's host:port")
    p.add_argument("--to-b", required=True, help="gwB's host:port")
    p.add_argument("--drop", type=float, default=0.0)
    p.add_argument("--dup", type=float, default=0.0)
    p.add_argument("--reorder", type=float, default=0.0, help="hold a packet back behind 1-3 later ones")
    p.add_argument("--flip", type=float, default=0.0, help="flip one random bit")
    p.add_argument("--replay", type=float, default=0.0, help="also resend a packet seen earlier")
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--frames", action="store_true", help="follow data frames (the soak's accounting)")
    args = p.parse_args()
    rng = random.Random(args.seed)

    def addr(text):
        host, port = text.rsplit(":", 1)
        return host, int(port)

    side = {}
    for name, where in (("a", args.a), ("b", args.b)):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind(addr(where))
        s.setblocking(False)
        side[name] = s
    target = {"a": (side["b"], addr(args.to_b)), "b": (side["a"], addr(args.to_a))}
    counts = collections.Counter({k: 0 for k in ("in", "out", "drop", "dup", "reorder", "flip", "replay")})
    frames = Frames(counts) if args.frames else None
    held = {"a": [], "b": []}          # [release after n more packets, datagram, deadline]
    history = {"a": [], "b": []}
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    report = [False]
    signal.signal(signal.SIGUSR1, lambda *_: report.__setitem__(0, True))
    deadline = time.monotonic() + args.seconds

    def send(direction, data):
        sock, to = target[direction]
        try:
            sock.sendto(data, to)
            counts["out"] += 1
            counts[f"out_{kind(data)}_{direction}"] += 1
        except OSError:
            counts[f"send_error_{direction}"] += 1

    while not stop[0] and time.monotonic() < deadline:
        holding = held["a"] or held["b"]
        ready, _, _ = select.select(list(side.values()), [], [], 0.002 if holding else 0.2)
        for name, s in side.items():
            if s not in ready:
                continue
            for _ in range(256):
                try:
                    data = s.recv(65535)
                except BlockingIOError:
                    break
                counts["in"] += 1
                counts[f"in_{kind(data)}_{name}"] += 1
                released = []
                for item in held[name]:
                    item[0] -= 1
                    if item[0] <= 0:
                        released.append(item)
                for item in released:
                    held[name].remove(item)
                if rng.random() < args.drop:
                    counts["drop"] += 1
                    counts[f"drop_{kind(data)}_{name}"] += 1
                    if frames:
                        frames.saw(name, data, False)
                elif rng.random() < args.reorder:
                    counts["reorder"] += 1
                    held[name].append([rng.randint(1, 3), data, time.monotonic() + HOLD_MAX_S])
                    if frames:
                        frames.saw(name, data, True)
                else:
                    if frames:
                        frames.saw(name, data, True)
                    if rng.random() < args.flip:
                        counts["flip"] += 1
                        buf = bytearray(data)
                        bit = rng.randrange(len(buf) * 8)
                        buf[bit // 8] ^= 1 << (bit % 8)
                        data = bytes(buf)
                    send(name, data)
                    if rng.random() < args.dup:
                        counts["dup"] += 1
                        send(name, data)
                for _, late, _ in released:
                    send(name, late)
                if args.replay:
                    history[name].append(data)
                    del history[name][:-1000]
                    if rng.random() < args.replay:
                        counts["replay"] += 1
                        send(name, rng.choice(history[name]))
        # A held packet is late, not lost: it leaves after HOLD_MAX_S whatever else arrives.
        now = time.monotonic()
        for name in held:
            for item in [i for i in held[name] if i[2] <= now]:
                held[name].remove(item)
                send(name, item[1])
        if frames:
            frames.expire()
        if report[0]:
            report[0] = False
            print(json.dumps(dict(counts)), flush=True)
    for name in held:
        for item in held[name]:
            send(name, item[1])
    json.dump(dict(counts), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
