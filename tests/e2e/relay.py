"""A user-space UDP relay for the WAN namespace that drops, duplicates, reorders, bit-flips and replays.

    gwA --> [side a: 198.19.1.254:6000]  relay  [side b: 198.19.2.254:6000] --> gwB

Each gateway's peer is the relay's address on its side; whatever arrives on one side leaves
the other, impaired as asked. Runs until SIGTERM (the test stops it by PID) or --seconds;
prints its counts as JSON on exit.
"""

import argparse
import json
import random
import select
import signal
import socket
import sys
import time

HOLD_MAX_S = 0.005



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
    counts = {k: 0 for k in ("in", "out", "drop", "dup", "reorder", "flip", "replay")}
    held = {"a": [], "b": []}          # [release after n more packets, datagram, deadline]
    history = {"a": [], "b": []}
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    deadline = time.monotonic() + args.seconds

    def send(direction, data):
        sock, to = target[direction]
        try:
            sock.sendto(data, to)
            counts["out"] += 1
        except OSError:
            pass

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
                released = []
                for item in held[name]:
                    item[0] -= 1
                    if item[0] <= 0:
                        released.append(item)
                for item in released:
                    held[name].remove(item)
                if rng.random() < args.drop:
                    counts["drop"] += 1
                elif rng.random() < args.reorder:
                    counts["reorder"] += 1
                    held[name].append([rng.randint(1, 3), data, time.monotonic() + HOLD_MAX_S])
                else:
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
    json.dump(counts, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
