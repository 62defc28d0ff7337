"""The compiled datapath on its own: fragment sizes, sessions and their roles, key indices, reassembly bounds."""

import os
import subprocess
import sys

import pytest

from etun import _fast
from tests import REPO
from tests import reference as ref

LEVELS = (0, 1, 2)
NONE, AUTH, ENCRYPT = LEVELS
FRAME, FRAME_VNET, SESSION = _fast.TYPE_FRAME, _fast.TYPE_FRAME_VNET, _fast.TYPE_SESSION
# Test clocks start far beyond the real monotonic clock, which the datapath never moves back from.
T0 = 10**12
ROOT = os.urandom(32)  # the index root both sites hold (PROTOCOL.md §4.1)


def datapath(level, max_packet=800, **options):
    dp = _fast.Datapath(level, max_packet, **options)
    dp.set_static_keys(bytes(32), bytes(32), bytes(32), bytes(32), ROOT)
    return dp


def pair(level, max_packet=800, session_id=0, index=0, **rx_options):
    """A sender and a receiver sharing one session, as site A -> site B."""
    secret = os.urandom(32)
    tx = datapath(level, max_packet)
    rx = datapath(level, max_packet, **rx_options)
    tx.set_send_session(secret, session_id, index)
    rx.set_recv_session(secret, session_id, index)
    return tx, rx, secret


def deliver(rx, datagrams, now_ms=None):
    frames = []
    for d in datagrams:
        frames += rx.open(d, now_ms)
    return frames


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("max_packet", [320, 576, 800, 1400, 9000])
def test_every_datagram_stays_below_max_packet_with_balanced_fragments(level, max_packet):
    tx = datapath(level, max_packet)
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


def test_counters_are_consecutive_within_a_frame_and_grow_across_frames_and_session_messages():
    tx, _, _ = pair(ENCRYPT)
    seen = []
    for length, ptype in ((1514, FRAME), (60, FRAME), (100, SESSION), (9000, FRAME), (8192, SESSION)):
        for d in tx.seal(bytes(length), ptype):
            seen.append(int.from_bytes(d[10:16], "big"))
    assert seen == list(range(len(seen)))
    assert _fast.send_counter(tx) == len(seen)


@pytest.mark.parametrize("level", LEVELS)
def test_the_header_names_the_peers_session_the_segment_and_the_key_index(level):
    tx, rx, _ = pair(level, session_id=0x2A, index=0x01020304)
    (d,) = tx.seal(bytes(100), segment=7)
    assert d[0] == 2 << 6 | level << 4 | FRAME
    assert d[4:10] == bytes.fromhex("01020304" "2a07")
    assert rx.open(d) == [(FRAME, bytes(100))] and rx.last_session == 0x2A


@pytest.mark.parametrize("level", LEVELS)
def test_session_messages_travel_whole_and_come_back_as_their_payload(level):
    tx, rx, _ = pair(level)
    message = os.urandom(8192)
    datagrams = tx.seal(message, SESSION)
    assert all(d[0] & 0x0F == SESSION for d in datagrams)
    assert deliver(rx, reversed(datagrams)) == [(SESSION, message)]


@pytest.mark.parametrize("level", LEVELS)
def test_nothing_is_sealed_or_opened_without_a_session(level):
    tx = datapath(level)
    assert tx.seal(bytes(100)) == []
    assert tx.counters()["tx"]["no_session"] == 1
    sender, _, _ = pair(level)
    rx = datapath(level)
    assert rx.open(sender.seal(bytes(100))[0]) == []
    assert rx.last_drop == "no_session"


