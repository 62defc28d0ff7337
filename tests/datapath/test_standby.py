"""A standby Engine (etun/ha.py) carries nothing and counts it; once active, traffic flows.

A standby Engine (etun/ha.py) carries nothing: frames from the LAN and sealed packets from the peer are
dropped and counted as `standby`, none leaves on UDP or to the LAN; once active, the same traffic flows.

The LAN is one end of an AF_UNIX datagram pair read as a TAP device is (tests/pumps.py); the peer is
a UDP socket on loopback that seals with the engine's receive secret. The daemon's standby also
filters its packet sockets (etun/lan.py) so the kernel queues nothing: this is the layer under it,
what the pumps do with whatever still arrives.
"""

import os

import pytest

from etun import _fast
from tests.poll import wait_until
from tests.pumps import paired_lan

PLAIN = bytes(10) + bytes.fromhex("02aaaaaaaaaa02bbbbbbbbbb88b5") + bytes(100)   # vnet header, then the frame
FRAME = bytes.fromhex("02bbbbbbbbbb02cccccccccc88b5") + bytes(100)                # from the far side
FRAMES = 20
QUIET_S = 0.3                    # how long the test listens for what must not come


def nothing_comes(sock) -> bool:
    sock.settimeout(QUIET_S)
    try:
        sock.recv(65535)
    except TimeoutError:
        return True
    return False


@pytest.fixture
def standby_engine():
    """A paired-LAN Engine with sessions both ways (the far side seals with `far`), standby."""
    secret = os.urandom(32)
    with paired_lan() as (host, peer, dp, engine, address):
        dp.set_recv_session(secret)
        far = _fast.Datapath(_fast.LEVEL_ENCRYPT)
        far.set_send_session(secret)
        engine.standby = True
        yield host, peer, dp, engine, address, far


def test_a_standby_drops_and_counts_every_frame_and_packet_and_sends_nothing_anywhere(standby_engine):
    host, peer, dp, engine, address, far = standby_engine
    for _ in range(FRAMES):
        host.send(PLAIN)
        for datagram in far.seal(FRAME):
            peer.sendto(datagram, address)
    wait_until(lambda: (dp.counters()["tx"]["standby"], dp.counters()["rx"]["standby"]) == (FRAMES, FRAMES),
               timeout=5, interval=0.01, what=f"{FRAMES} frames each way dropped as standby, now "
               f"{dp.counters()['tx']['standby']}, {dp.counters()['rx']['standby']}")
    assert nothing_comes(peer), "a standby sent a datagram to the peer"
    assert nothing_comes(host), "a standby wrote a frame to the LAN"
    counters = dp.counters()
    # Inbound "frames" counts frames opened (docs/STATUS.md), which these were, before the drop.
    assert (counters["tx"]["frames"], counters["rx"]["frames"]) == (0, FRAMES), counters
    segment = dp.segment_counters(0)
    assert segment["tx"]["frames"] == segment["rx"]["frames"] == 0, segment
    assert dp.bridge_macs() == []                    # a standby learns no MAC either


def test_the_same_traffic_flows_both_ways_once_the_engine_is_active_again(standby_engine):
    host, peer, dp, engine, address, far = standby_engine
    engine.standby = False
    host.send(PLAIN)
    peer.settimeout(2)
    assert len(peer.recv(65535)) > len(PLAIN)        # sealed, to the peer
    for datagram in far.seal(FRAME):
        peer.sendto(datagram, address)
    host.settimeout(2)
    assert host.recv(65535)[10:] == FRAME            # opened, to the LAN after its vnet header
    counters = dp.counters()
    assert counters["tx"]["standby"] == counters["rx"]["standby"] == 0, counters
