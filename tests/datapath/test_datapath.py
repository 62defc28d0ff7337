"""The compiled datapath on its own: fragment sizes, sessions, key rotation, reassembly bounds."""

import os

import pytest

from etun import _fast
from tests import reference as ref

LEVELS = (0, 1, 2)
NONE, AUTH, ENCRYPT = LEVELS
FRAME, FRAME_VNET = _fast.TYPE_FRAME, _fast.TYPE_FRAME_VNET
# Test clocks start far beyond the real monotonic clock, which the datapath never moves back from.
T0 = 10**12


def pair(level, max_packet=800, **rx_options):
    """A sender and a receiver sharing one session, as site A -> site B."""
    secret = os.urandom(32)
    tx = _fast.Datapath(level, max_packet)
    rx = _fast.Datapath(level, max_packet, **rx_options)
    tx.set_send_session(secret)
    rx.set_recv_session(secret)
    return tx, rx, secret


def deliver(rx, datagrams, now_ms=None):
    frames = []
    for d in datagrams:
        frames += rx.open(d, now_ms)
    return frames


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("max_packet", [320, 576, 800, 1400, 9000])
def test_every_datagram_stays_below_max_packet_with_balanced_fragments(level, max_packet):
    tx = _fast.Datapath(level, max_packet)
    tx.set_send_session(os.urandom(32))
    overhead = 16 + (16 if level else 0)
    lengths = list(range(14, 3100)) + [9000, 9216, 20000, 65535, _fast.MAX_FRAME_LEN]
    for length in lengths:
        datagrams = tx.seal(bytes(length))
        sizes = [len(d) - overhead for d in datagrams]
        assert sum(sizes) == length
        assert max(sizes) - min(sizes) <= 1
        assert all(8 + len(d) < max_packet for d in datagrams)
        payload_max = max_packet - 1 - 8 - overhead
        assert len(datagrams) == -(-length // payload_max)      # the fewest possible


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("length", [1514, 1518])
def test_a_full_size_frame_takes_exactly_two_packets_of_equal_size(level, length):
    tx, _, _ = pair(level)
    datagrams = tx.seal(os.urandom(length))
    assert len(datagrams) == 2
    assert len(datagrams[0]) == len(datagrams[1])
    assert 8 + len(datagrams[0]) < 800


@pytest.mark.parametrize("level", LEVELS)
def test_a_1522_byte_qinq_frame_takes_three_balanced_packets_at_auth_and_encrypt_and_two_at_none(level):
    tx, _, _ = pair(level)
    datagrams = tx.seal(os.urandom(1522))
    # P is 759 at auth and encrypt: 1522 > 2 * 759 forces a third packet under the 800-byte
    # limit. At none P is 775, and two suffice. Either way the packets balance.
    assert len(datagrams) == (2 if level == NONE else 3)
    assert max(map(len, datagrams)) - min(map(len, datagrams)) <= 1


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("length", [14, 60, 759, 760, 1514, 1518, 1522, 9000, 9216, 65535, _fast.MAX_FRAME_LEN])
def test_frames_round_trip_in_any_fragment_order(level, length):
    tx, rx, _ = pair(level)
    frame = os.urandom(length)
    datagrams = tx.seal(frame)
    assert deliver(rx, reversed(datagrams)) == [(FRAME, frame)]
    counters = rx.counters()["rx"]
    assert counters["frames"] == 1 and counters["bytes"] == length
    assert counters["reassembled"] == (1 if len(datagrams) > 1 else 0)


@pytest.mark.parametrize("level", LEVELS)
def test_frames_with_offload_metadata_keep_their_type(level):
    tx, rx, _ = pair(level)
    frame = os.urandom(10 + 64000)
    assert deliver(rx, tx.seal(frame, FRAME_VNET)) == [(FRAME_VNET, frame)]


def test_encrypt_hides_the_frame_and_auth_does_not():
    plain = b"\xaa" * 1514
    for level, visible in ((AUTH, True), (ENCRYPT, False)):
        tx, _, _ = pair(level)
        datagrams = tx.seal(plain)
        assert all((b"\xaa" * 64 in d) is visible for d in datagrams)


def test_counters_are_consecutive_within_a_frame_and_grow_across_frames():
    tx, _, _ = pair(ENCRYPT)
    seen = []
    for length in (1514, 60, 9000):
        for d in tx.seal(bytes(length)):
            seen.append(int.from_bytes(d[8:16], "big"))
    assert seen == list(range(len(seen)))
    assert tx.send_counter == len(seen)


@pytest.mark.parametrize("level", LEVELS)
def test_nothing_is_sealed_or_opened_without_a_session(level):
    tx = _fast.Datapath(level)
    assert tx.seal(bytes(100)) == []
    assert tx.counters()["tx"]["no_session"] == 1
    sender, _, _ = pair(level)
    rx = _fast.Datapath(level)
    assert rx.open(sender.seal(bytes(100))[0]) == []
    assert rx.last_drop == "no_session"


def test_runt_and_oversized_frames_are_dropped_and_counted():
    tx, _, _ = pair(ENCRYPT)
    assert tx.seal(bytes(13)) == []
    assert tx.seal(bytes(_fast.MAX_FRAME_LEN + 1)) == []
    assert tx.seal(bytes(10 + 13), FRAME_VNET) == []
    c = tx.counters()["tx"]
    assert (c["runt"], c["oversized"], c["frames"]) == (2, 1, 0)


def test_a_packet_of_another_level_is_a_level_mismatch():
    tx, _, secret = pair(AUTH)
    rx = _fast.Datapath(ENCRYPT)
    rx.set_recv_session(secret)
    assert rx.open(tx.seal(bytes(100))[0]) == []
    assert rx.last_drop == "level_mismatch"


def test_a_wrong_session_secret_fails_authentication():
    tx, _, _ = pair(ENCRYPT)
    rx = _fast.Datapath(ENCRYPT)
    rx.set_recv_session(os.urandom(32))
    assert rx.open(tx.seal(bytes(100))[0]) == []
    assert rx.last_drop == "auth"


@pytest.mark.parametrize("level", LEVELS)
def test_every_packet_is_accepted_once(level):
    tx, rx, _ = pair(level)
    frame = os.urandom(3000)
    datagrams = tx.seal(frame)
    assert deliver(rx, datagrams) == [(FRAME, frame)]
    for d in datagrams:
        assert rx.open(d) == []
        assert rx.last_drop == "replay"


# -- key rotation -------------------------------------------------------------------------

def test_rotation_is_hitless_packets_of_the_previous_index_still_open():
    tx, rx, _ = pair(ENCRYPT)
    old = [tx.seal(os.urandom(200))[0] for _ in range(3)]
    tx.rotate_send()
    new = tx.seal(os.urandom(200))[0]
    assert len(deliver(rx, [new])) == 1
    assert rx.recv_index == 1
    assert len(deliver(rx, old)) == 3          # in flight across the rotation: still accepted


def test_rotation_forgets_an_index_two_steps_back():
    tx, rx, _ = pair(ENCRYPT)
    stale = tx.seal(bytes(100))[0]
    for _ in range(2):
        tx.rotate_send()
        assert len(deliver(rx, tx.seal(bytes(100)))) == 1
    assert rx.recv_index == 2
    assert rx.open(stale) == []
    assert rx.last_drop == "key_index"


def test_a_receiver_catches_up_with_a_sender_that_rotated_while_nothing_arrived():
    tx, rx, _ = pair(ENCRYPT)
    for _ in range(_fast.KEY_LOOKAHEAD):
        tx.rotate_send()
    assert len(deliver(rx, tx.seal(bytes(100)))) == 1
    assert rx.recv_index == _fast.KEY_LOOKAHEAD
    tx.rotate_send()
    assert len(deliver(rx, tx.seal(bytes(100)))) == 1    # and next is ready again


def test_an_index_beyond_the_lookahead_is_refused_without_work():
    tx, rx, _ = pair(ENCRYPT)
    for _ in range(_fast.KEY_LOOKAHEAD + 1):
        tx.rotate_send()
    assert rx.open(tx.seal(bytes(100))[0]) == []
    assert rx.last_drop == "key_index"


def test_on_demand_derivations_are_rate_limited():
    secret = os.urandom(32)
    rx = _fast.Datapath(ENCRYPT)
    rx.set_recv_session(secret)
    forged = []
    for ahead in range(2, 2 + 20):
        tx = _fast.Datapath(ENCRYPT)
        tx.set_send_session(os.urandom(32), ahead)      # wrong secret: forged
        forged.append(tx.seal(bytes(100))[0])
    t = T0
    reasons = []
    for d in forged:
        rx.open(d, t)
        reasons.append(rx.last_drop)
    assert reasons.count("auth") == 8                   # the burst: derived, then failed the tag
    assert reasons.count("key_index") == 12             # the rest: refused before any work
    rx.open(forged[-1], t + 1000)                        # a second later, 8 more are allowed
    assert rx.last_drop == "auth"


def test_a_receiver_told_the_senders_index_catches_up_after_a_long_outage():
    tx, rx, _ = pair(ENCRYPT)
    assert len(deliver(rx, tx.seal(bytes(100)))) == 1
    for _ in range(100):                                 # far beyond the look-ahead
        tx.rotate_send()
    late = tx.seal(bytes(100))
    assert rx.open(late[0]) == [] and rx.last_drop == "key_index"
    assert rx.catch_up_recv(100)
    assert rx.recv_index == 100
    assert len(deliver(rx, tx.seal(bytes(100)))) == 1
    assert not rx.catch_up_recv(50)                      # never backwards
    assert not rx.catch_up_recv(101)                     # next is held already
    assert rx.recv_index == 100


def test_the_last_key_index_has_no_next_so_index_0_is_never_accepted_again():
    secret = os.urandom(32)
    early = _fast.Datapath(ENCRYPT)
    early.set_send_session(secret)
    recorded = early.seal(bytes(100))[0]                 # index 0, as a listener recorded it
    tx = _fast.Datapath(ENCRYPT)
    tx.set_send_session(secret, 0xFFFFFFFF)
    rx = _fast.Datapath(ENCRYPT)
    rx.set_recv_session(secret)
    assert rx.catch_up_recv(0xFFFFFFFF)
    assert len(deliver(rx, tx.seal(bytes(100)))) == 1
    assert rx.recv_index == 0xFFFFFFFF
    assert rx.open(recorded) == [] and rx.last_drop == "key_index"
    with pytest.raises(OverflowError, match="exhausted"):
        tx.rotate_send()                                 # the sender proposes a new session


def test_the_old_sessions_traffic_spends_no_derivation_tokens():
    old_secret, new_secret = os.urandom(32), os.urandom(32)
    old_tx = _fast.Datapath(ENCRYPT)
    old_tx.set_send_session(old_secret, 5)
    rx = _fast.Datapath(ENCRYPT)
    rx.set_recv_session(old_secret)
    assert rx.catch_up_recv(5)
    rx.set_recv_session(new_secret)                      # the old session stays at index 5
    # Index 5 lies ahead of the new session's 0: the old session's keys are tried first.
    for _ in range(20):
        assert len(deliver(rx, old_tx.seal(bytes(100)), now_ms=T0)) == 1
    reasons = []
    for ahead in range(2, 10):
        forged = _fast.Datapath(ENCRYPT)
        forged.set_send_session(os.urandom(32), ahead)
        rx.open(forged.seal(bytes(100))[0], T0)
        reasons.append(rx.last_drop)
    assert reasons == ["auth"] * 8                       # the whole burst was still there
    # The same flow through the reference.
    recv = ref.Receiver(ENCRYPT)
    recv.set_session(old_secret)
    recv.session.promote(5)
    recv.set_session(new_secret)
    for _ in range(20):
        assert len(recv.open(old_tx.seal(bytes(100))[0], T0)) == 1
    assert recv.bucket.tokens == ref.KEY_BUCKET_CAPACITY  # no token spent


def test_a_single_packet_larger_than_any_max_packet_allows_is_malformed():
    secret = os.urandom(32)
    _, mac_key = ref.index_keys(secret, 0)
    largest = ref.max_payload(ENCRYPT, 9000)             # what a sender at max_packet 9000 sends
    rx = _fast.Datapath(ENCRYPT)
    rx.set_recv_session(secret)
    recv = ref.Receiver(ENCRYPT)
    recv.set_session(secret)
    for counter, size in enumerate([largest, largest + 1, 40000]):
        header = ref.pack_header(ENCRYPT, ref.TYPE_FRAME, 0, 0, 1, 0, counter)
        packet = ref.build_packet(ENCRYPT, mac_key, header, os.urandom(size))
        want = None if size == largest else "malformed"
        frames = rx.open(packet, T0)
        assert (rx.last_drop, len(frames)) == (want, 0 if want else 1)
        recv.open(packet, T0)
        assert recv.last_drop == want


# -- sessions -----------------------------------------------------------------------------

def test_the_previous_receive_session_stays_usable_until_the_next_switch():
    tx, rx, _ = pair(ENCRYPT)
    in_flight = tx.seal(os.urandom(200))[0]
    new_secret = os.urandom(32)
    rx.set_recv_session(new_secret)
    assert len(deliver(rx, [in_flight])) == 1
    tx.set_send_session(new_secret)
    assert len(deliver(rx, tx.seal(os.urandom(200)))) == 1
    rx.set_recv_session(os.urandom(32))
    rx.set_recv_session(os.urandom(32))
    assert rx.open(tx.seal(os.urandom(200))[0]) == []


def test_the_counter_belongs_to_the_process_not_the_session():
    tx, _, _ = pair(ENCRYPT)
    tx.seal(bytes(100))
    tx.set_send_session(os.urandom(32))
    assert tx.send_counter == 1
    assert int.from_bytes(tx.seal(bytes(100))[0][8:16], "big") == 1


# -- reassembly ---------------------------------------------------------------------------

@pytest.mark.parametrize("level", LEVELS)
def test_incomplete_frames_expire_after_the_timeout(level):
    tx, rx, _ = pair(level, reassembly_timeout_ms=500)
    first = tx.seal(os.urandom(1514))[0]
    rx.open(first, now_ms=T0)
    assert _fast.reassembly_in_use(rx) == 1
    _fast.reassembly_expire(rx, now_ms=T0 + 500)                   # exactly the timeout: not more than it yet
    assert _fast.reassembly_in_use(rx) == 1
    _fast.reassembly_expire(rx, now_ms=T0 + 501)
    assert _fast.reassembly_in_use(rx) == 0
    assert rx.counters()["rx"]["frag_timeout"] == 1


@pytest.mark.parametrize("level", LEVELS)
def test_a_flood_of_incomplete_frames_stays_within_the_table_and_real_frames_still_pass(level):
    tx, rx, _ = pair(level, reassembly_kib=256)
    small, large, nbytes = _fast.reassembly_capacity(rx)
    assert nbytes <= 256 * 1024 + 2 * 65664
    flood = 20 * small
    for _ in range(flood):
        rx.open(tx.seal(os.urandom(1514))[0], now_ms=T0)
    for _ in range(5 * large):
        rx.open(tx.seal(os.urandom(20000))[0], now_ms=T0)
    assert _fast.reassembly_in_use(rx) <= small + large
    c = rx.counters()["rx"]
    assert c["frag_evicted"] == flood - small + 5 * large - large
    frame = os.urandom(9000)
    assert deliver(rx, tx.seal(frame), now_ms=T0 + 1) == [(FRAME, frame)]


def test_reassembly_memory_is_fixed_at_construction():
    rx = _fast.Datapath(ENCRYPT, reassembly_kib=4096)
    small, large, nbytes = _fast.reassembly_capacity(rx)
    assert (small, large) == (1024, 31)
    assert nbytes <= 4096 * 1024


# -- the control queue --------------------------------------------------------------------

def test_a_flood_of_forged_control_packets_cannot_crowd_out_the_peers_hellos():
    key = os.urandom(32)
    rx = _fast.Datapath(ENCRYPT)
    rx.set_control_key(key)
    forged = _fast.seal_control(ENCRYPT, os.urandom(32), _fast.TYPE_HELLO, 1, bytes(132))
    probe = _fast.seal_control(ENCRYPT, os.urandom(32), _fast.TYPE_PROBE, 0, bytes(128))
    genuine = _fast.seal_control(ENCRYPT, key, _fast.TYPE_HELLO, 7, bytes(132))
    passed = sum(len(rx.open(p, now_ms=T0)) for p in [forged, probe] * 500)
    assert passed == 50                                   # the burst, then the rate limit
    assert rx.counters()["rx"]["control_queue"] == 950
    assert rx.open(genuine, now_ms=T0) == [(_fast.TYPE_HELLO, genuine)]    # always through
    assert len(rx.open(forged, now_ms=T0 + 1000)) == 1    # the bucket refills over time


def test_replayed_genuine_hellos_pass_once_and_other_senders_hellos_are_rate_limited():
    key = os.urandom(32)
    peer, earlier_run = os.urandom(16), os.urandom(16)
    rx = _fast.Datapath(ENCRYPT)
    rx.set_control_key(key)
    rx.set_peer_hello_sender(peer)

    def hello(sender, counter):
        return _fast.seal_control(ENCRYPT, key, _fast.TYPE_HELLO, counter, sender + bytes(116))

    assert rx.open(hello(peer, 0), now_ms=T0) == [] and rx.last_drop == "replay"   # counters start at 1
    first = hello(peer, 1)
    assert rx.open(first, now_ms=T0) == [(_fast.TYPE_HELLO, first)]
    assert sum(len(rx.open(first, now_ms=T0)) for _ in range(1000)) == 0
    assert rx.counters()["rx"]["replay"] == 1001
    # A recording of an earlier run, replayed in a flood: 10 at once, then 10 a second.
    recorded = [hello(earlier_run, c) for c in range(1, 1001)]
    assert sum(len(rx.open(p, now_ms=T0)) for p in recorded) == 10
    assert rx.counters()["rx"]["control_queue"] == 990
    # The peer's own fresh HELLOs are never held back by it.
    assert all(len(rx.open(hello(peer, c), now_ms=T0)) == 1 for c in range(2, 102))
    assert sum(len(rx.open(p, now_ms=T0 + 1000)) for p in recorded[10:]) == 10
    assert rx.open(recorded[0], now_ms=T0 + 5000) == [] and rx.last_drop == "replay"
    with pytest.raises(ValueError):
        rx.set_peer_hello_sender(b"short")
