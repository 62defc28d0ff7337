"""The compiled datapath against tests/reference.py: identical datagrams, frames opened across, identical drops."""

# Two independent readings of docs/PROTOCOL.md meet here. Sending, they must produce
# the same bytes; receiving, every datagram of a stream must give the same verdict on
# both sides: the same drop reason, or the same frames. Control packets the datapath
# hands up whole are finished with _fast.open_control, as the control plane does.

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etun import _fast
from tests import reference as ref

LEVELS = (ref.LEVEL_NONE, ref.LEVEL_AUTH, ref.LEVEL_ENCRYPT)
NONE, AUTH, ENCRYPT = LEVELS
MAX_PACKETS = (320, 576, 800, 1400, 9000)
# The datapath's clock never moves back and starts at the real monotonic clock, so
# test clocks start far beyond it and only move forward.
T0 = 10**12
MATERIAL = bytes(range(256)) * 128
CTL_KEY = ref.control_key(ref.derive_prk(MATERIAL))
FOREIGN_CTL_KEY = ref.control_key(ref.derive_prk(bytes(32768)))
SECRET = bytes(range(32))
OLD_SECRET = bytes(range(32, 64))
FOREIGN_SECRET = bytes(range(64, 96))

SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large]
secrets = st.binary(min_size=32, max_size=32)
frame_lengths = st.one_of(
    st.integers(14, 1600),
    st.integers(14, 9216),
    st.sampled_from([14, 60, 759, 760, 1514, 1518, 1522, 9216, 65557]),
    st.integers(20000, 65557),  # GSO super-frames
)


@st.composite
def frames(draw):
    """(type, frame): an Ethernet frame of 14..9216 bytes or a GSO-sized one, as FRAME or FRAME_VNET."""
    frame_type = draw(st.sampled_from(ref.DATA_TYPES))
    length = draw(frame_lengths) + (ref.VNET_HDR_LEN if frame_type == ref.TYPE_FRAME_VNET else 0)
    return frame_type, random.Random(draw(st.integers(0, 2**32 - 1))).randbytes(length)


def crafted(level, secret, ptype=ref.TYPE_FRAME, big=0, index=0, count=1, key_index=0, counter=0, size=60):
    """A data packet with any header, tagged (except at none) with the right keys for its key index."""
    mac_key = None if level == NONE else ref.index_keys(secret, key_index)[1]
    header = ref.pack_header(level, ptype, big, index, count, key_index, counter)
    return ref.build_packet(level, mac_key, header, bytes(i % 256 for i in range(size)))


def forged(secret, key_index, counter, level=AUTH):
    """A packet under key_index with a wrong tag: it costs any derivation it needs, then fails."""
    packet = bytearray(crafted(level, secret, key_index=key_index, counter=counter))
    packet[-1] ^= 1
    return bytes(packet)


def open_in_extension(dp, datagram, now_ms):
    """(drop reason or None, items) from the datapath; a control packet is finished by _fast.open_control."""
    items = dp.open(datagram, now_ms)
    if items and items[0][0] in _fast.CONTROL_TYPES:
        assert dp.last_drop is None and items == [(datagram[0] & 15, bytes(datagram))]
        try:
            ptype, _, payload = _fast.open_control(dp.level, CTL_KEY, datagram)
        except _fast.Dropped as drop:
            dp.count_rx_drop(drop.reason)  # as the control plane does, so the counters compare
            return drop.reason, []
        return None, [(ptype, payload)]
    return dp.last_drop, items


