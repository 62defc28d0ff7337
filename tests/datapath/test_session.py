"""Two sites' session control planes over real datapaths: handshakes, and every attack on them.

Two sites' session control planes (etun/session.py) over real datapaths, in one process: the
handshake, key confirmation, and every way a recorded or reflected message must fail.

The network is a list of datagrams in flight; the test delivers them, in order, or records,
drops, reflects or replays them as the case needs. Times are the test's own (milliseconds).
"""

import os
import socket

import pytest

from etun import _fast, keys
from etun.session import REJECT_AFTER_MS, RETRY_LIVE_MS, Session
from etun.transport import pack_sockaddr
from tests.material import random_secrets

ENCRYPT = _fast.LEVEL_ENCRYPT


class Wall:
    """A wall clock the test moves (timestamps of initiations)."""

    def __init__(self):
        self.ns = 1_800_000_000 * 10**9

    def __call__(self) -> int:
        return self.ns


class Site:
    def __init__(self, name: str, secrets: keys.Secrets, wall: Wall, level: int = ENCRYPT, now: int = 0,
                 segments: tuple[str, ...] = ("lan",), macs: list | None = None):
        self.name = name
        self.secrets = secrets
        self.dp = _fast.Datapath(level)
        self.dp.set_segments([(0, (k + 1,), False) for k in range(len(segments))])
        secrets.install(self.dp)
        self.s = Session(level, self.dp, name, now, keepalive_ms=2000, rekey_ms=10_000, wall_ns=wall,
                         segments=segments, local_macs=lambda: macs or [])
        self.drops: list[str] = []
        self.far_macs: list = []
        self.events: list[str] = []

    def deliver(self, datagram: bytes, now: int) -> list[bytes]:
        """Hand one datagram to this site as its daemon would; the datagrams it answers with."""
        _, _, ptype = _fast.packet_type(datagram)
        if ptype == _fast.TYPE_INIT:
            outs = [self.s.receive_init(datagram, now)]
        elif ptype == _fast.TYPE_RESP:
            outs = [self.s.receive_resp(datagram, now)]
        elif ptype == _fast.TYPE_COOKIE:
            outs = [self.s.receive_cookie(datagram, now)]
        else:
            outs = [self.s.receive_session(payload, self.dp.last_session, now)
                    for t, payload in self.dp.open(datagram) if t == _fast.TYPE_SESSION]
        replies = []
        for out in outs:
            if out.drop:
                self.drops.append(out.drop)
            self.events += out.events
            self.far_macs += out.macs
            replies += out.replies
        return replies


def pair():
    wall, sec = Wall(), random_secrets()
    return Site("a", sec, wall), Site("b", sec, wall), wall


def run(a: Site, b: Site, now: int, first: list[tuple[Site, bytes]] | None = None, steps: int = 40,
        tap=None, lose=None) -> None:
    """Tick both sites at `now` and deliver everything, as their daemons' loops would, until
    a tick sends nothing more; a datagram for which lose(to, datagram) holds is lost."""
    flight = list(first or [])
    for _ in range(steps):
        if not flight:
            for site, other in ((a, b), (b, a)):
                flight += [(other, d) for d in site.s.tick(now)]
            if not flight:
                return
        to, datagram = flight.pop(0)
        if tap is not None:
            tap(to, datagram)
        if lose is not None and lose(to, datagram):
            continue
        other = b if to is a else a
        flight += [(other, d) for d in to.deliver(datagram, now)]
    raise AssertionError("the sites keep talking")


def frame_crosses(src: Site, dst: Site) -> bool:
    frame = os.urandom(1000)
    got = [f for d in src.dp.seal(frame) for f in dst.dp.open(d)]
    return got == [(_fast.TYPE_FRAME, frame)]


def test_two_fresh_sites_set_up_one_session_in_one_round_trip_and_carry_frames_both_ways():
    a, b, _ = pair()
    run(a, b, 0)
    assert a.s.established and b.s.established
    assert {a.s.role, b.s.role} == {"initiator", "responder"}     # one handshake won the tie
    assert a.s.handshakes == b.s.handshakes == 1
    assert frame_crosses(a, b) and frame_crosses(b, a)
    assert a.s.peer_site == "b" and b.s.peer_site == "a"


