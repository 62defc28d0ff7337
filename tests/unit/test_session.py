"""The HELLO exchange between two sites, message by message, with recording stand-ins for the datapath."""

import os

from etun import _fast, keys
from etun.session import Hello, Session

ENCRYPT = _fast.LEVELS["encrypt"]


class RecordingDatapath:
    """Remembers which session secrets the session installed, in order."""

    def __init__(self):
        self.send, self.recv, self.caught_up = [], [], []
        self.send_index = None

    def set_send_session(self, secret):
        self.send.append(secret)
        self.send_index = 0

    def set_recv_session(self, secret):
        self.recv.append(secret)

    def set_peer_hello_sender(self, sender):
        self.peer_sender = sender

    def catch_up_recv(self, index):
        self.caught_up.append(index)


class Site:
    def __init__(self, name, prk, level=ENCRYPT):
        self.dp = RecordingDatapath()
        ctl = keys.control_key(prk) if prk else None
        self.s = Session(level, self.dp, name, prk, ctl, now_ms=0, keepalive_ms=2000)


def pair(level=ENCRYPT):
    prk = keys.derive_prk(os.urandom(keys.MATERIAL_LEN)) if level != 0 else None
    return Site("a", prk, level), Site("b", prk, level), prk


def exchange(src, dst, now=0):
    """src sends a HELLO; dst handles it; returns dst's outcome."""
    return dst.s.receive(src.s.hello(now), now)


def settle(a, b, limit=8):
    """Let the two sites talk, answering when asked, until both are settled."""
    out = exchange(a, b)
    turn = (b, a)
    for _ in range(limit):
        if a.s.settled and b.s.settled:
            return
        if not out.answer:
            out = exchange(turn[1], turn[0])
            continue
        out = exchange(*turn)
        turn = turn[::-1]
    assert a.s.settled and b.s.settled


def test_two_fresh_sites_settle_in_four_hellos_and_agree_on_keys():
    a, b, prk = pair()
    out = exchange(a, b)
    assert out.answer and b.s.pending is not None
    out = exchange(b, a)
    assert "receive session accepted" in out.events and out.answer
    out = exchange(a, b)
    assert "receive session accepted" in out.events and "send session confirmed" in out.events
    out = exchange(b, a)
    assert "send session confirmed" in out.events and not out.answer
    assert a.s.settled and b.s.settled
    # Each direction's sender and receiver derived the same secret; the two directions differ.
    assert a.dp.send[-1] == b.dp.recv[-1]
    assert b.dp.send[-1] == a.dp.recv[-1]
    assert a.dp.send[-1] != b.dp.send[-1]


def test_settled_sites_keep_quiet_on_keepalives():
    a, b, _ = pair()
    settle(a, b)
    for _ in range(3):
        assert not exchange(a, b).answer
        assert not exchange(b, a).answer
    assert len(a.dp.send) == len(a.dp.recv) == 1


def test_a_restarted_peer_gets_new_sessions_both_ways():
    a, b, prk = pair()
    settle(a, b)
    b2 = Site("b", prk)
    settle(b2, a)
    assert a.dp.send[-1] == b2.dp.recv[-1] and b2.dp.send[-1] == a.dp.recv[-1]
    assert a.dp.send[-1] != a.dp.send[0]


def test_a_replayed_hello_is_stale_and_changes_nothing():
    a, b, _ = pair()
    old = a.s.hello(0)
    settle(a, b)
    before = (b.s.recv, b.s.send, b.s.challenge)
    out = b.s.receive(old, 10)
    assert out.drop == "replay" and not out.roam
    assert (b.s.recv, b.s.send, b.s.challenge) == before


def test_a_hello_from_an_earlier_run_of_the_peer_cannot_move_it():
    a, b, prk = pair()
    recorded = a.s.hello(0)                 # run 1 of site A, recorded by an attacker
    settle(a, b)
    a2 = Site("a", prk)                      # site A restarts
    settle(a2, b)
    out = b.s.receive(recorded, 50)          # fresh counter for that old sender nonce...
    assert not out.roam                      # ...but neither its current sender nor an echo


