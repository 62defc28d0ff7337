"""The rx pump's admission gate (admit.pxi) under floods of handshake and probe packets.

The rx pump's admission gate (admit.pxi) over real sockets, without root: what a flood of
handshake and probe packets gets from etun, and that the peer's own still get through.

    test sockets on 127.0.0.1 --UDP--> [engine: rx pump] --control queue--> pop_control()
"""

import contextlib
import os
import socket
import time

import pytest

from etun import _fast
from tests.material import random_secrets
from tests.poll import wait_until
from tests.probes import seal_probe
from tests.pumps import start_pumps, stop_pumps

ENCRYPT = _fast.LEVEL_ENCRYPT


@contextlib.contextmanager
def engine(secrets):
    """An Engine whose UDP socket listens on loopback; yields (datapath, engine, its address).
    Its LAN is an AF_UNIX datagram pair nothing writes to."""
    lan, host = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    lan.setblocking(False)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)    # floods in a burst: no overflow
    udp.bind(("127.0.0.1", 0))
    dp = _fast.Datapath(ENCRYPT)
    secrets.install(dp)
    e = _fast.Engine(dp, lan.fileno(), _fast.LAN_TAP, udp.fileno(), udp.getsockname()[1], False, False)
    pumps = start_pumps(e)
    try:
        yield dp, e, udp.getsockname()
    finally:
        stop_pumps(e, pumps)
        for s in (lan, host, udp):
            s.close()


def sender():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.2)
    return s


def queued(e, ptype=None) -> list:
    return [item for item in e.pop_control() if ptype is None or item[0] == ptype]


def drained(s) -> list[bytes]:
    out = []
    with contextlib.suppress(socket.timeout, BlockingIOError):
        while True:
            out.append(s.recv(2048))
    return out


def an_init(secrets, cookie=None) -> bytes:
    peer = _fast.Datapath(ENCRYPT)
    secrets.install(peer)
    return _fast.Handshake(peer).initiate(bytes(36), cookie=cookie)


def test_a_flood_of_initiations_is_answered_with_small_cookies_and_no_more_reach_the_control_plane(secrets):
    inits = [an_init(secrets) for _ in range(200)]   # a key holder's, each new
    with engine(secrets) as (dp, e, address):
        s = sender()
        for init in inits:
            s.sendto(init, address)
        wait_until(lambda: dp.counters()["rx"]["packets"] >= 200, timeout=5, interval=0.01,
                   what="200 initiations read")
        admitted = queued(e, _fast.TYPE_INIT)
        cookies = drained(s)
        assert 15 <= len(admitted) <= 25                     # HS_PER_SEC before "under load"
        assert dp.counters()["rx"]["under_load"] == 200 - len(admitted)
        assert len(cookies) == 200 - len(admitted)
        asked = {init[4:8] for init in inits[len(admitted):]}
        assert all(len(c) == _fast.COOKIE_LEN < _fast.INIT_LEN and c[4:8] in asked for c in cookies)
        assert dp.counters()["tx"]["control"] == len(cookies)


def test_one_recorded_initiation_replayed_costs_one_admission_and_no_budget(secrets):
    with engine(secrets) as (dp, e, address):
        s = sender()
        init = an_init(secrets)
        for _ in range(200):
            s.sendto(init, address)
        wait_until(lambda: dp.counters()["rx"]["packets"] >= 200, timeout=5, interval=0.01,
                   what="200 initiations read")
        assert len(queued(e, _fast.TYPE_INIT)) == 1
        assert dp.counters()["rx"]["replay"] == 199 and dp.counters()["rx"]["under_load"] == 0
        assert drained(s) == []                              # not under load: no cookie replies
        fresh = sender()
        fresh.sendto(an_init(secrets), address)               # a genuine initiation still gets in
        wait_until(lambda: queued(e, _fast.TYPE_INIT), timeout=5, interval=0.01, what="the genuine one")


def test_under_load_an_initiation_with_the_senders_cookie_gets_through_within_its_budget(secrets):
    with engine(secrets) as (dp, e, address):
        flood, genuine = sender(), sender()
        for _ in range(100):
            flood.sendto(an_init(secrets), address)
        wait_until(lambda: dp.counters()["rx"]["packets"] >= 100, timeout=5, interval=0.01, what="the flood")
        queued(e)
        peer = _fast.Datapath(ENCRYPT)
        secrets.install(peer)
        hs = _fast.Handshake(peer)
        genuine.sendto(hs.initiate(bytes(36)), address)
        cookie = hs.open_cookie(genuine.recv(2048))          # under load: a cookie comes back
        for _ in range(20):
            genuine.sendto(_fast.Handshake(peer).initiate(bytes(36), cookie=cookie), address)
        wait_until(lambda: dp.counters()["rx"]["packets"] >= 121, timeout=5, interval=0.01, what="20 more")
        assert len(queued(e, _fast.TYPE_INIT)) == 5           # SOURCE_BURST, then its budget
        assert dp.counters()["rx"]["rate_limit"] == 15
        # Another address cannot use that cookie: it is bound to address and port.
        thief = sender()
        thief.sendto(_fast.Handshake(peer).initiate(bytes(36), cookie=cookie), address)
        assert len(thief.recv(2048)) == _fast.COOKIE_LEN
        assert queued(e, _fast.TYPE_INIT) == []