def test_the_responder_sends_nothing_under_a_session_until_the_initiator_confirms_it():
    a, b, _ = pair()
    init = a.s.initiate(0)
    (resp,) = b.deliver(init, 0)
    assert b.dp.sessions()["next"] is not None and b.dp.sessions()["current"] is None
    assert b.dp.send_index is None                   # nothing to send under yet
    confirm = a.deliver(resp, 0)                     # a: current at once, confirms it
    assert a.dp.sessions()["current"] is not None
    for d in confirm:
        b.deliver(d, 0)
    b.s.tick(0)
    assert b.dp.sessions()["current"] is not None and b.dp.send_index is not None
    assert frame_crosses(b, a)


def test_a_replayed_initiation_is_stale_and_costs_the_responder_no_session():
    a, b, wall = pair()
    recorded = []
    run(a, b, 0, tap=lambda to, d: recorded.append(d) if _fast.packet_type(d)[2] == _fast.TYPE_INIT else None)
    assert recorded
    before = b.dp.sessions()
    b.drops.clear()
    for init in recorded * 3:
        assert b.deliver(init, 10) == []
    assert b.drops.count("replay") == 3 * len(recorded)
    assert b.dp.sessions()["current"] == before["current"] and b.dp.sessions()["next"] is None
    assert frame_crosses(a, b) and frame_crosses(b, a)


def test_after_a_restart_a_replayed_initiation_installs_only_a_session_nobody_can_confirm():
    a, b, wall = pair()
    recorded = []
    run(a, b, 0, tap=lambda to, d: recorded.append(d) if _fast.packet_type(d)[2] == _fast.TYPE_INIT and to is b
        else None)
    b2 = Site("b", b.secrets, wall)                  # b restarts: it remembers no timestamp
    for init in dict.fromkeys(recorded):             # once each (a tie's winner sends its INIT twice)
        (resp,) = b2.deliver(init, 0)
    assert b2.dp.sessions()["next"] is not None and b2.dp.sessions()["current"] is None
    # Nobody holds the initiator's ephemeral key: no packet can confirm that session, and
    # the genuine site's next initiation (a later timestamp) replaces it.
    wall.ns += 10**9
    run(a, b2, 1000, first=[(b2, a.s.initiate(1000))])
    assert b2.s.established and frame_crosses(a, b2) and frame_crosses(b2, a)


def test_a_site_refuses_its_own_initiation_reflected_back_to_it():
    a, _, _ = pair()
    init = a.s.initiate(0)
    assert a.deliver(init, 0) == []
    assert a.drops == ["replay"] and a.dp.sessions()["next"] is None


def test_an_answer_to_another_initiation_is_refused_and_leaves_ours_waiting():
    a, b, wall = pair()
    c = Site("c", a.secrets, wall)
    (resp,) = a.deliver(b.s.initiate(0), 0)          # an answer to b's initiation ...
    c.s.initiate(0)
    assert c.deliver(resp, 0) == []                  # ... is no answer to c's
    assert c.drops == ["malformed"] and c.dp.sessions()["current"] is None


def test_when_both_initiate_at_once_exactly_one_handshake_completes_and_no_initiation_is_spent():
    a, b, _ = pair()
    ia, ib = a.s.initiate(0), b.s.initiate(0)
    seen = []
    run(a, b, 0, first=[(b, ia), (a, ib)], tap=lambda to, d: seen.append(_fast.TYPE_NAMES[_fast.packet_type(d)[2]]))
    assert a.s.established and b.s.established
    assert a.s.handshakes == b.s.handshakes == 1
    winner = a if a.s.instance < b.s.instance else b
    assert winner.s.role == "initiator"
    # The winner sends its own INIT again (the loser drops the copy as a replay) and the
    # loser's answer to the first completes it: one RESP, no second handshake.
    assert seen.count("RESP") == 1 and seen.count("INIT") == 3
    assert sorted(a.drops + b.drops) == ["replay"]


@pytest.mark.parametrize("smaller", ["restarted", "other"])
def test_a_peer_restarted_with_its_clock_an_hour_behind_gets_a_session_within_seconds(smaller):
    a, b, wall = pair()
    run(a, b, 0)
    behind = Wall()
    behind.ns = wall.ns - 3600 * 10**9
    a2 = Site("a", a.secrets, behind)               # no real-time clock: it boots an hour back
    # Whichever instance wins crossing initiations, the restarted site's are stale to b.
    a2.s.instance, b.s.instance = (bytes(16), b"\xff" * 16) if smaller == "restarted" else (b"\xff" * 16, bytes(16))
    for now in range(1000, 10_000, 100):
        run(a2, b, now)
        if a2.s.established and b.s.established:
            break
    assert now <= 4000, now
    assert frame_crosses(a2, b) and frame_crosses(b, a2)
    assert "replay" in b.drops


