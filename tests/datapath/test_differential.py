"""The compiled datapath against tests/reference.py: identical datagrams, frames opened across, identical drops."""

# Two independent readings of docs/PROTOCOL.md meet here. Sending, they must produce the same
# bytes; receiving, every datagram of a stream must give the same verdict on both sides: the same
# drop reason, or the same frames; and both must then hold the same sessions in the same roles,
# at the same key index, with the same counters.

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etun import _fast
from tests import reference as ref

LEVELS = (ref.LEVEL_NONE, ref.LEVEL_AUTH, ref.LEVEL_ENCRYPT)
NONE, AUTH, ENCRYPT = LEVELS
KEYED = (AUTH, ENCRYPT)
MAX_PACKETS = (320, 576, 800, 1400, 9000)
# The datapath's clock never moves back and starts at the real monotonic clock, so
# test clocks start far beyond it and only move forward.
T0 = 10**12
ROOT = bytes(range(32, 64))  # the index root both sides hold (§4.1)
SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(32, 64))
FOREIGN_SECRET = bytes(range(64, 96))

SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large]
secrets = st.binary(min_size=32, max_size=32)
frame_lengths = st.one_of(
    st.integers(14, 1600),
    st.integers(14, 9216),
    st.sampled_from([14, 60, 759, 760, 1514, 1518, 1522, 9216, 65557]),
    st.integers(20000, 65557),  # GSO super-frames
)


def datapath(level, max_packet=800, **options):
    dp = _fast.Datapath(level, max_packet, **options)
    dp.set_static_keys(bytes(32), bytes(32), bytes(32), bytes(32), ROOT)
    return dp


@st.composite
def frame_specs(draw):
    """(type, length, seed, segment) of an Ethernet frame of 14..9216 bytes or a GSO-sized one,
    as FRAME or FRAME_VNET, or of a SESSION message of 4..8192 bytes. The bytes come from the
    drawn seed (make_frame): Hypothesis' own buffer is too small for 65 KB frames, and a
    falsifying example stays readable."""
    frame_type = draw(st.sampled_from(ref.SEALED_TYPES))
    if frame_type == ref.TYPE_SESSION:
        length = draw(st.one_of(st.integers(4, 200), st.integers(4, 8192)))
    else:
        length = draw(frame_lengths) + (ref.VNET_HDR_LEN if frame_type == ref.TYPE_FRAME_VNET else 0)
    return frame_type, length, draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 255))


def make_frame(spec):
    """(type, frame, segment) of a frame_specs() draw."""
    frame_type, length, seed, segment = spec
    return frame_type, random.Random(seed).randbytes(length), segment


def crafted(level, secret=SECRET, ptype=ref.TYPE_FRAME, big=0, index=0, count=1, size=60, **header):
    """A packet with any header, tagged (except at none) with the right keys for its type and key index."""
    mac_key = None
    if level != NONE:
        if ptype == ref.TYPE_SESSION:
            mac_key = ref.control_keys(secret)[1]
        else:
            mac_key = ref.data_keys(secret, ROOT, header.get("key_index", 0))[1]
    hdr = ref.pack_header(level, ptype, big=big, index=index, count=count, **header)
    return ref.build_packet(level, mac_key, hdr, bytes(i % 256 for i in range(size)))


def forged(packet):
    """The packet with the last byte of its tag flipped."""
    return packet[:-1] + bytes([packet[-1] ^ 1])


