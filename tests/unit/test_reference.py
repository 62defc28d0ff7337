"""The pure-Python protocol reference against RFC vectors, the §2 fragmentation math, and the §3.2 drop table."""

import hashlib
import hmac
import os
import random
import re
import sys
from itertools import accumulate
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: reference.py and vectors.py

import reference as ref  # noqa: E402
import vectors  # noqa: E402

LEVELS = [ref.LEVEL_NONE, ref.LEVEL_AUTH, ref.LEVEL_ENCRYPT]
MAX_PACKETS = [320, 576, 800, 1400, 9000]

MATERIAL = bytes(range(256)) * 128  # 32768 bytes, fixed so known answers stay known
SENDER_NONCE = bytes(range(16))
CHALLENGE = bytes(range(16, 32))


def make_secret(level: int, seed: int = 0) -> bytes:
    """A session secret for the level: none needs none."""
    if level == ref.LEVEL_NONE:
        return b""
    rng = random.Random(seed)
    return ref.session_secret(ref.derive_prk(MATERIAL), rng.randbytes(16), rng.randbytes(16))


def make_known_secret(level: int) -> bytes:
    """session(SENDER_NONCE, CHALLENGE) of MATERIAL: the secret of the known-answer packets."""
    if level == ref.LEVEL_NONE:
        return b""
    return ref.session_secret(ref.derive_prk(MATERIAL), SENDER_NONCE, CHALLENGE)


def make_pair(level: int, max_packet: int = 800, seed: int = 0, **receiver_options):
    """A Sender and a Receiver sharing one session at key index 0."""
    secret = make_secret(level, seed)
    sender = ref.Sender(level, max_packet)
    sender.set_session(secret)
    receiver = ref.Receiver(level, **receiver_options)
    receiver.set_session(secret)
    return sender, receiver


def open_all(receiver, packets, now_ms=0):
    """Open each packet in turn; the frames completed and the drop reason of each."""
    frames, reasons = [], []
    for packet in packets:
        frames += receiver.open(packet, now_ms)
        reasons.append(receiver.last_drop)
    return frames, reasons