def test_replayed_stale_initiations_of_past_instances_change_no_session():
    a, b, wall = pair()
    past = [Site("a", a.secrets, wall).s.initiate(0) for _ in range(5)]   # earlier runs of a, unanswered
    wall.ns += 10**9
    run(a, b, 1000)
    handshakes = (a.s.handshakes, b.s.handshakes)
    b.drops.clear()                                           # (a tie's copy of an INIT, say)
    for now in range(2000, 32_000, 500):                      # 30 s of replays, two rounds a second
        for init in past:
            assert b.deliver(init, now) == []
        run(a, b, now)
    # b asked a to answer under the session, a did: replays, not a restart. No new handshake.
    assert (a.s.handshakes, b.s.handshakes) == handshakes
    assert b.drops.count("replay") == 5 * 60
    assert frame_crosses(a, b) and frame_crosses(b, a)


def test_a_different_key_file_never_sets_up_a_session():
    wall = Wall()
    a, b = Site("a", random_secrets(), wall), Site("b", random_secrets(), wall)
    for now in range(0, 5000, 1000):
        run(a, b, now)
    assert not a.s.established and not b.s.established
    assert set(a.drops + b.drops) == {"auth"}


# The forward-secrecy promise (docs/SECURITY.md, PROTOCOL.md §5.4), written out rather than
# imported: a test that read REKEY_AFTER_MS would follow the constant if it were ever raised.
RENEW_MS = 120_000              # the initiator of a session starts the next one after this
TICK_MS = 1_000                 # how often the sites tick in these tests


def handshake_gaps(a: Site, b: Site, until_ms: int, lose=None) -> list[int]:
    """Tick both sites every TICK_MS from a first handshake at 0 until `until_ms`, a frame
    crossing each way at every tick; the times between handshakes, and from the last one to
    `until_ms` (a renewal that never came counts too)."""
    run(a, b, 0)
    assert a.s.handshakes == b.s.handshakes == 1
    done = [0]
    for now in range(TICK_MS, until_ms + 1, TICK_MS):
        a.s.wall_ns.ns += TICK_MS * 10**6
        before = a.s.handshakes
        run(a, b, now, lose=lose)
        assert a.s.handshakes == b.s.handshakes, now
        if a.s.handshakes > before:
            done.append(now)
        assert frame_crosses(a, b) and frame_crosses(b, a), now
    return [later - earlier for earlier, later in zip(done, done[1:] + [until_ms], strict=True)]


def test_sessions_are_renewed_by_their_initiator_and_traffic_never_stops():
    a, b, _ = pair()
    gaps = handshake_gaps(a, b, 600_000)
    # Nothing lost: the initiator renews on the first tick 2 minutes after the handshake.
    assert max(gaps) <= RENEW_MS, gaps
    assert a.s.handshakes >= 600_000 // RENEW_MS


def test_a_renewal_whose_first_initiation_is_lost_comes_after_one_retry():
    a, b, _ = pair()
    lost = set()

    def lose_first_renewal(to: Site, datagram: bytes) -> bool:
        # The first INIT of each renewal (one per handshake done so far) never arrives.
        if _fast.packet_type(datagram)[2] == _fast.TYPE_INIT and a.s.handshakes not in lost:
            lost.add(a.s.handshakes)
            return True
        return False

    gaps = handshake_gaps(a, b, 600_000, lose=lose_first_renewal)
    assert len(lost) >= 4
    # An initiation goes again RETRY_LIVE_MS later while the session carries traffic.
    assert max(gaps) <= RENEW_MS + RETRY_LIVE_MS, gaps
    assert all(gap > RENEW_MS for gap in gaps[:-1]), gaps     # the loss did delay each renewal