def test_a_hello_under_another_key_is_refused_as_auth():
    a, _, _ = pair()
    stranger, _, _ = pair()
    out = a.s.receive(stranger.s.hello(0), 0)
    assert out.drop == "auth" and not out.answer


def test_answers_are_rate_limited():
    a, b, _ = pair()
    answers = sum(exchange(a, b, now=0).answer for _ in range(50))
    assert answers <= 10


def test_round_trip_time_is_measured_from_the_echo():
    a, b, _ = pair()
    settle(a, b)
    exchange(a, b)
    exchange(b, a)
    assert a.s.rtt_ms is not None and 0 <= a.s.rtt_ms < 1000


def test_hello_layout_is_132_bytes_and_round_trips():
    h = Hello(b"s" * 16, b"c" * 16, b"p" * 16, b"x" * 16, b"y" * 16, 1, 2, 3, 1, 70000, "berlin")
    raw = h.encode()
    assert len(raw) == 132
    assert Hello.decode(raw) == h


def test_hello_encodes_as_the_independent_reference_does():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import reference

    h = Hello(b"s" * 16, b"c" * 16, b"p" * 16, b"x" * 16, b"y" * 16, 1, 2, 3, 1, 70000, "berlin")
    assert h.encode() == reference.encode_hello(
        sender=b"s" * 16, challenge=b"c" * 16, propose=b"p" * 16, acc_sender=b"x" * 16, acc_chal=b"y" * 16,
        time_us=1, echo_us=2, held_us=3, flags=1, send_index=70000, site="berlin")


def test_the_receiver_is_told_the_peers_send_index_and_catches_up():
    a, b, _ = pair()
    settle(a, b)
    a.dp.send_index = 500                    # A rotated many times while nothing reached B
    exchange(a, b)
    assert b.dp.caught_up[-1] == 500


def test_level_none_settles_without_keys():
    a, b, _ = pair(level=0)
    settle(a, b)
    assert a.dp.send == [b""] and b.dp.recv == [b""]


def test_our_own_hello_reflected_back_is_refused_and_moves_nothing():
    a, b, _ = pair()
    settle(a, b)
    before = (a.s.recv, a.s.send, a.s.pending, a.s.challenge)
    out = a.s.receive(a.s.hello(0), 0)
    assert out.drop == "replay" and not out.roam and not out.answer
    assert (a.s.recv, a.s.send, a.s.pending, a.s.challenge) == before


def test_a_stale_proposal_is_dropped_once_the_peer_accepts_what_we_send():
    a, b, prk = pair()
    settle(a, b)
    b2 = Site("b", prk)                       # B restarts...
    old_run = a.s.hello(0)                    # ...while a HELLO of A's is still on its way
    settle(b2, a)
    b2.s.receive(old_run, 0)                  # arrives late: B2 proposes to a challenge A dropped
    for _ in range(4):
        exchange(a, b2)
        exchange(b2, a)
    assert a.s.settled and b2.s.settled


def test_a_proposal_for_a_new_session_announces_index_0():
    a, b, _ = pair()
    settle(a, b)
    a.dp.send_index = 720                     # A rotated for a day
    a.s.pending = b.s.challenge               # and now proposes a new session
    _, _, payload = _fast.open_control(ENCRYPT, a.s.control_key, a.s.hello(0))
    assert Hello.decode(payload).send_index == 0


def test_the_hello_that_opens_a_session_does_not_move_its_key_index():
    a, b, prk = pair()
    settle(a, b)
    a.dp.send_index = 720
    b2 = Site("b", prk)                        # B restarts: A must propose a new session to B2
    settle(b2, a)
    assert b2.dp.caught_up == [] or max(b2.dp.caught_up) == 0