class Twin:
    """A datapath receiver and a reference receiver, fed the same datagrams at the same times."""

    def __init__(self, level):
        self.level = level
        self.dp = _fast.Datapath(level)
        self.ref = ref.Receiver(level, ctl_key=CTL_KEY)

    def set_session(self, secret):
        self.dp.set_recv_session(secret)
        self.ref.set_session(secret)

    def feed(self, datagram, now_ms, what=""):
        """Open on both sides and insist on the same verdict, counters and current key index."""
        got = open_in_extension(self.dp, datagram, now_ms)
        delivered = self.ref.open(datagram, now_ms)
        want = (self.ref.last_drop, delivered)
        assert got == want, what
        counted = self.dp.counters()["rx"]
        assert {name: counted[name] for name in self.ref.counters} == self.ref.counters, what
        assert self.dp.recv_index == self.ref.current_index, what
        return got


# --- shared constants ---------------------------------------------------------


def test_the_extension_and_the_reference_agree_on_every_protocol_constant():
    assert (_fast.HEADER_LEN, _fast.TAG_LEN, _fast.VNET_HDR_LEN) == (ref.HEADER_LEN, ref.TAG_LEN, ref.VNET_HDR_LEN)
    assert (_fast.MIN_FRAME_LEN, _fast.MAX_FRAME_LEN) == (ref.FRAME_MIN_LEN, ref.FRAME_MAX_LEN)
    assert (_fast.MAX_PACKET_MIN, _fast.MAX_PACKET_MAX) == (ref.MAX_PACKET_MIN, ref.MAX_PACKET_MAX)
    assert (_fast.REPLAY_WINDOW, _fast.KEY_LOOKAHEAD) == (ref.REPLAY_WINDOW, ref.KEY_INDEX_AHEAD_MAX)
    assert (_fast.TYPE_FRAME, _fast.TYPE_FRAME_VNET) == ref.DATA_TYPES and _fast.CONTROL_TYPES == ref.CONTROL_TYPES
    assert set(ref.DROP_REASONS + ref.REASSEMBLY_LOSSES) <= set(_fast.DROP_REASONS)
    for level in LEVELS:
        for max_packet in range(ref.MAX_PACKET_MIN, ref.MAX_PACKET_MAX + 1):
            assert _fast.payload_max(level, max_packet) == ref.max_payload(level, max_packet)


# --- sending: byte-identical datagrams ----------------------------------------

send_steps = st.lists(
    st.one_of(
        frames().map(lambda f: ("seal", *f)),
        st.just(("rotate",)),
        st.tuples(st.just("session"), secrets, st.integers(0, 2**31)),
    ),
    min_size=1,
    max_size=10,
)


@settings(max_examples=150, deadline=None, suppress_health_check=SLOW)
@given(level=st.sampled_from(LEVELS), max_packet=st.sampled_from(MAX_PACKETS), secret=secrets, steps=send_steps)
def test_the_extension_seals_byte_identical_datagrams_across_rotations_and_sessions(level, max_packet, secret, steps):
    dp = _fast.Datapath(level, max_packet)
    sender = ref.Sender(level, max_packet)
    dp.set_send_session(secret)
    sender.set_session(secret)
    for step in steps:
        if step[0] == "seal":
            _, frame_type, frame = step
            assert dp.seal(frame, frame_type) == sender.seal(frame, frame_type), (frame_type, len(frame))
        elif step[0] == "rotate":
            dp.rotate_send()
            sender.rotate()
        else:
            _, new_secret, index = step
            dp.set_send_session(new_secret, index)
            sender.set_session(new_secret, index)  # the counter carries on, whatever the session
        assert (dp.send_counter, dp.send_index) == (sender.counter, sender.key_index)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("frame_type", ref.DATA_TYPES)
def test_both_sides_refuse_to_seal_frames_outside_their_types_limits_without_spending_a_counter(level, frame_type):
    dp = _fast.Datapath(level)
    sender = ref.Sender(level)
    dp.set_send_session(SECRET)
    sender.set_session(SECRET)
    low, high = ref.FRAME_LIMITS[frame_type]
    for length in (low - 1, high + 1):
        assert dp.seal(bytes(length), frame_type) == []
        with pytest.raises(ValueError):
            sender.seal(bytes(length), frame_type)
    assert dp.send_counter == sender.counter == 0
    assert dp.seal(bytes(high), frame_type) == sender.seal(bytes(high), frame_type)