def stdlib_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand written out from RFC 5869 §2.3 with the standard library, as a second opinion."""
    block, out, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


# --- RFC vectors through the reference primitives ---------------------------


@pytest.mark.parametrize("vector", vectors.CHACHA20, ids=lambda v: v["name"])
def test_chacha20_matches_rfc_8439_vectors(vector):
    assert ref.chacha20(vector["key"], vector["nonce"], vector["plaintext"], vector["counter"]) == vector["ciphertext"]
    assert ref.chacha20(vector["key"], vector["nonce"], vector["ciphertext"], vector["counter"]) == vector["plaintext"]


@pytest.mark.parametrize("vector", vectors.HMAC_SHA256, ids=lambda v: v["name"])
def test_hmac_sha256_matches_rfc_4231_vectors(vector):
    assert ref.hmac_sha256(vector["key"], vector["data"])[: vector["truncate"]] == vector["mac"]


def test_rfc_4231_case_5_is_exactly_the_128_bit_tag_etun_uses():
    case5 = next(v for v in vectors.HMAC_SHA256 if v["truncate"] == 16)
    assert ref.compute_tag(case5["key"], case5["data"]) == case5["mac"]


@pytest.mark.parametrize("vector", vectors.HKDF_SHA256, ids=lambda v: v["name"])
def test_hkdf_sha256_matches_rfc_5869_vectors(vector):
    prk = ref.hkdf_extract(vector["salt"], vector["ikm"])
    assert prk == vector["prk"]
    assert ref.hkdf_expand(prk, vector["info"], vector["length"]) == vector["okm"]
    assert stdlib_expand(prk, vector["info"], vector["length"]) == vector["okm"]


# --- key schedule (§4.1) ----------------------------------------------------


def test_key_schedule_matches_protocol_md_written_out_with_the_standard_library():
    prk = hmac.new(b"etun/v1", MATERIAL, hashlib.sha256).digest()
    assert ref.derive_prk(MATERIAL) == prk
    assert ref.control_key(prk) == stdlib_expand(prk, b"etun/v1 control", 32)
    secret = stdlib_expand(prk, b"etun/v1 session" + SENDER_NONCE + CHALLENGE, 32)
    assert ref.session_secret(prk, SENDER_NONCE, CHALLENGE) == secret
    for index in (0, 1, 7, 2**32 - 1):
        keys = stdlib_expand(secret, b"etun/v1 index" + index.to_bytes(4, "big"), 64)
        assert ref.index_keys(secret, index) == (keys[:32], keys[32:])


def test_fingerprint_is_four_groups_of_four_lowercase_hex_digits_of_the_expanded_prk():
    prk = ref.derive_prk(MATERIAL)
    shown = ref.fingerprint(MATERIAL)
    assert re.fullmatch(r"[0-9a-f]{4}(-[0-9a-f]{4}){3}", shown)
    assert shown.replace("-", "") == stdlib_expand(prk, b"etun/v1 fingerprint", 8).hex()
    assert shown == "a282-73c5-2b42-a16c"  # pinned: a change here breaks every deployed pair


def test_session_secrets_differ_by_direction_and_challenge():
    prk = ref.derive_prk(MATERIAL)
    a_to_b = ref.session_secret(prk, SENDER_NONCE, CHALLENGE)
    assert ref.session_secret(prk, CHALLENGE, SENDER_NONCE) != a_to_b
    assert ref.session_secret(prk, SENDER_NONCE, bytes(16)) != a_to_b


def test_key_index_outside_32_bits_is_refused():
    with pytest.raises(ValueError):
        ref.index_keys(bytes(32), 2**32)
    with pytest.raises(ValueError):
        ref.index_keys(bytes(32), -1)


# --- known-answer packets (§1, §3.1) ----------------------------------------

# A 60-byte frame sealed under session(SENDER_NONCE, CHALLENGE) of MATERIAL at
# key index 7 with the sender's counter at 0x0102030405: one datagram each.
KNOWN_PACKETS = {
    ref.LEVEL_NONE: "41000001000000000000000102030405"
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f"
    "303132333435363738393a3b",
    ref.LEVEL_AUTH: "51000001000000070000000102030405"
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f"
    "303132333435363738393a3b"
    "fa826280243adda958c5ac784831e35c",
    ref.LEVEL_ENCRYPT: "61000001000000070000000102030405"
    "2fcc7edd3bacd143954737333b519db0475f59f83e6794ff66dc06f025ee7cd5e0fb51ea94f1c5625213bf5e29d2cd32"
    "04637e8614f3843fbd2cf9adea6e66ee"
    "99bdd4da777fd0c25e45bf23",
}


@pytest.mark.parametrize("level", LEVELS)
def test_a_sealed_frame_matches_a_packet_built_by_hand_from_protocol_md(level):
    frame = bytes(range(60))
    sender = ref.Sender(level)
    sender.set_session(make_known_secret(level), index=7)
    sender.counter = 0x0102030405
    (packet,) = sender.seal(frame)
    # byte 0: ver 1 (0x40) | lvl << 4 | type 1; frag_big 0, frag_index 0, frag_count 1.
    # At level none there are no keys and key_index stays 0 whatever the session says.
    key_index = 0 if level == ref.LEVEL_NONE else 7
    header = bytes([0x40 | level << 4 | 1, 0, 0, 1]) + key_index.to_bytes(4, "big") + (0x0102030405).to_bytes(8, "big")
    payload = frame
    if level != ref.LEVEL_NONE:
        keys = stdlib_expand(make_known_secret(level), b"etun/v1 index" + (7).to_bytes(4, "big"), 64)
        if level == ref.LEVEL_ENCRYPT:
            # cryptography's ChaCha20 takes block counter (4 bytes LE) || nonce; nonce = key_index || base.
            nonce16 = bytes(4) + header[4:16]
            payload = Cipher(algorithms.ChaCha20(keys[:32], nonce16), None).encryptor().update(frame)
        payload += hmac.new(keys[32:], header + payload, hashlib.sha256).digest()[:16]
    assert packet == header + payload
    assert packet.hex() == KNOWN_PACKETS[level]


# --- fragmentation math (§2) ------------------------------------------------


@pytest.mark.parametrize("max_packet", MAX_PACKETS)
@pytest.mark.parametrize("level", LEVELS)
def test_every_frame_length_splits_into_balanced_contiguous_fragments_below_max_packet(level, max_packet):
    overhead = ref.UDP_HEADER_LEN + ref.HEADER_LEN + ref.tag_len(level)
    largest = max_packet - 1 - overhead  # P: the biggest payload that keeps the datagram below max_packet
    for length in range(ref.FRAME_MIN_LEN, ref.FRAME_MAX_LEN + 1):
        offsets, sizes = zip(*ref.plan_fragments(length, level, max_packet), strict=True)
        count = len(sizes)
        assert sum(sizes) == length
        assert max(sizes) - min(sizes) <= 1
        assert min(sizes) >= 1
        assert offsets == tuple(accumulate(sizes, initial=0))[:-1]
        assert overhead + max(sizes) < max_packet, length  # 8 + 16 + payload + tag < max_packet
        assert (count - 1) * largest < length, length  # minimal: one fragment fewer cannot hold it
        assert count <= ref.MAX_FRAGMENTS
        # The bigger fragments come first, as frag_big = r says (§2).
        assert sizes == tuple(length // count + (1 if i < length % count else 0) for i in range(count))


@pytest.mark.parametrize("max_packet", [320, 800, 9000])
@pytest.mark.parametrize("level", LEVELS)
def test_a_receiver_derives_every_fragments_offset_and_the_frame_length_from_that_fragment_alone(level, max_packet):
    step = 1 if max_packet != 320 else 13  # 320 makes ~8M fragments per level; a stride keeps it quick
    for length in list(range(ref.FRAME_MIN_LEN, ref.FRAME_VNET_MAX_LEN + 1, step)) + [ref.FRAME_VNET_MAX_LEN]:
        plan = ref.plan_fragments(length, level, max_packet)
        count, big = len(plan), length % len(plan)
        for i, (offset, size) in enumerate(plan):
            q, derived_offset, derived_length = ref.fragment_geometry(i, count, big, size)
            assert (derived_offset, derived_length) == (offset, length)
            assert q == length // count


@pytest.mark.parametrize("level", [ref.LEVEL_AUTH, ref.LEVEL_ENCRYPT])
def test_1518_and_1514_byte_frames_take_exactly_two_datagrams_of_791_and_789_bytes_at_the_default(level):
    sender, _ = make_pair(level)
    assert [len(p) for p in sender.seal(bytes(1518))] == [791, 791]
    assert [len(p) for p in sender.seal(bytes(1514))] == [789, 789]
    assert ref.plan_fragments(1518, level, 800) == [(0, 759), (759, 759)]
    assert ref.plan_fragments(1514, level, 800) == [(0, 757), (757, 757)]


def test_1518_byte_frame_takes_two_datagrams_at_level_none_too():
    sender, _ = make_pair(ref.LEVEL_NONE)
    assert [len(p) for p in sender.seal(bytes(1518))] == [775, 775]


@pytest.mark.parametrize("level", LEVELS)
def test_the_largest_vnet_frame_fits_in_255_fragments_at_the_smallest_max_packet(level):
    assert len(ref.plan_fragments(ref.FRAME_VNET_MAX_LEN, level, ref.MAX_PACKET_MIN)) <= ref.MAX_FRAGMENTS


def test_plan_refuses_max_packet_outside_320_to_9000_and_empty_frames():
    for bad in (319, 9001):
        with pytest.raises(ValueError):
            ref.plan_fragments(1000, ref.LEVEL_AUTH, bad)
    with pytest.raises(ValueError):
        ref.plan_fragments(0, ref.LEVEL_AUTH, 800)


@pytest.mark.parametrize("level", LEVELS)
def test_sender_refuses_frames_outside_their_types_limits(level):
    sender, _ = make_pair(level)
    for frame_type, (low, high) in ref.FRAME_LIMITS.items():
        with pytest.raises(ValueError):
            sender.seal(bytes(low - 1), frame_type)
        with pytest.raises(ValueError):
            sender.seal(bytes(high + 1), frame_type)
    with pytest.raises(ValueError):
        sender.seal(bytes(100), ref.TYPE_HELLO)


# --- round trips (§2, §3) ---------------------------------------------------


@st.composite
def frames(draw):
    frame_type = draw(st.sampled_from(ref.DATA_TYPES))
    low, high = ref.FRAME_LIMITS[frame_type]
    length = draw(st.one_of(st.integers(low, 3000), st.integers(low, high), st.sampled_from([low, high, 1514, 1518])))
    return frame_type, random.Random(draw(st.integers(0, 2**32))).randbytes(length)


@settings(max_examples=60, deadline=None)
@given(
    level=st.sampled_from(LEVELS),
    max_packet=st.one_of(st.sampled_from(MAX_PACKETS), st.integers(ref.MAX_PACKET_MIN, ref.MAX_PACKET_MAX)),
    batch=st.lists(frames(), min_size=1, max_size=4),
    shuffle_seed=st.integers(0, 2**32),
)
def test_frames_survive_a_round_trip_at_every_level_whatever_the_order_of_their_fragments(
    level, max_packet, batch, shuffle_seed
):
    sender, receiver = make_pair(level, max_packet, seed=shuffle_seed)
    packets = [p for frame_type, frame in batch for p in sender.seal(frame, frame_type)]
    assert all(ref.UDP_HEADER_LEN + len(p) < max_packet for p in packets)
    random.Random(shuffle_seed).shuffle(packets)
    delivered, reasons = open_all(receiver, packets)
    assert reasons == [None] * len(packets)
    assert sorted(delivered) == sorted(batch)
    assert receiver.reassembly == {}


@pytest.mark.parametrize("level", [ref.LEVEL_AUTH, ref.LEVEL_ENCRYPT])
def test_the_payload_is_ciphertext_only_at_level_encrypt(level):
    sender, _ = make_pair(level)
    frame = bytes(range(200))
    (packet,) = sender.seal(frame)
    assert (packet[16:-16] == frame) == (level == ref.LEVEL_AUTH)


def test_the_counter_grows_across_frames_rotations_and_sessions_so_no_nonce_repeats():
    sender, _ = make_pair(ref.LEVEL_ENCRYPT)
    counters, nonces = [], set()
    for step in range(6):
        for packet in sender.seal(bytes(1518)):
            hdr = ref.parse_header(packet)
            counters.append(hdr.counter)
            nonces.add((sender.secret, hdr.key_index, hdr.base))
        if step % 2:
            sender.rotate()
        else:
            sender.set_session(make_secret(ref.LEVEL_ENCRYPT, seed=step % 4))  # seeds 0, 2, 0: a session comes back
    assert counters == list(range(12)) and sender.counter == 12
    assert len(nonces) == 6  # one (key, nonce) per frame, none repeated


# --- tampering: the §3.2 drop table -----------------------------------------
#
# The packet under test is fragment 1 of 2 of a 1518-byte FRAME, the second
# datagram a fresh sender emits at the default max_packet 800 (P = 759), so
#   byte 0      0x61 at encrypt (ver 1, lvl 2, type 1 FRAME), 0x51 at auth (lvl 1)
#   byte 1      frag_big   r = 0
#   byte 2      frag_index i = 1
#   byte 3      frag_count n = 2
#   bytes 4-7   key_index    = 0
#   bytes 8-15  counter      = 1 (base 0)
#   16..774     payload, 759 bytes;   775..790  tag
# and a fresh receiver holding the session at current index 0 (so previous:
# none, next: 1, derivable on demand: 2..64). Flipping one bit gives the
# reason of the first §3.2 check that fails. Step 1 judges the fragment fields
# by the length the fragment implies: s = 791 - 16 - tag_len(lvl of the packet),
# q = s - 1 if i < r else s, L = n*q + r, and L must be 14..65557 for a FRAME.


def header_bit_reason(level: int, byte: int, bit: int) -> str:
    """Why the packet above is dropped once bit `bit` (0 = least significant) of header byte `byte` flips."""
    if byte == 0:
        # bits 7-6 ver (01): either flip leaves ver 0 or 3 -> malformed.
        # bits 5-4 lvl: 10 (encrypt) -> bit 5 gives 00 none, bit 4 gives 11 invalid;
        #               01 (auth)    -> bit 5 gives 11 invalid, bit 4 gives 00 none.
        #   A packet claiming none has no tag, so s = 775, L = 2*775 = 1550: well formed,
        #   it only has the wrong level -> level_mismatch.
        # bits 3-0 type 0001 -> 1001 (9), 0101 (5 PROBE), 0011 (3), 0000 (0). 9, 3 and 0
        #   are unknown -> malformed; PROBE is a control type whose header must be one
        #   unfragmented datagram (frag_count 1), and this one says 2 -> malformed.
        none_bit = 5 if level == ref.LEVEL_ENCRYPT else 4
        return "level_mismatch" if bit == none_bit else "malformed"
    if byte == 1:
        # frag_big 0 -> 2**bit. r = 1 < n keeps the fragment plausible (i = 1 is not < r,
        # so q = 759, L = 1519) and only the tag can tell -> auth; r >= 2 = n -> malformed.
        return "auth" if bit == 0 else "malformed"
    if byte == 2:
        # frag_index 1 -> 0 (bit 0): fragment 0 of a 1518-byte frame, plausible -> auth;
        # any other bit gives i >= 3 >= n -> malformed.
        return "auth" if bit == 0 else "malformed"
    if byte == 3:
        # frag_count 2 -> 3, 0, 6, 10, 18, 34, 66, 130. n = 0 -> malformed. For the others
        # L = n * 759: up to 66 * 759 = 50094 fits a FRAME -> auth; 130 * 759 = 98670
        # exceeds 65557 -> malformed (step 1 holds L to the type's limits, §2).
        return {1: "malformed", 7: "malformed"}.get(bit, "auth")
    if 4 <= byte <= 7:
        # key_index 0 -> 2**(8 * (7 - byte) + bit). 1 is "next"; 2..64 are reachable
        # ahead (derived on demand; a fresh receiver's token bucket is full) and then
        # fail the tag -> auth; 128 and above are more than 64 ahead -> key_index.
        return "auth" if byte == 7 and bit <= 6 else "key_index"
    # counter 1 -> 1 ^ 2**k. Bit 0 of the last byte makes it 0 < frag_index 1, so
    # base would be negative -> malformed; every other flip leaves counter >= 1 -> auth.
    return "malformed" if (byte, bit) == (15, 0) else "auth"


def packet_under_test(level):
    sender, _ = make_pair(level)
    first, second = sender.seal(bytes(range(256)) * 5 + bytes(238))
    return first, second


@pytest.mark.parametrize("level", [ref.LEVEL_AUTH, ref.LEVEL_ENCRYPT])
def test_the_packet_under_test_has_the_header_the_tamper_table_assumes(level):
    _, packet = packet_under_test(level)
    assert len(packet) == 791
    assert packet[:16] == bytes([0x40 | level << 4 | 1, 0, 1, 2]) + bytes(4) + (1).to_bytes(8, "big")


@pytest.mark.parametrize("level", [ref.LEVEL_AUTH, ref.LEVEL_ENCRYPT])
def test_every_single_bit_flip_in_the_header_is_dropped_for_the_reason_protocol_md_implies(level):
    first, packet = packet_under_test(level)
    got, want = {}, {}
    for byte in range(ref.HEADER_LEN):
        for bit in range(8):
            _, receiver = make_pair(level)
            tampered = bytearray(packet)
            tampered[byte] ^= 1 << bit
            assert receiver.open(bytes(tampered)) == []
            got[byte, bit] = receiver.last_drop
            want[byte, bit] = header_bit_reason(level, byte, bit)
            assert receiver.counters[receiver.last_drop] == 1
            # A dropped packet leaves no trace: the genuine fragments still make the frame.
            assert receiver.current_index == 0 and receiver.reassembly == {}
            assert receiver.open(packet) == [] and receiver.last_drop is None
            assert len(receiver.open(first)) == 1
    assert got == want


@pytest.mark.parametrize("level", [ref.LEVEL_AUTH, ref.LEVEL_ENCRYPT])
def test_every_payload_and_tag_byte_tampered_is_dropped_as_auth(level):
    first, packet = packet_under_test(level)
    _, receiver = make_pair(level)
    for position in range(ref.HEADER_LEN, len(packet)):
        for flip in (0x01, 0x80, 0xFF):
            tampered = bytearray(packet)
            tampered[position] ^= flip
            assert receiver.open(bytes(tampered)) == []
            assert receiver.last_drop == "auth", (position, flip)
    assert receiver.counters["auth"] == 3 * (len(packet) - ref.HEADER_LEN)
    receiver.open(packet)
    assert receiver.open(first)[0][1] == bytes(range(256)) * 5 + bytes(238)


@pytest.mark.parametrize("level", [ref.LEVEL_AUTH, ref.LEVEL_ENCRYPT])
def test_truncated_or_extended_packets_are_malformed_until_they_imply_a_whole_frame_then_auth(level):
    _, packet = packet_under_test(level)
    _, receiver = make_pair(level)
    for length in range(len(packet) + 2):
        candidate = packet[:length] if length <= len(packet) else packet + bytes(length - len(packet))
        receiver.open(candidate)
        # Below 32 bytes there is no room for header and tag; at 32 the payload is
        # empty (q = 0); from 33 to 38 bytes L = 2 * s is below 14 bytes. From 39 on
        # the header describes a plausible frame, and the tag is what fails.
        if length == len(packet):
            assert receiver.last_drop is None
        elif length < 39:
            assert receiver.last_drop == "malformed", length
        else:
            assert receiver.last_drop == "auth", length


@pytest.mark.parametrize("level", LEVELS)
def test_a_packet_of_another_level_is_a_level_mismatch(level):
    for other in LEVELS:
        if other == level:
            continue
        sender, _ = make_pair(other)
        _, receiver = make_pair(level)
        for packet in sender.seal(bytes(1518)):
            receiver.open(packet)
            assert receiver.last_drop == "level_mismatch"


def test_step_1_judges_a_packet_by_the_layout_its_own_level_field_declares():
    # A 30-byte level-none packet is a well-formed 14-byte frame: at auth it is a
    # level_mismatch, not a packet too short for a tag.
    none_sender, _ = make_pair(ref.LEVEL_NONE)
    (small,) = none_sender.seal(bytes(14))
    assert len(small) == 30
    _, receiver = make_pair(ref.LEVEL_AUTH)
    receiver.open(small)
    assert receiver.last_drop == "level_mismatch"
    # A packet claiming auth must have room for its tag, whatever our level.
    _, receiver = make_pair(ref.LEVEL_NONE)
    receiver.open(ref.pack_header(ref.LEVEL_AUTH, ref.TYPE_FRAME, 0, 0, 1, 0, 0) + bytes(15))
    assert receiver.last_drop == "malformed"


@pytest.mark.parametrize("level", LEVELS)
def test_a_data_packet_before_any_session_is_no_session(level):
    sender, _ = make_pair(level)
    receiver = ref.Receiver(level)
    for packet in sender.seal(bytes(1518)):
        receiver.open(packet)
        assert receiver.last_drop == "no_session"


def crafted(level, secret, ptype=ref.TYPE_FRAME, big=0, index=0, count=1, key_index=0, counter=0, size=60, **kw):
    """A data packet with any header, tagged with the right keys for its key index."""
    mac_key = None if level == ref.LEVEL_NONE else ref.index_keys(secret, key_index)[1]
    header = ref.pack_header(kw.pop("claimed_level", level), ptype, big, index, count, key_index, counter, **kw)
    return ref.build_packet(level, mac_key, header, bytes(size))


MALFORMED_HEADERS = [
    # (what is wrong, crafted() arguments)
    ("version 0", dict(version=0)),
    ("version 2", dict(version=2)),
    ("version 3", dict(version=3)),
    ("level 3", dict(claimed_level=3)),
    ("type 0", dict(ptype=0)),
    ("type 3", dict(ptype=3)),
    ("type 7", dict(ptype=7)),
    ("type 15", dict(ptype=15)),
    ("frag_count 0", dict(count=0)),
    ("frag_index = frag_count", dict(index=2, count=2, counter=5)),
    ("frag_big = frag_count", dict(big=2, count=2)),
    ("q = 0 from an empty payload", dict(size=0)),
    ("q = 0 from one byte while i < r", dict(big=1, count=2, size=1)),
    ("counter below frag_index", dict(index=3, count=4, counter=2)),
    ("FRAME of 13 bytes", dict(size=13)),
    ("FRAME of 65558 bytes", dict(count=2, big=0, size=32779)),
    ("FRAME_VNET of 23 bytes", dict(ptype=ref.TYPE_FRAME_VNET, size=23)),
    ("FRAME_VNET of 65568 bytes", dict(ptype=ref.TYPE_FRAME_VNET, count=2, size=32784)),
    ("a HELLO that claims two fragments", dict(ptype=ref.TYPE_HELLO, count=2, size=128)),
    ("a PROBE under key index 1", dict(ptype=ref.TYPE_PROBE, key_index=1)),
]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", MALFORMED_HEADERS, ids=[c[0] for c in MALFORMED_HEADERS])
def test_impossible_headers_are_malformed_even_when_correctly_tagged(level, case):
    _, arguments = case
    secret = make_secret(level)
    receiver = ref.Receiver(level)
    receiver.set_session(secret)
    receiver.open(crafted(level, secret, **arguments))
    assert receiver.last_drop == "malformed"


@pytest.mark.parametrize("level", LEVELS)
def test_the_frame_limits_themselves_are_accepted(level):
    secret = make_secret(level)
    receiver = ref.Receiver(level)
    receiver.set_session(secret)
    for counter, arguments in enumerate(
        [dict(size=14), dict(ptype=ref.TYPE_FRAME_VNET, size=24), dict(count=8, big=5, size=8195)]
    ):
        receiver.open(crafted(level, secret, counter=counter * 2, **arguments))
        assert receiver.last_drop is None


def test_a_frame_beyond_its_types_limits_is_malformed_on_arrival_so_receiving_has_no_oversized_drop():
    # §3.2 step 1 holds the implied frame length to the limits; `oversized` counts only what cannot be sent.
    assert "oversized" not in ref.DROP_REASONS
    secret = make_secret(ref.LEVEL_AUTH)
    receiver = ref.Receiver(ref.LEVEL_AUTH)
    receiver.set_session(secret)
    receiver.open(crafted(ref.LEVEL_AUTH, secret, count=8, big=6, size=8195))  # q = 8194: L = 65558
    assert receiver.last_drop == "malformed"


@pytest.mark.parametrize("level", LEVELS)
def test_datagrams_shorter_than_header_and_tag_are_malformed(level):
    _, receiver = make_pair(level)
    for length in range(ref.HEADER_LEN + ref.tag_len(level)):
        receiver.open(bytes([0x41 | level << 4]) + bytes(max(0, length - 1)))
        assert receiver.last_drop == "malformed", length


# --- replay (§3.2, RFC 6479) ------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
def test_replaying_any_packet_of_a_flow_is_dropped_as_replay(level):
    sender, receiver = make_pair(level)
    packets = [p for length in (60, 1518, 9000, 65557) for p in sender.seal(os.urandom(length))]
    random.Random(1).shuffle(packets)
    frames, reasons = open_all(receiver, packets)
    assert reasons == [None] * len(packets) and len(frames) == 4
    _, reasons = open_all(receiver, packets)
    assert reasons == ["replay"] * len(packets)
    assert receiver.counters["replay"] == len(packets)


def test_a_duplicate_fragment_of_an_incomplete_frame_is_a_replay_and_does_not_disturb_reassembly():
    sender, receiver = make_pair(ref.LEVEL_ENCRYPT)
    frame = os.urandom(3000)
    packets = sender.seal(frame)
    _, reasons = open_all(receiver, [packets[1], packets[1], packets[0], packets[0]])
    assert reasons == [None, "replay", None, "replay"]
    _, reasons = open_all(receiver, packets[2:])
    assert receiver.last_drop is None


# Numbered like the kernel WireGuard replay self-test: each row offers one
# counter to a window that has seen the rows before it.
W = ref.REPLAY_WINDOW
REPLAY_TABLE = [
    (0, True),  # 1  the first counter is always fresh
    (1, True),  # 2
    (1, False),  # 3  duplicate
    (9, True),  # 4  a gap
    (8, True),  # 5  late but in the window
    (7, True),  # 6
    (7, False),  # 7  duplicate of a late one
    (W + 9, True),  # 8  jump: 9 is now exactly W behind
    (9, False),  # 9  W behind but already seen
    (8, False),  # 10 W + 1 behind: too old
    (10, True),  # 11 W - 1 behind, unseen
    (W + 8, True),  # 12 just below the highest
    (W + 8, False),  # 13
    (3 * W, True),  # 14 jump by more than the window
    (2 * W, True),  # 15 exactly W behind, unseen
    (2 * W - 1, False),  # 16 W + 1 behind
    (W + 9, False),  # 17 seen long ago and now too old as well
    (2**64 - 1, True),  # 18 the last counter there is
    (2**64 - 1 - W, True),  # 19
    (2**64 - 2 - W, False),  # 20
    (2**64 - 1, False),  # 21
]


def test_the_replay_window_accepts_and_refuses_each_counter_as_the_numbered_table_says():
    window = ref.ReplayWindow()
    for number, (counter, fresh) in enumerate(REPLAY_TABLE, start=1):
        assert window.is_fresh(counter) == fresh, f"row {number}"
        if fresh:
            window.mark(counter)


def test_the_receivers_window_accepts_4032_behind_the_highest_and_nothing_older():
    secret = make_secret(ref.LEVEL_AUTH)
    receiver = ref.Receiver(ref.LEVEL_AUTH)
    receiver.set_session(secret)
    for counter, reason in [(10_000, None), (10_000 - W, None), (10_000 - W - 1, "replay"), (10_000 - 1, None)]:
        receiver.open(crafted(ref.LEVEL_AUTH, secret, counter=counter))
        assert receiver.last_drop == reason, counter


def test_a_forged_packet_never_moves_the_replay_window():
    secret = make_secret(ref.LEVEL_AUTH)
    receiver = ref.Receiver(ref.LEVEL_AUTH)
    receiver.set_session(secret)
    forged = bytearray(crafted(ref.LEVEL_AUTH, secret, counter=1_000_000))
    forged[-1] ^= 1
    receiver.open(bytes(forged))
    assert receiver.last_drop == "auth"
    receiver.open(crafted(ref.LEVEL_AUTH, secret, counter=5))
    assert receiver.last_drop is None


def test_replay_windows_are_per_key_index():
    secret = make_secret(ref.LEVEL_AUTH)
    receiver = ref.Receiver(ref.LEVEL_AUTH)
    receiver.set_session(secret)
    for key_index, reason in [(0, None), (1, None), (1, "replay"), (0, "replay")]:
        receiver.open(crafted(ref.LEVEL_AUTH, secret, key_index=key_index, counter=7))
        assert receiver.last_drop == reason, (key_index, reason)


# --- fragments that disagree (§3.2 step 7) ----------------------------------


def test_fragments_of_a_frame_that_contradict_the_first_one_are_frag_inconsistent():
    secret = make_secret(ref.LEVEL_AUTH)
    first = crafted(ref.LEVEL_AUTH, secret, count=2, counter=100, size=500)
    contradictions = {
        "frag_count": dict(count=3, size=500),
        "frag_big": dict(big=1, count=2, size=500),
        "q": dict(count=2, size=499),
        "type": dict(ptype=ref.TYPE_FRAME_VNET, count=2, size=500),
        "key index": dict(count=2, size=500, key_index=1),
    }
    for what, arguments in contradictions.items():
        receiver = ref.Receiver(ref.LEVEL_AUTH)
        receiver.set_session(secret)
        receiver.open(first)
        assert receiver.last_drop is None
        receiver.open(crafted(ref.LEVEL_AUTH, secret, index=1, counter=101, **arguments))
        assert receiver.last_drop == "frag_inconsistent", what
        assert len(receiver.reassembly) == 1


@pytest.mark.parametrize("level", LEVELS)
def test_a_single_packet_frame_naming_the_base_of_a_held_frame_is_frag_inconsistent(level):
    # The frame is identified by its base (§2): a one-packet "frame" with counter 100
    # claims n = 1 for the frame whose fragment 1 (counter 101) says n = 2.
    secret = make_secret(level)
    receiver = ref.Receiver(level)
    receiver.set_session(secret)
    receiver.open(crafted(level, secret, index=1, count=2, counter=101, size=500))
    assert receiver.last_drop is None and len(receiver.reassembly) == 1
    assert receiver.open(crafted(level, secret, counter=100, size=500)) == []
    assert receiver.last_drop == "frag_inconsistent"


def test_at_level_none_fragments_under_different_key_indices_still_make_their_frame():
    # At level none key_index means nothing, so step 7 does not compare it (§3.2).
    receiver = ref.Receiver(ref.LEVEL_NONE)
    receiver.set_session(b"")
    receiver.open(crafted(ref.LEVEL_NONE, b"", count=2, counter=0, size=500, key_index=0))
    assert receiver.last_drop is None
    assert len(receiver.open(crafted(ref.LEVEL_NONE, b"", index=1, count=2, counter=1, size=500, key_index=1))) == 1
    assert receiver.last_drop is None


# --- key index rotation (§4.3) ----------------------------------------------


@pytest.mark.parametrize("level", [ref.LEVEL_AUTH, ref.LEVEL_ENCRYPT])
def test_after_a_rotation_the_next_index_opens_and_the_previous_one_still_does(level):
    sender, receiver = make_pair(level)
    before = sender.seal(os.urandom(1518))
    sender.rotate()
    after = sender.seal(os.urandom(1518))
    frames, reasons = open_all(receiver, after[:1] + before + after[1:])
    assert reasons == [None] * 4 and len(frames) == 2
    assert receiver.current_index == 1
    # Index 0 is now "previous": accepted during the overlap, until the sender moves on again.
    sender.rotate()
    sender.rotate()
    (late,) = sender.seal(os.urandom(100))
    assert ref.parse_header(late).key_index == 3
    receiver.open(late)
    assert receiver.last_drop is None and receiver.current_index == 3


@pytest.mark.parametrize("level", [ref.LEVEL_AUTH, ref.LEVEL_ENCRYPT])
def test_an_index_64_ahead_opens_and_65_ahead_is_key_index(level):
    secret = make_secret(level)
    sender, receiver = make_pair(level)
    sender.set_session(secret, index=65)
    receiver.open(sender.seal(bytes(60))[0])
    assert receiver.last_drop == "key_index" and receiver.current_index == 0
    sender.set_session(secret, index=64)
    assert receiver.open(sender.seal(bytes(60))[0])[0][1] == bytes(60)
    assert receiver.current_index == 64
    # Now 63 is previous, 65 next, and index 0 is out of reach.
    sender.set_session(secret, index=0)
    receiver.open(sender.seal(bytes(60))[0])
    assert receiver.last_drop == "key_index"
    for index in (63, 65, 128):
        sender.set_session(secret, index=index)
        receiver.open(sender.seal(bytes(60))[0])
        assert receiver.last_drop is None, index


def forged_under(secret, key_index, counter):
    """A packet under key_index whose tag is wrong: it costs the receiver any derivation it needs, then fails."""
    packet = bytearray(crafted(ref.LEVEL_AUTH, secret, key_index=key_index, counter=counter))
    packet[-1] ^= 1
    return bytes(packet)


def test_the_token_bucket_allows_8_derivations_at_once_and_one_more_every_125_ms():
    bucket = ref.TokenBucket()
    assert [bucket.take(5000) for _ in range(9)] == [True] * 8 + [False]
    assert not bucket.take(5124)  # 124 ms of refill: 0.992 of a token
    assert bucket.take(5125)  # the refill is continuous: exactly one token after 125 ms
    assert not bucket.take(5125)
    assert [bucket.take(60_000) for _ in range(9)] == [True] * 8 + [False]  # never more than 8 saved up


def test_a_fresh_receiver_derives_8_indices_ahead_at_once_then_one_per_125_ms():
    secret = make_secret(ref.LEVEL_AUTH)
    receiver = ref.Receiver(ref.LEVEL_AUTH)
    receiver.set_session(secret)
    forged = [forged_under(secret, k, k) for k in range(2, 12)]
    _, reasons = open_all(receiver, forged, now_ms=5000)
    assert reasons == ["auth"] * 8 + ["key_index"] * 2
    # Held indices cost no derivation, so the real peer still gets through.
    receiver.open(crafted(ref.LEVEL_AUTH, secret, key_index=1, counter=1), 5100)
    assert receiver.last_drop is None and receiver.current_index == 1
    # Index 1 is current now and 2 is "next", held; 11 still needs a derivation.
    receiver.open(forged[0], 5100)
    assert receiver.last_drop == "auth"
    receiver.open(forged[-1], 5124)
    assert receiver.last_drop == "key_index"
    receiver.open(forged[-1], 5125)  # one token is back 125 ms after the bucket ran dry
    assert receiver.last_drop == "auth"


def test_keys_derived_on_demand_are_kept_for_further_packets_under_the_same_index():
    secret = make_secret(ref.LEVEL_AUTH)
    receiver = ref.Receiver(ref.LEVEL_AUTH)
    receiver.set_session(secret)
    _, reasons = open_all(receiver, [forged_under(secret, 10, k) for k in range(50)], now_ms=0)
    assert reasons == ["auth"] * 50  # one derivation, 49 reuses
    assert receiver.bucket.tokens == 7
    # A derivation for another index replaces them: index 10 costs a token again.
    _, reasons = open_all(receiver, [forged_under(secret, 11, 0), forged_under(secret, 10, 0)], now_ms=0)
    assert reasons == ["auth", "auth"] and receiver.bucket.tokens == 5


def test_a_real_packet_ahead_is_refused_while_the_bucket_is_empty_and_opens_once_a_token_is_back():
    secret = make_secret(ref.LEVEL_AUTH)
    receiver = ref.Receiver(ref.LEVEL_AUTH)
    receiver.set_session(secret)
    _, reasons = open_all(receiver, [forged_under(secret, k, k) for k in range(2, 10)], now_ms=0)
    assert reasons == ["auth"] * 8
    real = crafted(ref.LEVEL_AUTH, secret, key_index=10, counter=100)
    receiver.open(real, 124)
    assert receiver.last_drop == "key_index"
    receiver.open(real, 125)
    assert receiver.last_drop is None and receiver.current_index == 10


@pytest.mark.parametrize("level", [ref.LEVEL_AUTH, ref.LEVEL_ENCRYPT])
def test_a_promotion_holds_the_indices_around_the_new_one_at_no_cost_in_tokens(level):
    secret = make_secret(level)
    receiver = ref.Receiver(level)
    receiver.set_session(secret)
    receiver.open(crafted(level, secret, key_index=40, counter=0), 0)
    assert receiver.last_drop is None and receiver.current_index == 40
    assert receiver.bucket.tokens == 7  # index 40 was derived on demand; 39 and 41 came free
    for key_index, counter in [(39, 1), (41, 2)]:
        receiver.open(crafted(level, secret, key_index=key_index, counter=counter), 0)
        assert receiver.last_drop is None, key_index
    assert receiver.current_index == 41 and receiver.bucket.tokens == 7
    # 41 is current: 40 previous, 42 next; 39 is behind the previous index and out of reach.
    receiver.open(crafted(level, secret, key_index=39, counter=3), 0)
    assert receiver.last_drop == "key_index"


def test_on_demand_keys_survive_a_promotion_to_next_while_their_index_is_still_ahead():
    secret = make_secret(ref.LEVEL_AUTH)
    receiver = ref.Receiver(ref.LEVEL_AUTH)
    receiver.set_session(secret)
    receiver.open(forged_under(secret, 5, 0), 0)
    receiver.open(crafted(ref.LEVEL_AUTH, secret, key_index=1, counter=1), 0)
    assert receiver.current_index == 1 and receiver.bucket.tokens == 7
    receiver.open(crafted(ref.LEVEL_AUTH, secret, key_index=5, counter=2), 0)
    assert receiver.last_drop is None and receiver.bucket.tokens == 7


def test_level_none_accepts_any_key_index_without_a_derivation_budget():
    sender, receiver = make_pair(ref.LEVEL_NONE)
    for index in (0, 1, 2, 20, 84, 148, 148 + 65, 2**32 - 1, 3, 0):
        sender.set_session(b"", index=index)
        receiver.open(sender.seal(bytes(60))[0])
        assert receiver.last_drop is None, index
    assert receiver.bucket.tokens == 8


def test_level_none_still_removes_duplicates_with_one_replay_window_per_session():
    _, receiver = make_pair(ref.LEVEL_NONE)
    for key_index, counter, reason in [(0, 7, None), (0, 7, "replay"), (5, 7, "replay"), (5, 8, None), (0, 4041, None)]:
        receiver.open(crafted(ref.LEVEL_NONE, b"", key_index=key_index, counter=counter))
        assert receiver.last_drop == reason, (key_index, counter)
    receiver.open(crafted(ref.LEVEL_NONE, b"", key_index=5, counter=8))
    assert receiver.last_drop == "replay"  # 4033 below the highest, whatever the key index


# --- sessions (§4.2) --------------------------------------------------------


@pytest.mark.parametrize("level", [ref.LEVEL_AUTH, ref.LEVEL_ENCRYPT])
def test_the_old_session_stays_usable_until_the_next_switch(level):
    old_secret, new_secret, newest_secret = (make_secret(level, seed) for seed in (1, 2, 3))
    sender = ref.Sender(level)
    sender.set_session(old_secret)
    in_flight = sender.seal(os.urandom(1518))
    sender.set_session(new_secret)
    fresh = sender.seal(os.urandom(1518))
    receiver = ref.Receiver(level)
    receiver.set_session(old_secret)
    receiver.set_session(new_secret)
    frames, reasons = open_all(receiver, [fresh[0], in_flight[0], fresh[1], in_flight[1]])
    assert reasons == [None] * 4 and len(frames) == 2
    straggler = sender.seal(os.urandom(60))
    sender.set_session(old_secret)
    ancient = sender.seal(os.urandom(60))
    receiver.set_session(newest_secret)
    open_all(receiver, straggler)
    assert receiver.last_drop is None  # new_secret is now the old session
    open_all(receiver, ancient)
    assert receiver.last_drop == "auth"  # old_secret is gone; index 0 is held, so the tag decides


def test_the_old_session_is_tried_only_under_the_key_index_it_had_when_replaced():
    old, new, stranger = (make_secret(ref.LEVEL_AUTH, seed) for seed in (1, 2, 3))
    receiver = ref.Receiver(ref.LEVEL_AUTH)
    receiver.set_session(old)
    receiver.open(crafted(ref.LEVEL_AUTH, old, key_index=64, counter=0))
    receiver.open(crafted(ref.LEVEL_AUTH, old, key_index=100, counter=1))
    assert receiver.current_index == 100
    receiver.set_session(new)
    assert receiver.current_index == 0
    cases = [
        (old, 100, None),  # the old session's index: the second try succeeds
        (old, 99, "key_index"),  # was "previous" of the old session, which keeps only its current index
        (old, 101, "key_index"),  # ... and not its "next" either
        (stranger, 100, "auth"),  # out of the new session's reach; the old one has it, and the tag fails
        (stranger, 200, "key_index"),  # neither session has or may derive it
        (stranger, 1, "auth"),  # held by the new session only: its tag decides
    ]
    for counter, (secret, key_index, reason) in enumerate(cases, start=2):
        receiver.open(crafted(ref.LEVEL_AUTH, secret, key_index=key_index, counter=counter))
        assert receiver.last_drop == reason, (key_index, reason)
    assert receiver.current_index == 0  # a packet of the old session never moves the new one


def old_session_at_index_5():
    """A receiver whose old session got to key index 5 (one token spent) before a new one
    replaced it: (receiver, old secret, new secret)."""
    old, new = make_secret(ref.LEVEL_AUTH, 1), make_secret(ref.LEVEL_AUTH, 2)
    receiver = ref.Receiver(ref.LEVEL_AUTH)
    receiver.set_session(old)
    receiver.open(crafted(ref.LEVEL_AUTH, old, key_index=5, counter=0), 0)
    receiver.set_session(new)
    return receiver, old, new


def test_an_old_session_packet_whose_index_is_ahead_in_the_new_session_spends_no_token():
    receiver, old, _ = old_session_at_index_5()
    assert receiver.bucket.tokens == 7
    # Index 5 is ahead for the new session, but the old session holds it and its tag verifies
    # there: nothing is derived (§4.3).
    receiver.open(crafted(ref.LEVEL_AUTH, old, key_index=5, counter=1), 0)
    assert receiver.last_drop is None and receiver.bucket.tokens == 7 and receiver.current_index == 0
    # A forgery under index 5 fails the old session's tag, then costs a derivation as before.
    receiver.open(forged_under(old, 5, 2), 0)
    assert receiver.last_drop == "auth" and receiver.bucket.tokens == 6


def test_an_empty_bucket_does_not_keep_the_old_session_from_its_second_try():
    # §3.2: a packet failing step 4 or 5 under the current session is tried once more
    # against the old one if that holds its key index; trying held keys derives nothing.
    receiver, old, new = old_session_at_index_5()
    open_all(receiver, [forged_under(new, k, k) for k in range(10, 17)], now_ms=0)
    assert receiver.bucket.tokens == 0
    receiver.open(crafted(ref.LEVEL_AUTH, old, key_index=5, counter=1), 0)
    assert receiver.last_drop is None
    receiver.open(forged_under(old, 5, 2), 0)
    assert receiver.last_drop == "auth"


# --- reassembly (§3.4) ------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
def test_a_frame_whose_first_fragment_is_older_than_the_timeout_is_discarded(level):
    sender, receiver = make_pair(level, reassembly_timeout_ms=1000)
    frame = os.urandom(1518)
    on_time, late = sender.seal(frame), sender.seal(frame)
    receiver.open(on_time[0], now_ms=10_000)
    assert receiver.open(on_time[1], now_ms=11_000) == [(ref.TYPE_FRAME, frame)]  # exactly the timeout: kept
    receiver.open(late[0], now_ms=20_000)
    assert receiver.open(late[1], now_ms=21_001) == []
    assert receiver.last_drop is None  # the late fragment itself was fine
    assert receiver.counters["frag_timeout"] == 1
    assert len(receiver.reassembly) == 1  # the late fragment waits for a partner that is gone
    receiver.expire(now_ms=22_002)
    assert receiver.reassembly == {} and receiver.counters["frag_timeout"] == 2


@pytest.mark.parametrize("level", LEVELS)
def test_a_full_reassembly_table_evicts_the_oldest_incomplete_frame(level):
    sender, receiver = make_pair(level, max_frames_in_reassembly=3)
    split = [sender.seal(os.urandom(1518)) for _ in range(4)]
    for now_ms, packets in enumerate(split):
        receiver.open(packets[0], now_ms)
    assert receiver.counters["frag_evicted"] == 1 and len(receiver.reassembly) == 3
    assert receiver.open(split[0][1], 10) == []  # its first half was evicted
    assert receiver.counters["frag_evicted"] == 2  # ...and starting it again pushed out frame 1
    assert receiver.open(split[3][1], 10) != []
    assert receiver.open(split[2][1], 10) != []


# --- control packets (§5) ---------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
def test_control_packets_round_trip_and_carry_the_fixed_header(level):
    ctl = ref.control_key(ref.derive_prk(MATERIAL))
    payload = ref.encode_hello(sender=SENDER_NONCE, challenge=CHALLENGE, site="berlin")
    packet = ref.seal_control(level, ctl, ref.TYPE_HELLO, 1, payload)
    assert len(packet) == 16 + ref.HELLO_LEN + ref.tag_len(level)
    assert packet[:16] == bytes([0x44 | level << 4, 0, 0, 1, 0, 0, 0, 0]) + (1).to_bytes(8, "big")
    assert packet[16 : 16 + ref.HELLO_LEN] == payload  # control payloads are never encrypted
    assert ref.open_control(level, ctl, packet) == (ref.TYPE_HELLO, 1, payload)


@pytest.mark.parametrize("level", [ref.LEVEL_AUTH, ref.LEVEL_ENCRYPT])
def test_a_control_packet_under_another_key_or_tampered_is_auth(level):
    ctl = ref.control_key(ref.derive_prk(MATERIAL))
    other = ref.control_key(ref.derive_prk(bytes(32768)))
    packet = ref.seal_control(level, ctl, ref.TYPE_PROBE, 9, b"probe")
    with pytest.raises(ValueError, match="^auth$"):
        ref.open_control(level, other, packet)
    for position in range(ref.HEADER_LEN, len(packet)):
        tampered = bytearray(packet)
        tampered[position] ^= 0x10
        with pytest.raises(ValueError, match="^auth$"):
            ref.open_control(level, ctl, bytes(tampered))


def test_open_control_checks_structure_then_level_then_tag():
    ctl = ref.control_key(ref.derive_prk(MATERIAL))
    hello = ref.seal_control(ref.LEVEL_AUTH, ctl, ref.TYPE_HELLO, 1, bytes(128))
    with pytest.raises(ValueError, match="^level_mismatch$"):
        ref.open_control(ref.LEVEL_ENCRYPT, ctl, hello)
    with pytest.raises(ValueError, match="^malformed$"):
        ref.open_control(ref.LEVEL_AUTH, ctl, hello[:31])
    sender, _ = make_pair(ref.LEVEL_AUTH)
    with pytest.raises(ValueError, match="^malformed$"):
        ref.open_control(ref.LEVEL_AUTH, ctl, sender.seal(bytes(60))[0])  # a data packet
    with pytest.raises(ValueError):
        ref.seal_control(ref.LEVEL_AUTH, ctl, ref.TYPE_FRAME, 1, b"")


def test_the_receiver_hands_up_control_packets_checked_with_the_control_key():
    ctl = ref.control_key(ref.derive_prk(MATERIAL))
    hello = ref.seal_control(ref.LEVEL_ENCRYPT, ctl, ref.TYPE_HELLO, 3, bytes(128))
    receiver = ref.Receiver(ref.LEVEL_ENCRYPT, ctl_key=ctl)
    assert receiver.open(hello) == [(ref.TYPE_HELLO, bytes(128))]  # no session needed
    assert receiver.last_drop is None
    receiver = ref.Receiver(ref.LEVEL_ENCRYPT)
    assert receiver.open(hello) == [] and receiver.last_drop == "auth"


def test_hello_fields_sit_at_the_offsets_of_protocol_md():
    fields = dict(
        sender=bytes([1]) * 16,
        challenge=bytes([2]) * 16,
        propose=bytes([3]) * 16,
        acc_sender=bytes([4]) * 16,
        acc_chal=bytes([5]) * 16,
        time_us=0x01020304,
        echo_us=0xFFFFFFFF,
        held_us=7,
        send_index=0x0A0B0C0D,
        flags=ref.HELLO_FLAG_ANSWER,
        site="münchen",
    )
    payload = ref.encode_hello(**fields)
    assert len(payload) == ref.HELLO_LEN
    assert payload[:80] == b"".join(bytes([k]) * 16 for k in range(1, 6))
    assert payload[80:92] == bytes.fromhex("01020304" "ffffffff" "00000007")
    assert payload[92:96] == b"\x01\x00\x00\x00"
    assert payload[96:100] == bytes.fromhex("0a0b0c0d")
    assert payload[100:] == "münchen".encode() + bytes(32 - len("münchen".encode()))
    assert ref.decode_hello(payload) == fields


def test_hello_defaults_are_zeros_meaning_none():
    assert ref.encode_hello() == bytes(132)
    assert ref.decode_hello(bytes(132))["propose"] == bytes(16)


@pytest.mark.parametrize(
    "bad",
    [dict(sender=bytes(15)), dict(time_us=2**32), dict(held_us=-1), dict(send_index=2**32), dict(flags=256), dict(site="x" * 33), dict(site="a\0b")],
)
def test_hello_fields_that_do_not_fit_are_refused(bad):
    with pytest.raises(ValueError):
        ref.encode_hello(**bad)


def test_a_hello_payload_of_the_wrong_length_or_a_broken_site_name_is_malformed():
    for payload in (bytes(127), bytes(129), bytes(96) + b"\xff" + bytes(31)):
        with pytest.raises(ValueError, match="^malformed$"):
            ref.decode_hello(payload)
