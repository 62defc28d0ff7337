"""Filters swapped under running pumps: every frame decided by a live table, counted once.

Filters swapped under running pumps (a reload): thousands of swaps while frames flow both ways,
and every frame is still decided by a live table and counted exactly once.

The LAN is a datagram socketpair read as a TAP device (tests/pumps.py); frames from the tunnel
are sealed by a second Datapath holding the same session secret and sent to the engine's UDP
socket. Both senders are other processes, so they keep the pumps busy while this one swaps
(sharing its GIL they would take turns with the swapping instead). Both tables hold the same rules in another order, so every swap carries every count over
(filter.pxi): a hit counted into a table after its counts moved on, or into a freed table, shows
as a total that does not add up.
"""

import os
import socket
import subprocess
import sys
import threading
import time

from etun import _fast
from tests import REPO
from tests.poll import wait_until
from tests.pumps import paired_lan

DENIED, ALLOWED = 0x88B5, 0x88B6
STRAY = bytes.fromhex("02ffffffff01")            # a MAC rule no frame matches: a table with a hash
RULES = [(False, "ethertype", DENIED), (True, "ethertype", ALLOWED), (False, "mac", STRAY)]
TABLES = (RULES, RULES[::-1])
FRAMES_EACH_WAY = 50000
SWAPS_MAX = 100000
RUN_S_MAX = 20.0


def frame(ethertype: int, n: int) -> bytes:
    return bytes.fromhex("02aaaaaaaa0102bbbbbbbb02") + ethertype.to_bytes(2, "big") + n.to_bytes(4, "big") + bytes(60)


SEND_LAN = """
import select, socket, sys
s = socket.socket(fileno=int(sys.argv[1]))            # shares the test's non-blocking file description
frames = [bytes.fromhex(h) for h in sys.argv[3:]]
n = 0
while n < int(sys.argv[2]):
    try:
        s.send(frames[n % 2])
        n += 1
    except BlockingIOError:                           # a full socketpair waits: nothing is lost
        select.select([], [s], [], 1.0)
"""


def send_lan(host: socket.socket, count: int) -> None:
    hexes = [(bytes(10) + frame(ethertype, 0)).hex() for ethertype in (ALLOWED, DENIED)]
    subprocess.run([sys.executable, "-c", SEND_LAN, str(host.fileno()), str(count), *hexes],
                   pass_fds=(host.fileno(),), check=True, timeout=RUN_S_MAX)


SEND_TUNNEL = """
import socket, sys
from etun import _fast
peer = _fast.Datapath(2)
peer.set_send_session(bytes.fromhex(sys.argv[1]))
out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
frames = [bytes.fromhex(h) for h in sys.argv[5:]]
for n in range(int(sys.argv[4])):
    for datagram in peer.seal(frames[n % 2]):
        out.sendto(datagram, (sys.argv[2], int(sys.argv[3])))
"""


def send_tunnel(secret: bytes, address, count: int) -> None:
    """The peer site: another process sealing frames under the session secret the engine holds."""
    hexes = [frame(ethertype, 0).hex() for ethertype in (ALLOWED, DENIED)]
    subprocess.run([sys.executable, "-c", SEND_TUNNEL, secret.hex(), address[0], str(address[1]), str(count), *hexes],
                   check=True, timeout=RUN_S_MAX, cwd=REPO)


def counts(dp: _fast.Datapath, direction: int) -> dict[int, int]:
    """Hits per EtherType rule of the table installed now (its rules' order varies)."""
    rules = dp.filter_rules[0, direction][1]
    hits = dp.filter_stats(direction)["rules"]
    return {value: hits[i] for i, (_, kind, value) in enumerate(rules) if kind == "ethertype"}


def test_filters_swapped_thousands_of_times_under_running_pumps_count_every_frame_once():
    secret = os.urandom(32)
    with paired_lan() as (host, sink, dp, engine, address):
        dp.set_recv_session(secret)
        for direction in (_fast.FILTER_NIC_INGRESS, _fast.FILTER_TUNNEL_INGRESS):
            dp.set_filter(direction, True, TABLES[0])
        host.setblocking(True)
        senders = [threading.Thread(target=send_lan, args=(host, FRAMES_EACH_WAY)),
                   threading.Thread(target=send_tunnel, args=(secret, address, FRAMES_EACH_WAY))]
        drain = threading.Event()

        def read_lan():                               # the frames written to the LAN, so its queue never fills
            host.settimeout(0.2)
            while not drain.is_set():
                try:
                    host.recv(65536)
                except OSError:
                    pass

        reader = threading.Thread(target=read_lan)
        for t in senders + [reader]:
            t.start()
        swaps, deadline = 0, time.monotonic() + RUN_S_MAX
        try:
            while any(t.is_alive() for t in senders) and swaps < SWAPS_MAX and time.monotonic() < deadline:
                swaps += 1
                for direction in (_fast.FILTER_NIC_INGRESS, _fast.FILTER_TUNNEL_INGRESS):
                    dp.set_filter(direction, True, TABLES[swaps % 2])
            for t in senders:
                t.join(RUN_S_MAX)

            seen = [-1]

            def settled():                            # the UDP socket may have overflowed: what arrived is what counts
                c = dp.counters()
                if c["tx"]["frames"] + c["tx"]["filter"] != FRAMES_EACH_WAY or c["rx"]["packets"] != seen[0]:
                    seen[0] = c["rx"]["packets"]
                    return False
                return c["rx"]["frames"] == seen[0]

            wait_until(settled, timeout=10, interval=0.05, what="every frame sent to be taken in")
        finally:
            drain.set()
            reader.join(5)
        c = dp.counters()
        print(f"{swaps} swaps of each table while {FRAMES_EACH_WAY} frames went LAN -> tunnel and "
              f"{c['rx']['packets']} of {FRAMES_EACH_WAY} reached the UDP socket")
        assert swaps >= 100, "the swaps did not overlap the traffic"
        out = counts(dp, _fast.FILTER_NIC_INGRESS)
        assert out == {DENIED: FRAMES_EACH_WAY // 2, ALLOWED: FRAMES_EACH_WAY // 2}
        assert c["tx"]["filter"] == FRAMES_EACH_WAY // 2 and c["tx"]["frames"] == FRAMES_EACH_WAY // 2
        inb = counts(dp, _fast.FILTER_TUNNEL_INGRESS)
        assert inb[DENIED] + inb[ALLOWED] == c["rx"]["frames"] > 0
        assert c["rx"]["filter"] == inb[DENIED]
        for direction in (_fast.FILTER_NIC_INGRESS, _fast.FILTER_TUNNEL_INGRESS):
            stats = dp.filter_stats(direction)
            assert stats["default"] == 0
            assert sum(stats["ethertypes"].values()) == sum(stats["rules"])     # the EtherType counts moved too