# --- frames opened across -----------------------------------------------------


def seal_batch(seal, rotate, batch, rotate_after):
    """The datagrams of a batch of frames, with one key rotation after the first `rotate_after` frames."""
    packets = []
    for number, (frame_type, frame) in enumerate(batch):
        if number == rotate_after:
            rotate()
        packets += seal(frame, frame_type)
    return packets


crossing = dict(
    level=st.sampled_from(LEVELS),
    max_packet=st.sampled_from(MAX_PACKETS),
    secret=secrets,
    batch=st.lists(frames(), min_size=1, max_size=4),
    rotate_after=st.integers(0, 5),
    order=st.randoms(use_true_random=False),
)


@settings(max_examples=100, deadline=None, suppress_health_check=SLOW)
@given(**crossing)
def test_frames_sealed_by_the_extension_open_in_the_reference_in_any_fragment_order(
    level, max_packet, secret, batch, rotate_after, order
):
    dp = _fast.Datapath(level, max_packet)
    dp.set_send_session(secret)
    packets = seal_batch(dp.seal, dp.rotate_send, batch, rotate_after)
    order.shuffle(packets)
    receiver = ref.Receiver(level)
    receiver.set_session(secret)
    delivered = []
    for packet in packets:
        delivered += receiver.open(packet, T0)
        assert receiver.last_drop is None
    assert sorted(delivered) == sorted(batch)
    assert receiver.reassembly == {}


@settings(max_examples=100, deadline=None, suppress_health_check=SLOW)
@given(**crossing)
def test_frames_sealed_by_the_reference_open_in_the_extension_in_any_fragment_order(
    level, max_packet, secret, batch, rotate_after, order
):
    sender = ref.Sender(level, max_packet)
    sender.set_session(secret)
    packets = seal_batch(sender.seal, sender.rotate, batch, rotate_after)
    order.shuffle(packets)
    dp = _fast.Datapath(level, max_packet)
    dp.set_recv_session(secret)
    delivered = []
    for packet in packets:
        delivered += dp.open(packet, T0)
        assert dp.last_drop is None
    assert sorted(delivered) == sorted(batch)
    assert _fast.reassembly_in_use(dp) == 0


# --- receiving: the same verdict for every datagram of a stream ---------------
#
# A stream interleaves a genuine sender's frames (delivered late, reordered, replayed,
# truncated) with foreign, forged, other-level and control packets, key rotations and
# jumps ahead, counter jumps, session switches and the passing of time. Incomplete frames
# expire long before either reassembly table fills, as the two bound theirs differently.

frame_step = st.tuples(st.just("frame"), st.sampled_from(ref.DATA_TYPES), frame_lengths, st.integers(0, 2**32 - 1))
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
        st.tuples(st.just("forge"), st.integers(-3, 70), st.integers(0, 2**20)),
        st.tuples(st.just("other_level"), st.integers(0, 1)),
        st.tuples(st.just("rotate")),
        st.tuples(st.just("jump"), st.integers(2, 70)),
        st.tuples(st.just("tick"), st.integers(0, 400)),
        st.tuples(st.just("skip"), st.integers(1, 6000)),
        st.tuples(st.just("switch"), secrets),
        st.tuples(st.just("control"), st.integers(0, 2**32 - 1)),
    ),
    min_size=10,
    max_size=60,
)