def test_when_no_renewal_of_the_initiator_arrives_the_responder_renews_before_the_keys_expire():
    a, b, _ = pair()
    first = {}

    def lose_initiations_to_the_first_responder(to: Site, datagram: bytes) -> bool:
        first.setdefault("responder", a if a.s.role == "responder" else b)
        return _fast.packet_type(datagram)[2] == _fast.TYPE_INIT and to is first["responder"]

    gaps = handshake_gaps(a, b, 600_000, lose=lose_initiations_to_the_first_responder)
    # The responder initiates at 135 s; the initiator, still trying, crosses it and wins the
    # tie (its instance is the smaller: it won the first handshake so), its copy is lost too,
    # and it yields at the next crossing, one retry later. From then on the former responder
    # initiates, and its initiations arrive.
    assert gaps[0] <= 135_000 + RETRY_LIVE_MS < REJECT_AFTER_MS, gaps
    assert max(gaps[1:]) <= RENEW_MS, gaps


def test_the_send_side_moves_one_key_index_every_rekey_and_the_peer_follows():
    a, b, _ = pair()
    run(a, b, 0)
    for now in range(1000, 35_000, 1000):
        run(a, b, now)
    assert a.dp.send_index == 3 and b.dp.recv_index == 3
    assert frame_crosses(a, b)


def test_a_session_nobody_renews_expires_and_its_keys_are_gone():
    a, b, _ = pair()
    run(a, b, 0)
    a.s.tick(REJECT_AFTER_MS + 1)                   # b is gone: nothing answers a any more
    assert a.dp.sessions()["current"] is None and a.dp.send_index is None


def test_under_load_an_initiation_is_answered_with_a_cookie_and_the_next_one_carries_it():
    a, b, _ = pair()
    init = a.s.initiate(0)
    out = a.deliver(cookie_for(b, init), 0)          # b's pump answered with a cookie
    (again,) = out
    assert _fast.packet_type(again)[2] == _fast.TYPE_INIT and again[-16:] != bytes(16)   # mac2 set
    assert _fast.mac2_ok_for(b.dp, again, pack_sockaddr(socket.AF_INET, "198.19.1.1", 5555))
    assert not _fast.mac2_ok_for(b.dp, again, pack_sockaddr(socket.AF_INET, "198.19.1.1", 5556))


def cookie_for(responder: Site, init: bytes) -> bytes:
    """The COOKIE the responder's rx pump would send back under load (admit.pxi)."""
    return _fast.cookie_reply_for(responder.dp, init, pack_sockaddr(socket.AF_INET, "198.19.1.1", 5555))


def test_each_site_learns_the_peers_segments_in_the_first_round_trip_and_maps_them_by_name():
    wall, sec = Wall(), random_secrets()
    a = Site("a", sec, wall, segments=("office", "voice", "guest"))
    b = Site("b", sec, wall, segments=("voice", "office", "lab"))
    assert _fast.segment_map(a.dp) is None
    run(a, b, 0)
    # a's office (id 0) is b's id 1, voice (1) is b's 0; guest goes nowhere.
    assert _fast.segment_map(a.dp) == bytes([1, 0, _fast.SEGMENT_NONE])
    assert _fast.segment_map(b.dp) == bytes([1, 0, _fast.SEGMENT_NONE])
    assert a.s.segments_only_here() == ["guest"] and a.s.segments_only_there() == ["lab"]
    assert any("segments differ from the peer's: guest only here; lab only at the peer" in e for e in a.events)


def test_a_restarted_peer_gets_no_frames_until_it_names_its_segments_again_a_rekey_loses_none():
    wall, sec = Wall(), random_secrets()
    a = Site("a", sec, wall, segments=("office", "voice"))
    b = Site("b", sec, wall, segments=("office", "voice"))
    run(a, b, 0)
    assert _fast.segment_map(a.dp) == bytes([0, 1])
    # A new handshake with the same instance (a renewal) keeps the map from its first packet on.
    a.s.prompt = True
    seen = []
    run(a, b, 1000, tap=lambda to, d: seen.append(_fast.segment_map(a.dp)))
    assert a.s.handshakes == 2 and set(seen) == {bytes([0, 1])}
    # b restarts with its segments in another order: until it says so, a sends nothing.
    b2 = Site("b", sec, wall, segments=("voice", "office"))
    wall.ns += 10**9
    init = b2.s.initiate(2000)
    (resp,) = a.deliver(init, 2000)
    for d in b2.deliver(resp, 2000):
        a.deliver(d, 2000)                       # b2's confirmation carries its segments
    a.s.tick(2000)
    assert _fast.segment_map(a.dp) == bytes([1, 0])
    # A message of b's old instance still in flight opens under the session a keeps for a grace
    # period, but the segments it names are the old layout's: the map stays b2's.
    for d in b.s.status_message(2000, answer=False):
        a.deliver(d, 2500)
    assert a.s.last_rx_ms == 2500, "the old instance's message did not open: the check proves nothing"
    assert _fast.segment_map(a.dp) == bytes([1, 0])