def test_handshakes_under_another_key_file_are_dropped_silently_for_auth(secrets):
    other = random_secrets()
    with engine(secrets) as (dp, e, address):
        s = sender()
        for _ in range(50):
            s.sendto(an_init(other), address)
        wait_until(lambda: dp.counters()["rx"]["auth"] == 50, timeout=5, interval=0.01, what="50 refused")
        assert drained(s) == [] and queued(e) == []
        reason, _, source = dp.refused()
        assert reason == "auth" and source


@pytest.mark.parametrize("length", [_fast.INIT_LEN - 1, _fast.INIT_LEN + 1, 20, 1000])
def test_a_handshake_message_of_the_wrong_length_is_malformed(secrets, length):
    init = an_init(secrets)
    with engine(secrets) as (dp, e, address):
        sender().sendto((init * 10)[:length], address)
        wait_until(lambda: dp.counters()["rx"]["malformed"] == 1, timeout=5, interval=0.01, what="the drop")
        assert queued(e) == []


def test_only_an_answer_to_the_initiation_in_flight_reaches_the_control_plane(secrets):
    with engine(secrets) as (dp, e, address):
        peer = _fast.Datapath(ENCRYPT)
        secrets.install(peer)
        s = sender()
        stale = _fast.Handshake(peer)
        stale.respond(_fast.Handshake(dp).initiate(bytes(36)))      # an earlier initiation's answer
        old_answer = stale.reply(bytes(24))
        ours = _fast.Handshake(dp)
        responder = _fast.Handshake(peer)
        responder.respond(ours.initiate(bytes(36)))                  # the one in flight now
        for _ in range(30):
            s.sendto(old_answer, address)
        s.sendto(responder.reply(bytes(24)), address)
        wait_until(lambda: dp.counters()["rx"]["packets"] >= 31, timeout=5, interval=0.01, what="31 read")
        (item,) = queued(e, _fast.TYPE_RESP)
        assert item[1][4:8] == ours.id.to_bytes(4, "big")
        assert dp.counters()["rx"]["replay"] == 30


def test_forged_cookie_replies_to_our_initiation_cost_no_budget_and_the_genuine_one_gets_through(secrets):
    """One who saw our INIT knows its id; COOKIEs it forges with that id must not use up the
    budget the responder's real cookie reply needs."""
    with engine(secrets) as (dp, e, address), engine(secrets) as (peer_dp, peer_e, peer_address):
        s = sender()
        for _ in range(60):                                          # the responder is under load
            s.sendto(an_init(secrets), peer_address)
        wait_until(lambda: peer_dp.counters()["rx"]["under_load"] >= 30, timeout=5, interval=0.01,
                   what="the responder under load")
        drained(s)
        ours = _fast.Handshake(dp)
        s.sendto(ours.initiate(bytes(36)), peer_address)
        genuine = s.recv(2048)                                       # its cookie reply, to us
        assert len(genuine) == _fast.COOKIE_LEN and genuine[4:8] == ours.id.to_bytes(4, "big")
        forger = sender()
        for _ in range(50):
            forger.sendto(genuine[:8] + os.urandom(_fast.COOKIE_LEN - 8), address)
        forger.sendto(genuine, address)
        wait_until(lambda: dp.counters()["rx"]["packets"] >= 51, timeout=5, interval=0.01, what="51 read")
        (item,) = queued(e, _fast.TYPE_COOKIE)
        assert item[1] == genuine
        assert dp.counters()["rx"]["auth"] == 50 and dp.counters()["rx"]["rate_limit"] == 0


def test_garbage_probes_cannot_crowd_out_a_genuine_verify_peer(secrets):
    other = _fast.Datapath(ENCRYPT)
    random_secrets().install(other)
    with engine(secrets) as (dp, e, address):
        flood = sender()
        garbage = _fast.seal_probe(other, _fast.TYPE_PROBE, bytes(200))   # another key
        for _ in range(300):
            flood.sendto(garbage, address)
        genuine = sender()
        mine = _fast.Datapath(ENCRYPT)
        secrets.install(mine)
        for _ in range(3):
            genuine.sendto(seal_probe(mine), address)
        wait_until(lambda: dp.counters()["rx"]["packets"] >= 303, timeout=5, interval=0.01, what="303 read")
        items = queued(e, _fast.TYPE_PROBE)
        authentic = [i for i in items if _fast.read_probe(dp, i[1])[3]]
        assert len(authentic) == 3
        assert len(items) - len(authentic) <= 10                    # FOREIGN_PER_SEC


def test_a_recorded_probe_replayed_from_many_addresses_is_admitted_once_and_spends_no_budget(secrets):
    mine = _fast.Datapath(ENCRYPT)
    secrets.install(mine)
    recorded = seal_probe(mine)
    old = seal_probe(mine, time_ms=int(time.time() * 1000) - 301_000)          # older than 5 minutes
    with engine(secrets) as (dp, e, address):
        spoofers = [sender() for _ in range(8)]
        for k in range(80):
            spoofers[k % 8].sendto(recorded, address)
        spoofers[0].sendto(old, address)
        wait_until(lambda: dp.counters()["rx"]["packets"] >= 81, timeout=5, interval=0.01, what="81 read")
        assert len(queued(e, _fast.TYPE_PROBE)) == 1
        assert dp.counters()["rx"]["replay"] == 80 and dp.counters()["rx"]["rate_limit"] == 0
        genuine = sender()
        for _ in range(3):
            genuine.sendto(seal_probe(mine), address)
        wait_until(lambda: dp.counters()["rx"]["packets"] >= 84, timeout=5, interval=0.01, what="84 read")
        assert len(queued(e, _fast.TYPE_PROBE)) == 3