def control_packet(level, rng):
    """A HELLO or PROBE: genuine, of another level, under another control key, tampered or cut short."""
    kind = rng.choice(["genuine", "other level", "other key", "tampered", "truncated"])
    sealed_level = rng.choice([lv for lv in LEVELS if lv != level]) if kind == "other level" else level
    key = FOREIGN_CTL_KEY if kind == "other key" else CTL_KEY
    payload = ref.encode_hello(sender=rng.randbytes(16), challenge=rng.randbytes(16), time_us=rng.getrandbits(32))
    ptype = rng.choice([ref.TYPE_HELLO, ref.TYPE_PROBE])
    packet = ref.seal_control(sealed_level, key, ptype, rng.getrandbits(64), payload)
    if kind == "tampered":
        flipped = bytearray(packet)
        flipped[rng.randrange(len(packet))] ^= 1 << rng.randrange(8)
        packet = bytes(flipped)
    if kind == "truncated":
        packet = packet[: rng.randrange(len(packet))]
    return packet


def run_stream(level, max_packet, steps):
    """Play the steps; every datagram they put on the wire gets the same verdict on both sides."""
    twin = Twin(level)
    secret = SECRET
    sender = ref.Sender(level, max_packet)
    sender.set_session(secret)
    twin.set_session(secret)
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
            _, frame_type, length, seed = step
            length += ref.VNET_HDR_LEN if frame_type == ref.TYPE_FRAME_VNET else 0
            in_flight += sender.seal(random.Random(seed).randbytes(length), frame_type)
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
            stranger = ref.Sender(level)
            stranger.set_session(FOREIGN_SECRET, max(0, sender.key_index + step[1]))
            stranger.counter = sender.counter
            feed(stranger.seal(bytes(100))[0], "foreign secret")
        elif kind == "forge" and level != NONE:
            feed(forged(secret, max(0, sender.key_index + step[1]), step[2], level), "forged tag")
        elif kind == "other_level":
            other = ref.Sender([lv for lv in LEVELS if lv != level][step[1]])
            other.set_session(secret, sender.key_index)
            feed(other.seal(bytes(200))[0], "other level")
        elif kind == "rotate":
            sender.rotate()
        elif kind == "jump":
            sender.set_session(secret, sender.key_index + step[1])
        elif kind == "tick":
            now += step[1]
        elif kind == "skip":
            sender.counter += step[1]
        elif kind == "switch":
            secret = step[1]
            twin.set_session(secret)
            sender.set_session(secret)
        elif kind == "control":
            feed(control_packet(level, random.Random(step[1])), "control")
    while in_flight:
        feed(in_flight.pop(0), "genuine, late")
    assert twin.dp.counters()["rx"]["frag_evicted"] == 0


@pytest.mark.parametrize("level", LEVELS)
@settings(max_examples=300, deadline=None, suppress_health_check=SLOW)
@given(max_packet=st.sampled_from(MAX_PACKETS), steps=stream_steps)
def test_every_datagram_of_a_mixed_stream_gets_the_same_verdict_on_both_sides(level, max_packet, steps):
    run_stream(level, max_packet, steps)


# --- receiving: the rules of §3.2 and §4.3 one at a time ------------------------


@pytest.mark.parametrize("level", [AUTH, ENCRYPT])
def test_both_sides_refill_the_derivation_bucket_one_token_per_125_ms(level):
    twin = Twin(level)
    twin.set_session(SECRET)
    stream = [(forged(SECRET, k, k, level), T0) for k in range(2, 12)]  # 8 derivations, then none
    real = crafted(level, SECRET, key_index=20, counter=100)
    stream += [(real, T0 + 124), (real, T0 + 125)]  # a token is back after exactly 125 ms
    stream += [(crafted(level, SECRET, key_index=k, counter=100 + k), T0 + 125) for k in (19, 21, 22, 24)]
    stream += [(crafted(level, SECRET, key_index=24, counter=200), T0 + 10_000)]
    stream += [(forged(SECRET, k, k, level), T0 + 10_000) for k in range(30, 40)]  # never more than 8 saved up
    reasons = [twin.feed(packet, now_ms)[0] for packet, now_ms in stream]
    assert reasons == ["auth"] * 8 + ["key_index"] * 2 + ["key_index", None] + [None, None, None, "key_index"] + [
        None
    ] + ["auth"] * 7 + ["key_index"] * 3
    assert twin.ref.current_index == 24