class Twin:
    """A datapath receiver and a reference receiver, fed the same datagrams at the same times."""

    def __init__(self, level, **options):
        self.level = level
        self.dp = datapath(level, **options)
        self.ref = ref.Receiver(level, ROOT)
        self.latest_ms = 0

    def install(self, secret=SECRET, session_id=0, index=0, confirmed=True):
        self.dp.set_recv_session(secret, session_id, index, confirmed)
        # The datapath stamps an install with its own clock, which never goes back: the later of
        # its real clock and the latest now_ms a test fed it. A session the install replaces
        # counts its 10 seconds from there; so does the reference here.
        self.ref.install(secret, session_id, index, confirmed, now_ms=max(_fast.now_ms(), self.latest_ms))

    def feed(self, datagram, now_ms, what=""):
        """Open on both sides and insist on the same verdict, counters, sessions and key index."""
        self.latest_ms = max(self.latest_ms, now_ms)
        items = self.dp.open(datagram, now_ms)
        got = (self.dp.last_drop, items)
        delivered = self.ref.open(datagram, now_ms)
        assert got == (self.ref.last_drop, delivered), what
        self.check(what)
        return got

    def check(self, what=""):
        counted = self.dp.counters()["rx"]
        assert {name: counted[name] for name in self.ref.counters} == self.ref.counters, what
        assert self.dp.recv_index == self.ref.current_index, what
        held = self.dp.sessions()
        assert {role: held[role] and (held[role][0], held[role][2]) for role in ("current", "previous", "next")} \
            == self.ref.sessions(), what


# --- shared constants ---------------------------------------------------------


def test_the_extension_and_the_reference_agree_on_every_protocol_constant():
    assert _fast.WIRE_VERSION == ref.VERSION
    assert (_fast.HEADER_LEN, _fast.TAG_LEN, _fast.VNET_HDR_LEN) == (ref.HEADER_LEN, ref.TAG_LEN, ref.VNET_HDR_LEN)
    assert (_fast.MIN_FRAME_LEN, _fast.MAX_FRAME_LEN) == (ref.FRAME_MIN_LEN, ref.FRAME_MAX_LEN)
    assert (_fast.MAX_PACKET_MIN, _fast.MAX_PACKET_MAX) == (ref.MAX_PACKET_MIN, ref.MAX_PACKET_MAX)
    assert (_fast.REPLAY_WINDOW, _fast.SESSION_IDS, _fast.SEGMENT_IDS) == (ref.REPLAY_WINDOW, ref.SESSION_IDS,
                                                                           ref.SEGMENT_IDS)
    assert _fast.COUNTER_MAX == ref.COUNTER_LIMIT - 1
    assert (_fast.TYPE_FRAME, _fast.TYPE_FRAME_VNET, _fast.TYPE_SESSION) == ref.SEALED_TYPES
    assert _fast.HANDSHAKE_TYPES + _fast.PROBE_TYPES == ref.HANDED_UP_TYPES
    assert set(ref.DROP_REASONS + ref.REASSEMBLY_LOSSES) <= set(_fast.DROP_REASONS)
    for level in LEVELS:
        for max_packet in range(ref.MAX_PACKET_MIN, ref.MAX_PACKET_MAX + 1):
            assert _fast.payload_max(level, max_packet) == ref.max_payload(level, max_packet)


# --- sending: byte-identical datagrams ----------------------------------------

send_steps = st.lists(
    st.one_of(
        frame_specs().map(lambda spec: ("seal", spec)),
        st.just(("rotate",)),
        st.tuples(st.just("session"), secrets, st.integers(0, 255),
                  st.one_of(st.integers(0, 2**31), st.integers(2**32 - 3, 2**32 - 1))),
    ),
    min_size=1,
    max_size=10,
)


@settings(max_examples=150, deadline=None, suppress_health_check=SLOW)
@given(level=st.sampled_from(LEVELS), max_packet=st.sampled_from(MAX_PACKETS), secret=secrets,
       root=secrets, steps=send_steps)
def test_the_extension_seals_byte_identical_datagrams_across_rotations_and_sessions(level, max_packet, secret,
                                                                                     root, steps):
    dp = _fast.Datapath(level, max_packet)
    dp.set_static_keys(bytes(32), bytes(32), bytes(32), bytes(32), root)
    sender = ref.Sender(level, max_packet, root)
    dp.set_send_session(secret)
    sender.set_session(secret)
    for step in steps:
        if step[0] == "seal":
            frame_type, frame, segment = make_frame(step[1])
            assert dp.seal(frame, frame_type, segment) == sender.seal(frame, frame_type, segment), \
                (frame_type, len(frame), segment)
        elif step[0] == "rotate":
            if sender.key_index == ref.KEY_INDEX_LIMIT - 1:
                with pytest.raises(OverflowError):
                    dp.rotate_send()
                with pytest.raises(OverflowError):
                    sender.rotate()
            else:
                dp.rotate_send()
                sender.rotate()
        else:
            _, new_secret, peer, index = step
            dp.set_send_session(new_secret, peer, index)
            sender.set_session(new_secret, peer, index)  # the counter starts at 0 with the session
        assert (_fast.send_counter(dp), dp.send_index) == (sender.counter, sender.key_index)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("frame_type", ref.SEALED_TYPES)