def test_a_new_active_gateway_gets_the_far_sides_macs_in_its_segments_within_the_handshake():
    wall, sec = Wall(), random_secrets()
    far = [(1, bytes([2, 0, 0, 0, 1, k % 256])) for k in range(100)] + [(0, bytes([2, 0, 0, 0, 2, 1]))]
    a = Site("a", sec, wall, segments=("office", "voice"))
    b = Site("b", sec, wall, segments=("voice", "office", "lab"), macs=far + [(2, bytes([2, 0, 0, 0, 3, 1]))])
    a.s.stand_down()
    assert a.s.tick(0) == []                                 # a standby says nothing
    a.s.takeover(0)
    run(a, b, 0)
    assert a.s.established and not a.s.want_macs
    # b's voice (its id 0) is a's id 1, b's office (1) is a's 0; b's lab has no segment here.
    expected = [(0, mac) for seg, mac in far if seg == 1] + [(1, mac) for seg, mac in far if seg == 0]
    assert sorted(a.far_macs) == sorted(expected)
    assert b.far_macs == []                                  # b asked for nothing


def test_mac_answers_nobody_asked_for_are_ignored_and_each_mac_is_announced_once():
    wall, sec = Wall(), random_secrets()
    macs = [(0, bytes([2, 0, 0, 0, 1, 1])), (0, bytes([1, 0, 0x5E, 0, 0, 1])), (0, bytes(6))]
    a = Site("a", sec, wall)
    b = Site("b", sec, wall, macs=macs)
    run(a, b, 0)
    # b answers as if asked, unasked: a takes nothing.
    for d in b.s.mac_messages(100):
        a.deliver(d, 100)
    assert a.far_macs == []
    a.s.takeover(1000)
    run(a, b, 1000)
    assert a.far_macs == [(0, bytes([2, 0, 0, 0, 1, 1]))]       # no group MAC, no zero MAC
    for d in b.s.mac_messages(1100):                             # the same answer again: nothing new
        a.deliver(d, 1100)
    assert a.far_macs == [(0, bytes([2, 0, 0, 0, 1, 1]))]
    a.s.want_macs = True                                          # asking again and again: b answers
    answered = [bool(b.deliver(d, 9000)) for _ in range(3) for d in a.s.status_message(9000, answer=False)]
    assert answered == [True, True, False]                        # twice at once, then once in 2 s


def test_a_peer_with_no_macs_still_answers_so_the_asker_stops_asking():
    wall, sec = Wall(), random_secrets()
    a, b = Site("a", sec, wall), Site("b", sec, wall)
    a.s.takeover(0)
    run(a, b, 0)
    assert a.s.established and not a.s.want_macs and a.far_macs == []
    assert a.s.macs_asked_ms == 0


def test_a_session_the_peer_confirmed_is_followed_even_when_a_newer_initiation_was_answered_before_the_tick():
    # Found by fuzz/fuzz_handshake.py: the rx pump switches to a session we answered as soon as
    # the peer confirms it, between two ticks of the control plane. A newer initiation answered
    # before the tick used to make the control plane lose track of that session: it kept the
    # replaced one as current, and would have dropped the live one when the old one expired.
    a, b, wall = pair()
    run(a, b, 0)
    wall.ns += 10**9
    (resp,) = a.deliver(b.s.initiate(1000), 1000)     # a answers b: a's next
    confirmation = b.deliver(resp, 1000)               # b takes it at once and confirms it
    for d in confirmation:
        a.deliver(d, 1000)                             # a's datapath: that session is current
    confirmed = a.dp.sessions()["current"][0]
    assert confirmed == a.s.answered[0] != a.s.current_id
    wall.ns += 10**9
    (later,) = a.deliver(b.s.initiate(1100), 1100)    # b initiates again before a ticks
    a.s.tick(1100)
    assert a.s.current_id == confirmed == a.dp.sessions()["current"][0]
    assert a.s.role == "responder" and a.s.established
    # The newer answer still waits in next; b's answer to it completes it as usual.
    for d in b.deliver(later, 1200):
        a.deliver(d, 1200)
    a.s.tick(1200)
    assert a.s.current_id == a.dp.sessions()["current"][0] != confirmed
    assert frame_crosses(a, b) and frame_crosses(b, a)