@pytest.mark.parametrize("level", [AUTH, ENCRYPT])
def test_both_sides_keep_on_demand_keys_until_a_derivation_for_another_index_replaces_them(level):
    twin = Twin(level)
    twin.set_session(SECRET)
    for counter in range(20):
        twin.feed(forged(SECRET, 10, counter, level), T0)  # one token, then the kept keys
    for key_index in (11, 10, 11, 10, 11, 10, 11):  # each one a derivation: 7 more tokens
        twin.feed(forged(SECRET, key_index, 0, level), T0)
    assert twin.ref.last_drop == "auth"
    twin.feed(forged(SECRET, 10, 1, level), T0)
    assert twin.ref.last_drop == "key_index"
    twin.feed(forged(SECRET, 11, 1, level), T0)  # the kept keys cost nothing
    assert twin.ref.last_drop == "auth"
    twin.feed(crafted(level, SECRET, key_index=1, counter=5), T0)  # promotion to next
    twin.feed(crafted(level, SECRET, key_index=11, counter=6), T0)  # kept keys survive it
    assert twin.ref.last_drop is None and twin.ref.current_index == 11


@pytest.mark.parametrize("level", [AUTH, ENCRYPT])
def test_both_sides_hold_previous_current_and_next_around_every_promotion(level):
    twin = Twin(level)
    twin.set_session(SECRET)
    steps = [(1, 0), (0, 1), (2, 2), (0, 3), (1, 4), (5, 5), (3, 6), (4, 7), (6, 8), (70, 9), (69, 10), (5, 11)]
    steps += [(69, 1000), (71, 1001), (70, 1002), (68, 1003), (135, 1004), (134, 1005), (133, 1006)]
    for key_index, counter in steps:
        twin.feed(crafted(level, SECRET, key_index=key_index, counter=counter), T0, (key_index, counter))


@pytest.mark.parametrize("level", LEVELS)
def test_both_sides_accept_counters_up_to_4032_below_the_highest_and_each_only_once(level):
    twin = Twin(level)
    twin.set_session(SECRET)
    top = 10_000
    for counter in [top, top - 4032, top - 4033, top - 4032, top - 1, top + 64, top + 64 - 4032, top + 63 - 4032, 0]:
        twin.feed(crafted(level, SECRET, counter=counter), T0, counter)


@pytest.mark.parametrize("level", [AUTH, ENCRYPT])
def test_both_sides_keep_a_replay_window_per_key_index(level):
    twin = Twin(level)
    twin.set_session(SECRET)
    for key_index, counter in [(0, 7), (1, 7), (1, 7), (0, 7), (0, 5000), (1, 6), (0, 967), (0, 968)]:
        twin.feed(crafted(level, SECRET, key_index=key_index, counter=counter), T0, (key_index, counter))


@pytest.mark.parametrize("level", LEVELS)
def test_both_sides_expire_a_frame_only_when_its_first_fragment_is_more_than_the_timeout_old(level):
    sender = ref.Sender(level)
    sender.set_session(SECRET)
    twin = Twin(level)
    twin.set_session(SECRET)
    on_time, late = sender.seal(bytes(1518)), sender.seal(bytes(1518))
    twin.feed(on_time[0], T0)
    assert twin.feed(on_time[1], T0 + 1000)[1] == [(ref.TYPE_FRAME, bytes(1518))]
    twin.feed(late[0], T0 + 2000)
    assert twin.feed(late[1], T0 + 3001) == (None, [])
    _fast.reassembly_expire(twin.dp, T0 + 4002)
    twin.ref.expire(T0 + 4002)
    assert twin.dp.counters()["rx"]["frag_timeout"] == twin.ref.counters["frag_timeout"] == 2