def test_both_sides_refuse_to_seal_frames_outside_their_types_limits_without_spending_a_counter(level, frame_type):
    dp = datapath(level)
    sender = ref.Sender(level, index_root=ROOT)
    dp.set_send_session(SECRET)
    sender.set_session(SECRET)
    low, high = ref.FRAME_LIMITS[frame_type]
    for length in (low - 1, high + 1):
        assert dp.seal(bytes(length), frame_type) == []
        with pytest.raises(ValueError):
            sender.seal(bytes(length), frame_type)
    assert _fast.send_counter(dp) == sender.counter == 0
    assert dp.seal(bytes(high), frame_type) == sender.seal(bytes(high), frame_type)
    assert dp.seal(bytes(low), frame_type, 255) == sender.seal(bytes(low), frame_type, 255)


# --- frames opened across -----------------------------------------------------


def seal_batch(seal, rotate, batch, rotate_after):
    """The datagrams of a batch of frames, with one key rotation after the first `rotate_after` frames."""
    packets = []
    for number, (frame_type, frame, segment) in enumerate(batch):
        if number == rotate_after:
            rotate()
        packets += seal(frame, frame_type, segment)
    return packets


crossing = dict(
    level=st.sampled_from(LEVELS),
    max_packet=st.sampled_from(MAX_PACKETS),
    secret=secrets,
    session_id=st.integers(0, 255),
    index=st.integers(0, 2**32 - 2),
    batch=st.lists(frame_specs().map(make_frame), min_size=1, max_size=4),
    rotate_after=st.integers(0, 5),
    order=st.randoms(use_true_random=False),
)


@settings(max_examples=100, deadline=None, suppress_health_check=SLOW)
@given(**crossing)
def test_frames_sealed_by_the_extension_open_in_the_reference_in_any_fragment_order(
    level, max_packet, secret, session_id, index, batch, rotate_after, order
):
    dp = datapath(level, max_packet)
    dp.set_send_session(secret, session_id, index)
    packets = seal_batch(dp.seal, dp.rotate_send, batch, rotate_after)
    order.shuffle(packets)
    receiver = ref.Receiver(level, ROOT)
    receiver.install(secret, session_id, index)
    delivered = []
    for packet in packets:
        delivered += receiver.open(packet, T0)
        assert receiver.last_drop is None
    assert sorted(delivered) == sorted((frame_type, frame) for frame_type, frame, _ in batch)
    assert receiver.reassembly == {}


@settings(max_examples=100, deadline=None, suppress_health_check=SLOW)
@given(**crossing)
def test_frames_sealed_by_the_reference_open_in_the_extension_in_any_fragment_order(
    level, max_packet, secret, session_id, index, batch, rotate_after, order
):
    sender = ref.Sender(level, max_packet, ROOT)
    sender.set_session(secret, session_id, index)
    packets = seal_batch(sender.seal, sender.rotate, batch, rotate_after)
    order.shuffle(packets)
    dp = datapath(level, max_packet)
    dp.set_recv_session(secret, session_id, index)
    delivered = []
    for packet in packets:
        delivered += dp.open(packet, T0)
        assert dp.last_drop is None
    assert sorted(delivered) == sorted((frame_type, frame) for frame_type, frame, _ in batch)
    assert _fast.reassembly_in_use(dp) == 0