def test_a_call_that_raises_under_a_pump_lock_leaves_the_lock_free():
    """open() with a clock it cannot take raises; the receive lock it held is free again, so the
    next open() -- and the rx pump, and sessions() -- go on. Run in a child: with the lock left
    held, the next call would wait forever with the GIL held."""
    child = """
import pytest
from tests.datapath.test_datapath import AUTH, pair
tx, rx, _ = pair(AUTH)
with pytest.raises(OverflowError):
    rx.open(tx.seal(bytes(100))[0], -1)
assert len(rx.open(tx.seal(bytes(100))[0])) == 1 and rx.sessions()["current"] is not None
print("free")
"""
    done = subprocess.run([sys.executable, "-c", child], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "free", done.stderr


@pytest.mark.parametrize("level", LEVELS)
def test_a_packet_under_a_session_id_the_receiver_does_not_hold_is_no_session(level):
    tx, rx, secret = pair(level, session_id=5)
    rx.set_recv_session(secret, 6)
    tx.set_send_session(secret, 7)
    assert rx.open(tx.seal(bytes(100))[0]) == [] and rx.last_drop == "no_session"


def test_runt_and_oversized_frames_and_session_messages_are_dropped_and_counted():
    tx, _, _ = pair(ENCRYPT)
    assert tx.seal(bytes(13)) == []
    assert tx.seal(bytes(_fast.MAX_FRAME_LEN + 1)) == []
    assert tx.seal(bytes(10 + 13), FRAME_VNET) == []
    assert tx.seal(bytes(3), SESSION) == []
    assert tx.seal(bytes(8193), SESSION) == []
    c = tx.counters()["tx"]
    assert (c["runt"], c["oversized"], c["frames"]) == (3, 2, 0)
    assert _fast.send_counter(tx) == 0


def test_a_packet_of_another_level_is_a_level_mismatch():
    tx, _, secret = pair(AUTH)
    rx = datapath(ENCRYPT)
    rx.set_recv_session(secret)
    assert rx.open(tx.seal(bytes(100))[0]) == []
    assert rx.last_drop == "level_mismatch"


def test_a_wrong_session_secret_or_index_root_fails_authentication():
    tx, _, secret = pair(ENCRYPT)
    rx = datapath(ENCRYPT)
    rx.set_recv_session(os.urandom(32))
    assert rx.open(tx.seal(bytes(100))[0]) == []
    assert rx.last_drop == "auth"
    other_root = _fast.Datapath(ENCRYPT)  # another key file: another index root, other data keys
    other_root.set_static_keys(bytes(32), bytes(32), bytes(32), bytes(32), os.urandom(32))
    other_root.set_recv_session(secret)
    assert other_root.open(tx.seal(bytes(100))[0]) == []
    assert other_root.last_drop == "auth"
    # SESSION messages are sealed under index-free control keys: the index root plays no part.
    assert other_root.open(tx.seal(bytes(100), SESSION)[0]) == [(SESSION, bytes(100))]


def test_the_index_root_a_session_uses_is_the_one_held_when_it_was_installed():
    tx, rx, secret = pair(ENCRYPT)
    rx.set_static_keys(bytes(32), bytes(32), bytes(32), bytes(32), os.urandom(32))  # a reload
    assert len(rx.open(tx.seal(bytes(100))[0])) == 1  # the session keeps the root it copied
    rx.set_recv_session(secret, 1)
    tx.set_send_session(secret, 1)
    assert rx.open(tx.seal(bytes(100))[0]) == [] and rx.last_drop == "auth"


@pytest.mark.parametrize("level", LEVELS)
def test_every_packet_is_accepted_once(level):
    tx, rx, _ = pair(level)
    frame = os.urandom(3000)
    datagrams = tx.seal(frame)
    assert deliver(rx, datagrams) == [(FRAME, frame)]
    for d in datagrams:
        assert rx.open(d) == []
        assert rx.last_drop == "replay"


# -- key indices ---------------------------------------------------------------------------

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


@pytest.mark.parametrize("ahead", [2, 3, 64, 65, 1000])
def test_a_packet_beyond_the_next_index_is_refused_without_work_even_from_the_real_sender(ahead):
    tx, rx, _ = pair(ENCRYPT)
    for _ in range(ahead):
        tx.rotate_send()
    assert rx.open(tx.seal(bytes(100))[0]) == []
    assert rx.last_drop == "key_index" and rx.recv_index == 0


def test_a_receiver_catches_up_with_a_sender_that_rotated_while_nothing_arrived_from_its_session_message():
    tx, rx, _ = pair(ENCRYPT)
    assert len(deliver(rx, tx.seal(bytes(100)))) == 1
    for _ in range(100):
        tx.rotate_send()
    late = tx.seal(bytes(100))
    assert rx.open(late[0]) == [] and rx.last_drop == "key_index"
    assert deliver(rx, tx.seal(bytes(16), SESSION)) == [(SESSION, bytes(16))]
    assert rx.recv_index == 100
    assert len(deliver(rx, late)) == 1         # refused before, opens now
    tx.rotate_send()
    assert len(deliver(rx, tx.seal(bytes(100)))) == 1
    assert rx.recv_index == 101


def test_a_session_message_never_moves_the_receiver_back():
    tx, rx, secret = pair(ENCRYPT, index=50)
    behind = datapath(ENCRYPT)
    behind.set_send_session(secret, 0, 10)
    behind.seal(bytes(100))                    # counter 0 is the other sender's
    assert deliver(rx, behind.seal(bytes(16), SESSION)) == [(SESSION, bytes(16))]
    assert rx.recv_index == 50


def test_a_forged_session_message_moves_nothing():
    tx, rx, _ = pair(ENCRYPT)
    for _ in range(10):
        tx.rotate_send()
    (message,) = tx.seal(bytes(16), SESSION)
    assert rx.open(message[:-1] + bytes([message[-1] ^ 1])) == [] and rx.last_drop == "auth"
    assert rx.recv_index == 0


def test_the_last_key_index_has_no_next_so_index_0_is_never_accepted_again():
    secret = os.urandom(32)
    early = datapath(ENCRYPT)
    early.set_send_session(secret)
    recorded = early.seal(bytes(100))[0]                 # index 0, as a listener recorded it
    tx = datapath(ENCRYPT)
    tx.set_send_session(secret, 0, 0xFFFFFFFF)
    tx.seal(bytes(100))                                  # counter 0 was the early sender's
    rx = datapath(ENCRYPT)
    rx.set_recv_session(secret)
    assert deliver(rx, tx.seal(bytes(16), SESSION)) == [(SESSION, bytes(16))]
    assert len(deliver(rx, tx.seal(bytes(100)))) == 1
    assert rx.recv_index == 0xFFFFFFFF
    assert rx.open(recorded) == [] and rx.last_drop == "key_index"
    with pytest.raises(OverflowError, match="exhausted"):
        tx.rotate_send()                                 # a new session is needed
    assert tx.send_index == 0xFFFFFFFF


def test_a_single_packet_larger_than_any_max_packet_allows_is_malformed():
    secret = os.urandom(32)
    _, mac_key = ref.data_keys(secret, ROOT, 0)
    largest = ref.max_payload(ENCRYPT, 9000)             # what a sender at max_packet 9000 sends
    rx = datapath(ENCRYPT)
    rx.set_recv_session(secret)
    recv = ref.Receiver(ENCRYPT, ROOT)
    recv.install(secret)
    for counter, size in enumerate([largest, largest + 1, 40000]):
        header = ref.pack_header(ENCRYPT, ref.TYPE_FRAME, counter=counter)
        packet = ref.build_packet(ENCRYPT, mac_key, header, os.urandom(size))
        want = None if size == largest else "malformed"
        frames = rx.open(packet, T0)
        assert (rx.last_drop, len(frames)) == (want, 0 if want else 1)
        recv.open(packet, T0)
        assert recv.last_drop == want


# -- sessions and their roles (PROTOCOL.md §5.2, §5.4) ------------------------------------

def roles(dp):
    """{role: (session id, confirmed) or None} of what the datapath holds."""
    held = dp.sessions()
    return {role: held[role] and (held[role][0], held[role][2]) for role in ("current", "previous", "next")}


def test_a_replaced_receive_session_opens_packets_in_flight_until_the_one_after_replaces_it():
    tx, rx, _ = pair(ENCRYPT)
    in_flight = tx.seal(os.urandom(200))[0]
    new_secret = os.urandom(32)
    rx.set_recv_session(new_secret, 1)
    assert roles(rx) == {"current": (1, True), "previous": (0, True), "next": None}
    assert len(deliver(rx, [in_flight])) == 1            # on the real clock: well within 10 s
    tx.set_send_session(new_secret, 1)
    assert len(deliver(rx, tx.seal(os.urandom(200)))) == 1
    rx.set_recv_session(os.urandom(32), 2)
    rx.set_recv_session(os.urandom(32), 3)
    assert rx.open(tx.seal(os.urandom(200))[0]) == [] and rx.last_drop == "no_session"


def test_a_replaced_session_opens_packets_for_10_seconds_from_its_replacement():
    old_tx, rx, _ = pair(ENCRYPT, session_id=1)
    new_secret = os.urandom(32)
    rx.set_recv_session(new_secret, 2, confirmed=False)
    new_tx = datapath(ENCRYPT)
    new_tx.set_send_session(new_secret, 2)
    assert len(rx.open(new_tx.seal(bytes(100))[0], T0)) == 1   # confirms 2 at T0: 1 is previous
    assert roles(rx)["previous"] == (1, True)
    assert len(rx.open(old_tx.seal(bytes(100))[0], T0 + 9_999)) == 1
    assert rx.open(old_tx.seal(bytes(100))[0], T0 + 10_000) == [] and rx.last_drop == "no_session"
    assert roles(rx)["previous"] is None


@pytest.mark.parametrize("level", LEVELS)
def test_an_unconfirmed_session_carries_nothing_until_a_packet_under_it_authenticates(level):
    old_tx, rx, _ = pair(level, session_id=1)
    new_secret = os.urandom(32)
    rx.set_recv_session(new_secret, 2, index=7, confirmed=False)
    assert roles(rx) == {"current": (1, True), "previous": None, "next": (2, False)}
    assert rx.recv_index == 0                            # still the current session's
    new_tx = datapath(level)
    new_tx.set_send_session(new_secret, 2, 7)
    first = new_tx.seal(bytes(100))[0]
    if level != NONE:
        assert rx.open(first[:-1] + bytes([first[-1] ^ 1])) == [] and rx.last_drop == "auth"
        assert roles(rx)["next"] == (2, False)           # a forgery confirms nothing
    assert len(rx.open(first)) == 1
    assert roles(rx) == {"current": (2, True), "previous": (1, True), "next": None}
    assert rx.recv_index == (0 if level == NONE else 7)
    assert rx.sessions()["confirmed_ms"] > 0


def test_a_confirmed_install_drops_a_session_waiting_for_confirmation():
    _, rx, _ = pair(ENCRYPT, session_id=1)
    rx.set_recv_session(os.urandom(32), 2, confirmed=False)
    rx.set_recv_session(os.urandom(32), 3)
    assert roles(rx) == {"current": (3, True), "previous": (1, True), "next": None}


def test_drop_sessions_forgets_both_directions():
    tx, rx, _ = pair(ENCRYPT)
    rx.set_recv_session(os.urandom(32), 1, confirmed=False)
    rx.drop_sessions()
    assert roles(rx) == {"current": None, "previous": None, "next": None} and rx.recv_index is None
    tx.drop_sessions()
    assert tx.sessions()["sending"] is None and tx.send_index is None
    assert tx.seal(bytes(100)) == []


def test_the_counter_starts_at_0_with_each_send_session():
    tx, _, _ = pair(ENCRYPT)
    tx.seal(bytes(100))
    assert _fast.send_counter(tx) == 1
    tx.set_send_session(os.urandom(32), 1)
    assert _fast.send_counter(tx) == 0
    assert int.from_bytes(tx.seal(bytes(100))[0][10:16], "big") == 0


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
    rx = datapath(ENCRYPT, reassembly_kib=4096)
    small, large, nbytes = _fast.reassembly_capacity(rx)
    assert (small, large) == (1024, 31)
    assert nbytes <= 4096 * 1024