@pytest.mark.parametrize("level", [AUTH, ENCRYPT])
def test_both_sides_try_the_old_session_once_more_at_the_index_it_had(level):
    sender = ref.Sender(level)
    sender.set_session(OLD_SECRET, 5)
    twin = Twin(level)
    twin.set_session(OLD_SECRET)
    straggler = sender.seal(bytes(1518))
    twin.feed(straggler[0], T0)  # index 5 is derived on demand and becomes current
    twin.set_session(SECRET)
    twin.feed(straggler[1], T0)  # ahead for the new session: a token, a failed tag, then the old one
    assert twin.ref.last_drop is None
    others = [(4, OLD_SECRET), (6, OLD_SECRET), (5, FOREIGN_SECRET), (1, FOREIGN_SECRET), (80, OLD_SECRET)]
    for key_index, secret in others:  # only the old session's own index gets a second try
        twin.feed(crafted(level, secret, key_index=key_index, counter=50), T0, (key_index, secret))
    twin.feed(straggler[1], T0)
    assert twin.ref.last_drop == "replay"


@pytest.mark.parametrize("level", LEVELS)
def test_both_sides_find_fragments_that_contradict_the_first_one_held(level):
    contradictions = [
        dict(count=3, size=500),
        dict(big=1, count=2, size=500),
        dict(count=2, size=499),
        dict(ptype=ref.TYPE_FRAME_VNET, count=2, size=500),
    ]
    if level != NONE:  # at none key_index means nothing, also in step 7
        contradictions.append(dict(count=2, size=500, key_index=1))
    for arguments in contradictions:
        twin = Twin(level)
        twin.set_session(SECRET)
        twin.feed(crafted(level, SECRET, count=2, counter=100, size=500), T0)
        twin.feed(crafted(level, SECRET, index=1, counter=101, **arguments), T0, arguments)
        assert twin.ref.last_drop == "frag_inconsistent"


@pytest.mark.parametrize("level", LEVELS)
def test_both_sides_drop_packets_of_another_level_and_before_any_session(level):
    for other in LEVELS:
        sender = ref.Sender(other)
        sender.set_session(SECRET)
        packets = sender.seal(bytes(1518))
        twin = Twin(level)
        for packet in packets:
            twin.feed(packet, T0)
        twin.set_session(SECRET)
        for packet in packets:
            twin.feed(packet, T0)
        assert twin.ref.last_drop == (None if other == level else "level_mismatch")


# --- level none ignores key_index; single-packet frames and the old session -------


def test_at_level_none_the_key_index_is_ignored_so_the_same_counter_is_a_replay():
    twin = Twin(NONE)
    twin.set_session(b"")
    twin.feed(crafted(NONE, b"", key_index=0, counter=7), T0)
    twin.feed(crafted(NONE, b"", key_index=1, counter=7), T0)
    assert twin.ref.last_drop == "replay"


def test_at_level_none_fragments_under_different_key_indices_still_make_their_frame():
    twin = Twin(NONE)
    twin.set_session(b"")
    twin.feed(crafted(NONE, b"", count=2, counter=0, size=500, key_index=0), T0)
    twin.feed(crafted(NONE, b"", index=1, count=2, counter=1, size=500, key_index=1), T0)
    assert twin.ref.last_drop is None


@pytest.mark.parametrize("level", LEVELS)
def test_a_single_packet_frame_naming_the_base_of_a_held_frame_is_frag_inconsistent(level):
    twin = Twin(level)
    twin.set_session(SECRET)
    twin.feed(crafted(level, SECRET, index=1, count=2, counter=101, size=500), T0)
    twin.feed(crafted(level, SECRET, counter=100, size=500), T0)
    assert twin.ref.last_drop == "frag_inconsistent"