# --- receiving: the same verdict for every datagram of a stream ---------------
#
# A stream interleaves a genuine sender's frames and SESSION messages (delivered late,
# reordered, replayed, truncated) with foreign, forged, other-level, handshake and garbage
# datagrams, key rotations (one at a time, or many while nothing arrives), counter jumps, new
# sessions installed confirmed or waiting for confirmation, packets under session ids nobody
# holds, and the passing of time. Incomplete frames expire long before either reassembly
# table fills, as the two bound theirs differently.

frame_step = st.tuples(st.just("frame"), frame_specs())
deliver_step = st.tuples(st.just("deliver"), st.integers(0, 2**32 - 1))
stream_steps = st.lists(
    st.one_of(
        frame_step,
        frame_step,
        frame_step,
        deliver_step,
        deliver_step,
        deliver_step,
        st.tuples(st.just("replay"), st.integers(0, 2**32 - 1)),
        st.tuples(st.just("truncate"), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
        st.tuples(st.just("foreign"), st.integers(-3, 70)),
        st.tuples(st.just("forge"), st.sampled_from(ref.SEALED_TYPES), st.integers(-3, 70), st.integers(0, 2**20)),
        st.tuples(st.just("other_level"), st.integers(0, 1)),
        st.tuples(st.just("other_session"), st.integers(0, 255)),
        st.tuples(st.just("rotate")),
        st.tuples(st.just("jump"), st.integers(2, 70)),
        st.tuples(st.just("tick"), st.integers(0, 4000)),
        st.tuples(st.just("skip"), st.integers(1, 6000)),
        # Mostly a responder's session, confirmed by the first packet under it. A confirmed
        # install is stamped with the stream's time, so the session it replaces opens packets in
        # flight for 10 s of stream time after it.
        st.tuples(st.just("switch"), secrets, st.integers(0, 255), st.sampled_from([False, False, True])),
        st.tuples(st.just("handed_up"), st.sampled_from(ref.HANDED_UP_TYPES), st.integers(0, 2), st.binary(max_size=200)),
        st.tuples(st.just("garbage"), st.binary(max_size=100)),
    ),
    min_size=20,
    max_size=80,
)


def run_stream(level, max_packet, steps):
    """Play the steps; every datagram they put on the wire gets the same verdict on both sides."""
    twin = Twin(level)
    sender = ref.Sender(level, max_packet, ROOT)
    sender.set_session(SECRET, 0)
    twin.install(SECRET, 0)
    now = T0
    in_flight, sent = [], []

    def feed(datagram, what):
        nonlocal now
        if len(twin.ref.reassembly) >= 20:
            now += ref.REASSEMBLY_TIMEOUT_MS + 1  # let incomplete frames expire long before either table fills
        sent.append(datagram)
        twin.feed(datagram, now, what)

    for step in steps:
        kind = step[0]
        if kind == "frame":
            frame_type, frame, segment = make_frame(step[1])
            in_flight += sender.seal(frame, frame_type, segment)
        elif kind == "deliver" and in_flight:
            rng = random.Random(step[1])
            for _ in range(rng.randint(1, len(in_flight))):
                feed(in_flight.pop(rng.randrange(len(in_flight))), "genuine")
        elif kind == "replay" and sent:
            feed(sent[step[1] % len(sent)], "replayed")
        elif kind == "truncate" and sent + in_flight:
            pool = sent + in_flight
            packet = pool[step[1] % len(pool)]
            feed(packet[: step[2] % max(1, len(packet))], "truncated")
        elif kind == "foreign" and level != NONE:
            stranger = ref.Sender(level, index_root=ROOT)
            stranger.set_session(FOREIGN_SECRET, sender.peer_session, max(0, sender.key_index + step[1]))
            stranger.counter = sender.counter
            feed(stranger.seal(bytes(100))[0], "foreign secret")
        elif kind == "forge" and level != NONE:
            _, ptype, offset, counter = step
            key_index = min(max(0, sender.key_index + offset), ref.KEY_INDEX_LIMIT - 1)
            packet = crafted(level, sender.secret, ptype, key_index=key_index, session=sender.peer_session,
                             counter=counter)
            feed(forged(packet), "forged tag")
        elif kind == "other_level":
            other = ref.Sender([lv for lv in LEVELS if lv != level][step[1]], index_root=ROOT)
            other.set_session(sender.secret, sender.peer_session, sender.key_index)
            feed(other.seal(bytes(200))[0], "other level")
        elif kind == "other_session":
            stray = ref.Sender(level, index_root=ROOT)
            stray.set_session(sender.secret, step[1], sender.key_index)
            feed(stray.seal(bytes(80))[0], "another session id")
        elif kind == "rotate" and sender.key_index < ref.KEY_INDEX_LIMIT - 1:
            sender.rotate()
        elif kind == "jump":
            for _ in range(step[1]):  # the sender rotated while nothing reached us
                sender.rotate()
        elif kind == "tick":
            now += step[1]
        elif kind == "skip":
            sender.counter += step[1]
        elif kind == "switch":
            _, secret, session_id, confirmed = step
            twin.install(secret, session_id, sender.key_index, confirmed)
            sender.set_session(secret, session_id, sender.key_index)
            twin.check("switch")
        elif kind == "handed_up":
            _, ptype, packet_level, body = step
            feed(bytes([ref.first_byte(packet_level, ptype)]) + body, "handshake or probe")
        elif kind == "garbage":
            feed(step[1], "garbage")
    while in_flight:
        feed(in_flight.pop(0), "genuine, late")
    assert twin.dp.counters()["rx"]["frag_evicted"] == 0


@pytest.mark.parametrize("level", LEVELS)
@settings(max_examples=300, deadline=None, suppress_health_check=SLOW)
@given(max_packet=st.sampled_from(MAX_PACKETS), steps=stream_steps)
def test_every_datagram_of_a_mixed_stream_gets_the_same_verdict_on_both_sides(level, max_packet, steps):
    run_stream(level, max_packet, steps)


def test_every_first_byte_at_every_short_length_gets_the_same_verdict_on_both_sides():
    for level in LEVELS:
        twin = Twin(level)
        twin.install()
        for byte0 in range(256):
            for length in (1, 2, 15, 16, 31, 32, 33, 52, 96, 124):
                twin.feed(bytes([byte0]) + bytes(length - 1), T0, (level, byte0, length))
        twin.feed(b"", T0, "empty")


# --- receiving: the rules of §3.2 and §4.2 one at a time ------------------------


@pytest.mark.parametrize("level", KEYED)
def test_both_sides_hold_c_minus_1_c_and_c_plus_1_around_every_move_of_c(level):
    twin = Twin(level)
    twin.install()
    steps = [(1, 0), (0, 1), (2, 2), (0, 3), (1, 4), (5, 5), (3, 6), (4, 7), (3, 8), (70, 9), (2, 10), (4, 11)]
    steps += [(69, 1000), (71, 1001), (70, 1002), (68, 1003), (135, 1004), (5, 1005), (6, 1006)]
    for key_index, counter in steps:
        twin.feed(crafted(level, key_index=key_index, counter=counter), T0, (key_index, counter))
    assert twin.ref.current_index == 6


@pytest.mark.parametrize("level", KEYED)
def test_neither_side_moves_for_forgeries_or_derives_its_way_ahead(level):
    twin = Twin(level)
    twin.install(index=100)
    for ahead in (-2, -1, 0, 1, 2, 3, 64, 65, 2**31):
        twin.feed(forged(crafted(level, key_index=100 + ahead, counter=500 + ahead)), T0, ahead)
    for ahead in (2, 3, 64):  # genuine, but not held: only a SESSION message moves c that far
        twin.feed(crafted(level, key_index=100 + ahead, counter=ahead), T0, ahead)
    assert twin.ref.counters["key_index"] == 9 and twin.ref.counters["auth"] == 3
    assert twin.ref.current_index == 100


@pytest.mark.parametrize("level", LEVELS)
def test_both_sides_catch_up_with_the_index_a_session_message_names_and_never_go_back(level):
    twin = Twin(level)
    twin.install(index=7)
    steps = [
        (ref.TYPE_FRAME, 200),  # not held
        (ref.TYPE_SESSION, 200),  # moves c
        (ref.TYPE_FRAME, 200),
        (ref.TYPE_FRAME, 199),
        (ref.TYPE_SESSION, 150),  # below c: moves nothing
        (ref.TYPE_FRAME, 201),
        (ref.TYPE_SESSION, 2**32 - 1),  # the last index: no c + 1
        (ref.TYPE_FRAME, 2**32 - 1),
        (ref.TYPE_FRAME, 2**32 - 2),
        (ref.TYPE_FRAME, 0),
    ]
    for counter, (ptype, key_index) in enumerate(steps):
        twin.feed(crafted(level, ptype=ptype, key_index=key_index, counter=counter), T0, (ptype, key_index))
    twin.feed(forged(crafted(level, ptype=ref.TYPE_SESSION, key_index=5, counter=99)), T0)


@pytest.mark.parametrize("level", LEVELS)
def test_both_sides_accept_counters_up_to_4032_below_the_highest_and_each_only_once(level):
    twin = Twin(level)
    twin.install()
    top = 10_000
    counters = [top, top - 4032, top - 4033, top - 4032, top - 1, top + 64, top + 64 - 4032, top + 63 - 4032, 0]
    counters += [2**48 - 1, 2**48 - 1 - 4032, 2**48 - 2 - 4032, 2**48 - 1]  # the last counters a session has
    for counter in counters:
        twin.feed(crafted(level, counter=counter), T0, counter)


@pytest.mark.parametrize("level", LEVELS)
def test_both_sides_keep_a_window_per_key_index_and_one_per_session_for_session_messages(level):
    # At none there are no keys: one window per session takes everything (§3.2).
    twin = Twin(level)
    twin.install()
    twin.install(OTHER_SECRET, 1, confirmed=False)
    steps = [(ref.TYPE_FRAME, 0, 0, 7), (ref.TYPE_FRAME, 0, 1, 7), (ref.TYPE_FRAME, 0, 1, 7),
             (ref.TYPE_FRAME, 0, 0, 7), (ref.TYPE_SESSION, 0, 0, 7), (ref.TYPE_SESSION, 0, 9, 7),
             (ref.TYPE_SESSION, 0, 9, 8), (ref.TYPE_FRAME, 0, 0, 5000), (ref.TYPE_FRAME, 0, 1, 6),
             (ref.TYPE_FRAME, 0, 0, 967), (ref.TYPE_FRAME, 0, 0, 968), (ref.TYPE_FRAME, 1, 0, 7)]
    for ptype, session, key_index, counter in steps:
        secret = SECRET if session == 0 else OTHER_SECRET
        packet = crafted(level, secret, ptype, session=session, key_index=key_index, counter=counter)
        twin.feed(packet, T0, (ptype, session, key_index, counter))


@pytest.mark.parametrize("level", LEVELS)
def test_both_sides_expire_a_frame_only_when_its_first_fragment_is_more_than_the_timeout_old(level):
    sender = ref.Sender(level, index_root=ROOT)
    sender.set_session(SECRET)
    twin = Twin(level)
    twin.install()
    on_time, late = sender.seal(bytes(1518)), sender.seal(bytes(1518))
    twin.feed(on_time[0], T0)
    assert twin.feed(on_time[1], T0 + 1000)[1] == [(ref.TYPE_FRAME, bytes(1518))]
    twin.feed(late[0], T0 + 2000)
    assert twin.feed(late[1], T0 + 3001) == (None, [])
    _fast.reassembly_expire(twin.dp, T0 + 4002)
    twin.ref.expire(T0 + 4002)
    assert twin.dp.counters()["rx"]["frag_timeout"] == twin.ref.counters["frag_timeout"] == 2


CONTRADICTIONS = {
    "frag_count": dict(count=3, size=500),
    "frag_big": dict(big=1, count=2, size=500),
    "q": dict(count=2, size=499),
    "type": dict(ptype=ref.TYPE_FRAME_VNET, count=2, size=500),
    "key index": dict(count=2, size=500, key_index=1),
    "segment": dict(count=2, size=500, segment=1),
}


def contradicted(level, what):
    """A twin holding fragment 0 of a frame (base 100, key index 0), and fragment 1 contradicting it."""
    twin = Twin(level)
    twin.install()
    twin.feed(crafted(level, count=2, counter=100, size=500), T0)
    return twin, crafted(level, index=1, counter=101, **CONTRADICTIONS[what])


@pytest.mark.parametrize("what", [what for what in CONTRADICTIONS if what != "key index"])
@pytest.mark.parametrize("level", LEVELS)
def test_both_sides_find_fragments_that_contradict_the_first_one_held(level, what):
    twin, contradiction = contradicted(level, what)
    twin.feed(contradiction, T0, what)
    assert twin.ref.last_drop == "frag_inconsistent"
    twin.feed(contradiction, T0, what)  # authenticated, so step 6 saw its counter
    assert twin.ref.last_drop == "replay"


@pytest.mark.parametrize("level", KEYED)
def test_both_sides_find_a_fragment_under_another_key_index_inconsistent(level):
    twin, contradiction = contradicted(level, "key index")
    assert twin.dp.open(contradiction, T0) == twin.ref.open(contradiction, T0) == []
    assert twin.dp.last_drop == twin.ref.last_drop == "frag_inconsistent"


# Packets only a holder of the keys can make (a genuine sender never contradicts its own
# fragments) or, at none, anyone: state moves only after step 7 accepts the packet.

@pytest.mark.parametrize("level", KEYED)
def test_a_fragment_at_c_plus_1_dropped_at_step_7_does_not_move_c(level):
    twin, contradiction = contradicted(level, "key index")
    twin.feed(contradiction, T0)
    assert twin.ref.last_drop == "frag_inconsistent" and twin.dp.recv_index == 0


def test_at_level_none_fragments_under_different_key_indices_are_frag_inconsistent():
    twin, contradiction = contradicted(NONE, "key index")
    assert twin.feed(contradiction, T0) == ("frag_inconsistent", [])


@pytest.mark.parametrize("level", LEVELS)
def test_a_single_packet_frame_naming_the_base_of_a_held_frame_is_frag_inconsistent(level):
    twin = Twin(level)
    twin.install()
    twin.feed(crafted(level, index=1, count=2, counter=101, size=500), T0)
    twin.feed(crafted(level, counter=100, size=500), T0)
    assert twin.ref.last_drop == "frag_inconsistent"


@pytest.mark.parametrize("level", LEVELS)
def test_both_sides_drop_packets_of_another_level_and_before_any_session(level):
    for other in LEVELS:
        sender = ref.Sender(other, index_root=ROOT)
        sender.set_session(SECRET)
        packets = sender.seal(bytes(1518)) + sender.seal(bytes(100), ref.TYPE_SESSION)
        twin = Twin(level)
        for packet in packets:
            twin.feed(packet, T0)
        twin.install()
        for packet in packets:
            twin.feed(packet, T0)
        assert twin.ref.last_drop == (None if other == level else "level_mismatch")


# --- sessions and their roles (§5.2, §5.4) ---------------------------------------


def session_packet(level, secret, session_id, counter, ptype=ref.TYPE_FRAME, index=0):
    return crafted(level, secret, ptype, session=session_id, key_index=index, counter=counter)


@pytest.mark.parametrize("level", LEVELS)
def test_both_sides_confirm_a_waiting_session_with_its_first_authenticated_packet(level):
    twin = Twin(level)
    twin.install(SECRET, 1)
    twin.install(OTHER_SECRET, 2, index=7, confirmed=False)
    twin.check()
    if level != NONE:
        twin.feed(forged(session_packet(level, OTHER_SECRET, 2, 0, index=7)), T0, "forged")
        twin.feed(session_packet(level, OTHER_SECRET, 2, 0, index=9), T0, "not held")
    twin.feed(session_packet(level, OTHER_SECRET, 2, 1, index=8), T0, "confirms at c + 1")
    assert twin.ref.sessions()["current"] == (2, True)
    for counter, now in [(2, T0), (3, T0 + 9999), (4, T0 + 10_000)]:  # the replaced session: 10 s
        twin.feed(session_packet(level, SECRET, 1, counter), now, now)
    assert twin.ref.last_drop == "no_session"


@pytest.mark.parametrize("level", LEVELS)
def test_both_sides_confirm_with_a_session_message_and_with_a_first_fragment(level):
    for ptype, size, count in [(ref.TYPE_SESSION, 40, 1), (ref.TYPE_FRAME, 500, 3)]:
        twin = Twin(level)
        twin.install(OTHER_SECRET, 2, confirmed=False)
        twin.feed(crafted(level, OTHER_SECRET, ptype, index=count - 1, count=count, size=size, session=2,
                          counter=count), T0)
        assert twin.ref.sessions()["current"] == (2, True)


@pytest.mark.parametrize("level", LEVELS)
def test_both_sides_replace_a_waiting_session_and_drop_it_for_a_confirmed_one(level):
    twin = Twin(level)
    twin.install(SECRET, 1)
    twin.install(OTHER_SECRET, 2, confirmed=False)
    twin.install(FOREIGN_SECRET, 3, confirmed=False)
    twin.feed(session_packet(level, OTHER_SECRET, 2, 0), T0)
    twin.install(OTHER_SECRET, 4)
    twin.feed(session_packet(level, FOREIGN_SECRET, 3, 0), T0)
    twin.feed(session_packet(level, OTHER_SECRET, 4, 0), T0)
    twin.dp.drop_sessions()
    twin.ref.drop_sessions()
    twin.feed(session_packet(level, OTHER_SECRET, 4, 1), T0)
    assert twin.ref.last_drop == "no_session"


@pytest.mark.parametrize("level", KEYED)
def test_both_sides_look_an_id_up_in_current_then_next_then_previous(level):
    twin = Twin(level)
    twin.install(SECRET, 5)
    twin.feed(session_packet(level, SECRET, 5, 0), T0)
    twin.install(OTHER_SECRET, 6, confirmed=False)
    twin.feed(session_packet(level, OTHER_SECRET, 6, 0), T0)  # 6 current, 5 previous since T0
    twin.install(FOREIGN_SECRET, 5, confirmed=False)  # a waiting session under the previous one's id
    twin.feed(session_packet(level, SECRET, 5, 1), T0, "previous")  # next takes the id first: auth
    twin.install(FOREIGN_SECRET, 6, confirmed=False)  # and one under the current id
    twin.feed(session_packet(level, FOREIGN_SECRET, 6, 1), T0, "next")  # current takes it first: auth
    twin.feed(session_packet(level, OTHER_SECRET, 6, 2), T0, "current")


@pytest.mark.parametrize("level", LEVELS)
def test_a_frame_left_by_a_replaced_session_is_completed_by_no_other_and_expires_on_both_sides(level):
    twin = Twin(level)
    twin.install(SECRET, 1)
    old = ref.Sender(level, index_root=ROOT)
    old.set_session(SECRET, 1)
    first, second = old.seal(bytes(1518))
    twin.feed(first, T0)
    twin.install(SECRET, 1)  # the same secret and id, but a new session
    twin.feed(second, T0)  # the same base: a frame of its own
    assert len(twin.ref.reassembly) == 2
    twin.feed(b"", T0 + 1001)
    assert twin.ref.counters["frag_timeout"] == 2


@pytest.mark.parametrize("level", LEVELS)
def test_session_messages_are_handed_up_as_their_payload(level):
    sender = ref.Sender(level, index_root=ROOT)
    sender.set_session(SECRET, 3, 40)
    twin = Twin(level)
    twin.install(SECRET, 3, 40)
    message = bytes(range(256)) * 32  # 8192 bytes: the largest
    delivered = []
    for packet in reversed(sender.seal(message, ref.TYPE_SESSION)):
        delivered += twin.feed(packet, T0)[1]
    assert delivered == [(ref.TYPE_SESSION, message)]
    assert twin.dp.last_session == 3