@pytest.mark.parametrize("level", [AUTH, ENCRYPT])
def test_an_empty_bucket_does_not_keep_the_old_session_from_its_second_try(level):
    twin = Twin(level)
    twin.set_session(OLD_SECRET)
    twin.feed(crafted(level, OLD_SECRET, key_index=5, counter=0), T0)
    twin.set_session(SECRET)
    for key_index in range(10, 17):  # the 7 tokens left
        twin.feed(forged(SECRET, key_index, key_index, level), T0)
    twin.feed(crafted(level, OLD_SECRET, key_index=5, counter=1), T0)
    assert twin.ref.last_drop is None


# --- control packets ------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    level=st.sampled_from(LEVELS),
    ptype=st.sampled_from(ref.CONTROL_TYPES),
    counter=st.integers(0, 2**64 - 1),
    payload=st.binary(max_size=300),
)
def test_control_packets_seal_byte_identically_and_open_the_same_on_both_sides(level, ptype, counter, payload):
    packet = _fast.seal_control(level, CTL_KEY, ptype, counter, payload)
    assert packet == ref.seal_control(level, CTL_KEY, ptype, counter, payload)
    assert _fast.open_control(level, CTL_KEY, packet) == ref.open_control(level, CTL_KEY, packet) == (
        ptype,
        counter,
        payload,
    )


def control_verdicts(level, key, packet):
    """(reason or None, opened) from _fast.open_control and from the reference's open_control."""
    try:
        extension = (None, _fast.open_control(level, key, packet))
    except _fast.Dropped as drop:
        extension = (drop.reason, None)
    try:
        reference = (None, ref.open_control(level, key, packet))
    except ValueError as drop:
        reference = (str(drop), None)
    return extension, reference


@pytest.mark.parametrize("level", LEVELS)
def test_every_bit_flip_cut_or_extension_of_a_hello_gets_the_same_verdict_at_every_receiving_level(level):
    hello = ref.seal_control(level, CTL_KEY, ref.TYPE_HELLO, 9, ref.encode_hello(site="berlin", flags=1))
    variants = [hello[:length] for length in range(len(hello))] + [hello + b"\0", hello + bytes(16)]
    for position in range(len(hello)):
        for bit in range(8):
            flipped = bytearray(hello)
            flipped[position] ^= 1 << bit
            variants.append(bytes(flipped))
    for receiving in LEVELS:
        for key in (CTL_KEY, FOREIGN_CTL_KEY):
            for packet in variants:
                extension, reference = control_verdicts(receiving, key, packet)
                assert extension == reference, packet.hex()


@settings(max_examples=200, deadline=None)
@given(
    level=st.sampled_from(LEVELS),
    nonces=st.lists(st.binary(min_size=16, max_size=16), min_size=5, max_size=5),
    times=st.lists(st.integers(0, 2**32 - 1), min_size=4, max_size=4),
    flags=st.integers(0, 255),
    site=st.text(max_size=32).filter(lambda s: "\0" not in s and len(s.encode()) <= 32),
    counter=st.integers(1, 2**64 - 1),
)
def test_hello_payloads_encoded_by_the_reference_travel_through_the_extension_intact(
    level, nonces, times, flags, site, counter
):
    fields = dict(zip(["sender", "challenge", "propose", "acc_sender", "acc_chal"], nonces, strict=True))
    fields.update(zip(["time_us", "echo_us", "held_us", "send_index"], times, strict=True), flags=flags, site=site)
    packet = _fast.seal_control(level, CTL_KEY, ref.TYPE_HELLO, counter, ref.encode_hello(**fields))
    dp = _fast.Datapath(level)
    assert dp.open(packet, T0) == [(ref.TYPE_HELLO, packet)]  # handed up whole, no session needed
    ptype, got_counter, payload = ref.open_control(level, CTL_KEY, packet)
    assert (ptype, got_counter) == (ref.TYPE_HELLO, counter)
    assert ref.decode_hello(payload) == fields
    from etun.session import Hello

    h = Hello.decode(payload)                                 # and etun's own decoder agrees
    assert (h.sender, h.send_index, h.site, h.time_us) == (
        fields["sender"], fields["send_index"], fields["site"], fields["time_us"])
