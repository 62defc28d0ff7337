"""The pure-Python protocol reference against RFC vectors and the protocol's own rules.

The pure-Python protocol reference against RFC vectors, the §4 key schedule, the §2 fragmentation
math, the §3.2 drop table, and the session roles and key indices of §4.2 and §5.2."""

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
KEYED = [ref.LEVEL_AUTH, ref.LEVEL_ENCRYPT]
MAX_PACKETS = [320, 576, 800, 1400, 9000]

MATERIAL = bytes(range(256)) * 128  # 32768 bytes, fixed so known answers stay known
SECRET = bytes(range(32))  # a session secret S
ROOT = bytes(range(32, 64))  # an index root
SESSION_MESSAGE = bytes.fromhex("01010000" "00000001" "00000000" "00000000" "0105" "6265726c696e")  # §6, "berlin"


def make_secret(seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(32)


def make_pair(level: int, max_packet: int = 800, seed: int = 0, session_id: int = 0, index: int = 0,
              **receiver_options):
    """A Sender and a Receiver sharing one confirmed session."""
    secret = make_secret(seed)
    sender = ref.Sender(level, max_packet, ROOT)
    sender.set_session(secret, session_id, index)
    receiver = ref.Receiver(level, ROOT, **receiver_options)
    receiver.install(secret, session_id, index)
    return sender, receiver


def receiver_with(level, secret=SECRET, session_id=0, index=0, **options):
    receiver = ref.Receiver(level, ROOT, **options)
    receiver.install(secret, session_id, index)
    return receiver


def crafted(level, secret=SECRET, ptype=ref.TYPE_FRAME, big=0, index=0, count=1, size=60, claimed_level=None,
            **header):
    """A packet with any header, tagged with the right keys for its type and key index."""
    hdr = ref.pack_header(level if claimed_level is None else claimed_level, ptype, big=big, index=index,
                          count=count, **header)
    mac_key = None
    if level != ref.LEVEL_NONE:
        if ptype == ref.TYPE_SESSION:
            mac_key = ref.control_keys(secret)[1]
        else:
            mac_key = ref.data_keys(secret, ROOT, header.get("key_index", 0))[1]
    return ref.build_packet(level, mac_key, hdr, bytes(size))


def forged(packet: bytes) -> bytes:
    """The packet with its last byte (the tag's, at auth and encrypt) flipped."""
    return packet[:-1] + bytes([packet[-1] ^ 1])


def open_all(receiver, packets, now_ms=None):
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


def stdlib_data_keys(secret: bytes, root: bytes, index: int) -> bytes:
    """§4.2's data keys(i) with the standard library: 64 bytes, enc_key || mac_key."""
    index_secret = stdlib_expand(root, b"etun/v2 index" + index.to_bytes(4, "big"), 32)
    return stdlib_expand(hmac.new(secret, index_secret, hashlib.sha256).digest(), b"etun/v2 data", 64)


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


# --- key schedule (§4) ------------------------------------------------------


def test_static_keys_match_protocol_md_written_out_with_the_standard_library():
    prk = hmac.new(b"etun/v1", MATERIAL, hashlib.sha256).digest()
    assert ref.derive_prk(MATERIAL) == prk
    keys = ref.static_keys(prk)
    for name, label in [("psk", b"psk"), ("mac1_key", b"mac1"), ("cookie_key", b"cookie"),
                        ("probe_key", b"probe"), ("index_root", b"index root")]:
        assert getattr(keys, name) == stdlib_expand(prk, b"etun/v2 " + label, 32), name
    assert len({keys.psk, keys.mac1_key, keys.cookie_key, keys.probe_key, keys.index_root}) == 5
    # pinned: a change here breaks every deployed pair
    assert keys.index_root.hex() == "e350444d6df2aa8c050a31f8ac80b8aa860d24d806786950d9df0d09107d62a0"


def test_fingerprint_is_unchanged_since_version_1():
    prk = ref.derive_prk(MATERIAL)
    shown = ref.fingerprint(MATERIAL)
    assert re.fullmatch(r"[0-9a-f]{4}(-[0-9a-f]{4}){3}", shown)
    assert shown.replace("-", "") == stdlib_expand(prk, b"etun/v1 fingerprint", 8).hex()
    assert shown == "a282-73c5-2b42-a16c"  # pinned: the same key file shows the same fingerprint in v1 and v2


@pytest.mark.parametrize("index", [0, 1, 7, 2**31, 2**32 - 1])
def test_index_secrets_data_keys_and_control_keys_match_protocol_md_written_out(index):
    assert ref.index_secret(ROOT, index) == stdlib_expand(ROOT, b"etun/v2 index" + index.to_bytes(4, "big"), 32)
    keys = stdlib_data_keys(SECRET, ROOT, index)
    assert ref.data_keys(SECRET, ROOT, index) == (keys[:32], keys[32:])
    control = stdlib_expand(SECRET, b"etun/v2 session", 64)
    assert ref.control_keys(SECRET) == (control[:32], control[32:])


def test_data_keys_are_fresh_per_session_secret_index_root_and_index():
    keys = {ref.data_keys(secret, root, index)
            for secret in (SECRET, make_secret(1)) for root in (ROOT, bytes(32)) for index in (0, 1, 2**32 - 1)}
    assert len(keys) == 12
    # The index-free control keys are none of them.
    assert ref.control_keys(SECRET) not in keys
    assert ref.control_keys(SECRET) != ref.control_keys(make_secret(1))


def test_key_index_outside_32_bits_is_refused():
    for bad in (2**32, -1):
        with pytest.raises(ValueError):
            ref.index_secret(ROOT, bad)
        with pytest.raises(ValueError):
            ref.data_keys(SECRET, ROOT, bad)


# --- the header (§2) --------------------------------------------------------


def test_header_fields_sit_at_the_offsets_of_protocol_md():
    header = ref.pack_header(ref.LEVEL_ENCRYPT, ref.TYPE_FRAME_VNET, big=3, index=4, count=5,
                             key_index=0x0A0B0C0D, session=0x2A, segment=0x07, counter=0x112233445566)
    assert header == bytes.fromhex("a2030405" "0a0b0c0d" "2a07" "112233445566")
    hdr = ref.parse_header(header)
    assert (hdr.version, hdr.level, hdr.ptype) == (2, ref.LEVEL_ENCRYPT, ref.TYPE_FRAME_VNET)
    assert (hdr.frag_big, hdr.frag_index, hdr.frag_count) == (3, 4, 5)
    assert (hdr.key_index, hdr.session, hdr.segment, hdr.counter) == (0x0A0B0C0D, 0x2A, 7, 0x112233445566)
    assert hdr.base == 0x112233445566 - 4


def test_the_counter_is_48_bits():
    assert ref.pack_header(1, 1, counter=2**48 - 1)[10:] == b"\xff" * 6
    with pytest.raises(ValueError):
        ref.pack_header(1, 1, counter=2**48)


def test_the_nonce_is_header_bytes_4_to_15_of_the_first_fragment():
    for level in LEVELS:
        sender, _ = make_pair(level, session_id=0x2A, index=9)
        sender.counter = 2**40 + 5
        first = sender.seal(bytes(3000), segment=200)[0]
        assert ref.frame_nonce(9, 0x2A, 200, 2**40 + 5) == first[4:16]


# --- known-answer packets (§2, §3.1) ----------------------------------------

# A 60-byte frame 00 01 .. 3b of segment 5 sealed under S = 00 .. 1f and index root 20 .. 3f to
# the peer's session 0x2a at key index 7 with the session's counter at 0x0102030405.
KNOWN_PACKETS = {
    ref.LEVEL_NONE: "81000001000000072a05000102030405"
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f"
    "303132333435363738393a3b",
    ref.LEVEL_AUTH: "91000001000000072a05000102030405"
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f"
    "303132333435363738393a3b"
    "55c733222e6a13feeecee9aff2c47922",
    ref.LEVEL_ENCRYPT: "a1000001000000072a05000102030405"
    "b0c040a324cb99f6c31c7f815e0969639d761a26d259112848e49128d4eb9d5cf4a952db94dd444895c80b93e7becc33"
    "755395f0f8cfc7d47e71609d"
    "56cc4108a9797440b92d31baeb1e3e89",
}


def by_hand(level, header, plaintext, keys):
    """header || payload || tag as §3.1 says, with cryptography's ChaCha20 and the standard library's HMAC."""
    payload = plaintext
    if level == ref.LEVEL_ENCRYPT:
        # cryptography's ChaCha20 takes block counter (4 bytes LE) || nonce; nonce = header[4:16].
        payload = Cipher(algorithms.ChaCha20(keys[:32], bytes(4) + header[4:16]), None).encryptor().update(plaintext)
    if level != ref.LEVEL_NONE:
        payload += hmac.new(keys[32:], header + payload, hashlib.sha256).digest()[:16]
    return header + payload


@pytest.mark.parametrize("level", LEVELS)
def test_a_sealed_frame_matches_a_packet_built_by_hand_from_protocol_md(level):
    frame = bytes(range(60))
    sender = ref.Sender(level, index_root=ROOT)
    sender.set_session(SECRET, 0x2A, 7)
    sender.counter = 0x0102030405
    (packet,) = sender.seal(frame, segment=5)
    # byte 0: ver 2 (0x80) | lvl << 4 | type 1; frag_big 0, frag_index 0, frag_count 1.
    header = bytes([0x80 | level << 4 | 1, 0, 0, 1]) + (7).to_bytes(4, "big") + bytes([0x2A, 5])
    header += (0x0102030405).to_bytes(6, "big")
    assert packet == by_hand(level, header, frame, stdlib_data_keys(SECRET, ROOT, 7))
    assert packet.hex() == KNOWN_PACKETS[level]


def test_a_session_message_is_sealed_under_the_control_keys_with_the_senders_index():
    sender = ref.Sender(ref.LEVEL_ENCRYPT, index_root=ROOT)
    sender.set_session(SECRET, 0x2A, 7)
    sender.counter = 9
    (packet,) = sender.seal(SESSION_MESSAGE, ref.TYPE_SESSION)
    header = bytes([0xA3, 0, 0, 1]) + (7).to_bytes(4, "big") + bytes([0x2A, 0]) + (9).to_bytes(6, "big")
    assert packet == by_hand(ref.LEVEL_ENCRYPT, header, SESSION_MESSAGE, stdlib_expand(SECRET, b"etun/v2 session", 64))
    assert packet.hex() == (
        "a3000001000000072a00000000000009" "a21cd7305c81f627ec4b4782e8e146b722d06339151a"
        "2cc37420e8b75763c60e4e9d67fbc5578430")


def test_the_selftests_known_packet_is_what_the_reference_seals():
    # etun/selftest.py pins the packet the datapath must seal before etun carries traffic; it
    # says it was checked against this independent implementation. Here is that check.
    from etun import selftest

    assert (selftest.KNOWN_SECRET, selftest.KNOWN_INDEX_ROOT) == (bytes(range(32)), bytes(range(32, 64)))
    sender = ref.Sender(ref.LEVEL_ENCRYPT, index_root=selftest.KNOWN_INDEX_ROOT)
    sender.set_session(selftest.KNOWN_SECRET, 0x2A, 3)
    assert sender.seal(selftest.KNOWN_FRAME) == [selftest.KNOWN_PACKET]
    receiver = ref.Receiver(ref.LEVEL_ENCRYPT, selftest.KNOWN_INDEX_ROOT)
    receiver.install(selftest.KNOWN_SECRET, 0x2A, 3)
    assert receiver.open(selftest.KNOWN_PACKET) == [(ref.TYPE_FRAME, selftest.KNOWN_FRAME)]


# --- fragmentation math (§2.1) ----------------------------------------------


@pytest.mark.parametrize("max_packet", MAX_PACKETS)
@pytest.mark.parametrize("level", LEVELS)
def test_every_frame_length_splits_into_balanced_contiguous_fragments_below_max_packet(level, max_packet):
    overhead = ref.UDP_HEADER_LEN + ref.HEADER_LEN + ref.tag_len(level)
    largest = max_packet - 1 - overhead  # P: the biggest payload that keeps the datagram below max_packet
    for length in range(ref.SESSION_MIN_LEN, ref.FRAME_MAX_LEN + 1):
        offsets, sizes = zip(*ref.plan_fragments(length, level, max_packet), strict=True)
        count = len(sizes)
        assert sum(sizes) == length
        assert max(sizes) - min(sizes) <= 1
        assert min(sizes) >= 1
        assert offsets == tuple(accumulate(sizes, initial=0))[:-1]
        assert overhead + max(sizes) < max_packet, length  # 8 + 16 + payload + tag < max_packet
        assert (count - 1) * largest < length, length  # minimal: one fragment fewer cannot hold it
        assert count <= ref.MAX_FRAGMENTS
        # The bigger fragments come first, as frag_big = r says (§2.1).
        assert sizes == tuple(length // count + (1 if i < length % count else 0) for i in range(count))


@pytest.mark.parametrize("max_packet", [320, 800, 9000])
@pytest.mark.parametrize("level", LEVELS)
def test_a_receiver_derives_every_fragments_offset_and_the_frame_length_from_that_fragment_alone(level, max_packet):
    step = 1 if max_packet != 320 else 13  # 320 makes ~8M fragments per level; a stride keeps it quick
    for length in list(range(ref.SESSION_MIN_LEN, ref.FRAME_VNET_MAX_LEN + 1, step)) + [ref.FRAME_VNET_MAX_LEN]:
        plan = ref.plan_fragments(length, level, max_packet)
        count, big = len(plan), length % len(plan)
        for i, (offset, size) in enumerate(plan):
            q, derived_offset, derived_length = ref.fragment_geometry(i, count, big, size)
            assert (derived_offset, derived_length) == (offset, length)
            assert q == length // count


@pytest.mark.parametrize("level", KEYED)
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
def test_sender_refuses_frames_outside_their_types_limits_and_types_it_does_not_seal(level):
    sender, _ = make_pair(level)
    for frame_type, (low, high) in ref.FRAME_LIMITS.items():
        with pytest.raises(ValueError):
            sender.seal(bytes(low - 1), frame_type)
        with pytest.raises(ValueError):
            sender.seal(bytes(high + 1), frame_type)
    for ptype in ref.HANDED_UP_TYPES:
        with pytest.raises(ValueError):
            sender.seal(bytes(100), ptype)
    with pytest.raises(ValueError):
        sender.seal(bytes(100), segment=256)
    assert sender.counter == 0


def test_sender_refuses_to_seal_before_a_session():
    with pytest.raises(ValueError):
        ref.Sender(ref.LEVEL_AUTH).seal(bytes(60))


# --- round trips (§2, §3) ---------------------------------------------------


@st.composite
def frames(draw):
    frame_type = draw(st.sampled_from(ref.SEALED_TYPES))
    low, high = ref.FRAME_LIMITS[frame_type]
    length = draw(st.one_of(st.integers(low, min(high, 3000)), st.integers(low, high), st.sampled_from([low, high])))
    seed = draw(st.integers(0, 2**32))
    return frame_type, random.Random(seed).randbytes(length), draw(st.integers(0, 255))


@settings(max_examples=60, deadline=None)
@given(
    level=st.sampled_from(LEVELS),
    max_packet=st.one_of(st.sampled_from(MAX_PACKETS), st.integers(ref.MAX_PACKET_MIN, ref.MAX_PACKET_MAX)),
    batch=st.lists(frames(), min_size=1, max_size=4),
    session_id=st.integers(0, 255),
    index=st.integers(0, 2**32 - 1),
    shuffle_seed=st.integers(0, 2**32),
)
def test_frames_and_session_messages_survive_a_round_trip_whatever_the_order_of_their_fragments(
    level, max_packet, batch, session_id, index, shuffle_seed
):
    sender, receiver = make_pair(level, max_packet, shuffle_seed, session_id, index)
    packets = [p for frame_type, frame, segment in batch for p in sender.seal(frame, frame_type, segment)]
    assert all(ref.UDP_HEADER_LEN + len(p) < max_packet for p in packets)
    random.Random(shuffle_seed).shuffle(packets)
    delivered, reasons = open_all(receiver, packets)
    assert reasons == [None] * len(packets)
    assert sorted(delivered) == sorted((frame_type, frame) for frame_type, frame, _ in batch)
    assert receiver.reassembly == {}


@pytest.mark.parametrize("level", KEYED)
def test_the_payload_is_ciphertext_only_at_level_encrypt(level):
    sender, _ = make_pair(level)
    frame = bytes(range(200))
    for ptype in (ref.TYPE_FRAME, ref.TYPE_SESSION):
        (packet,) = sender.seal(frame, ptype)
        assert (packet[16:-16] == frame) == (level == ref.LEVEL_AUTH)


def test_the_segment_is_in_the_nonce_and_authenticated():
    frame = bytes(700)
    payloads = set()
    for segment in (0, 1, 255):
        sender, receiver = make_pair(ref.LEVEL_ENCRYPT)
        (packet,) = sender.seal(frame, segment=segment)
        assert packet[9] == segment
        payloads.add(packet[16:-16])  # same key, counter and frame: only the segment differs
        moved = packet[:9] + bytes([segment ^ 1]) + packet[10:]
        assert receiver.open(moved) == [] and receiver.last_drop == "auth"
        assert receiver.open(packet) == [(ref.TYPE_FRAME, frame)]
    assert len(payloads) == 3


def test_the_session_byte_is_in_the_nonce_too():
    payloads = set()
    for session_id in (0, 1, 0x80):
        sender, receiver = make_pair(ref.LEVEL_ENCRYPT, session_id=session_id)
        (packet,) = sender.seal(bytes(700))
        assert packet[8] == session_id
        payloads.add(packet[16:-16])
        assert receiver.open(packet) == [(ref.TYPE_FRAME, bytes(700))]
    assert len(payloads) == 3


def test_counters_start_at_0_per_session_and_grow_across_frames_and_rotations():
    sender, _ = make_pair(ref.LEVEL_ENCRYPT)
    counters = []
    for _ in range(6):
        for packet in sender.seal(bytes(1518)):
            counters.append(ref.parse_header(packet).counter)
        sender.rotate()
    assert counters == list(range(12)) and sender.counter == 12
    sender.set_session(make_secret(5), 1, sender.key_index)
    assert ref.parse_header(sender.seal(bytes(60))[0]).counter == 0  # a new session, new keys: from 0


def test_no_nonce_repeats_under_one_key_across_frames_rotations_segments_and_session_messages():
    sender, _ = make_pair(ref.LEVEL_ENCRYPT)
    used = []
    for step in range(8):
        for ptype, segment in [(ref.TYPE_FRAME, 0), (ref.TYPE_FRAME, 1), (ref.TYPE_SESSION, 0)]:
            packets = sender.seal(bytes(2000) if ptype == ref.TYPE_FRAME else SESSION_MESSAGE, ptype, segment)
            hdr = ref.parse_header(packets[0])
            key = ref.control_keys(sender.secret) if ptype == ref.TYPE_SESSION else \
                ref.data_keys(sender.secret, ROOT, hdr.key_index)
            used.append((key[0], packets[0][4:16]))
        if step % 3 == 2:
            sender.rotate()
    assert len(set(used)) == len(used) == 24


def test_a_session_message_carries_the_index_the_sender_sends_under_now():
    sender, _ = make_pair(ref.LEVEL_AUTH, index=41)
    sender.rotate()
    (packet,) = sender.seal(SESSION_MESSAGE, ref.TYPE_SESSION)
    assert packet[0] & 0xF == ref.TYPE_SESSION and ref.parse_header(packet).key_index == 42


def test_the_48_bit_counter_runs_out_for_the_sender_and_its_last_value_opens():
    sender, receiver = make_pair(ref.LEVEL_AUTH)
    sender.counter = 2**48 - 2
    packets = sender.seal(bytes(1518))  # counters 2^48 - 2 and 2^48 - 1: the last two there are
    assert [ref.parse_header(p).counter for p in packets] == [2**48 - 2, 2**48 - 1]
    frames, reasons = open_all(receiver, packets)
    assert reasons == [None, None] and frames == [(ref.TYPE_FRAME, bytes(1518))]
    with pytest.raises(ValueError, match="counter"):
        sender.seal(bytes(60))
    assert sender.counter == 2**48  # a frame that does not fit spends nothing


def test_a_frame_that_needs_more_counters_than_are_left_is_refused_whole():
    sender, _ = make_pair(ref.LEVEL_AUTH)
    sender.counter = 2**48 - 1
    with pytest.raises(ValueError, match="counter"):
        sender.seal(bytes(1518))  # two fragments, one counter left
    assert len(sender.seal(bytes(60))) == 1


def test_a_sender_at_the_last_key_index_stays_there():
    sender, _ = make_pair(ref.LEVEL_AUTH, index=2**32 - 1)
    with pytest.raises(OverflowError):
        sender.rotate()
    assert sender.key_index == 2**32 - 1
    assert ref.parse_header(sender.seal(bytes(60))[0]).key_index == 2**32 - 1


# --- tampering: the §3.2 drop table -----------------------------------------
#
# The packet under test is fragment 1 of 2 of a 1518-byte FRAME, the second
# datagram a fresh sender emits at the default max_packet 800 (P = 759), so
#   byte 0      0xa1 at encrypt (ver 2, lvl 2, type 1 FRAME), 0x91 at auth (lvl 1)
#   byte 1      frag_big   r = 0
#   byte 2      frag_index i = 1
#   byte 3      frag_count n = 2
#   bytes 4-7   key_index    = 0
#   byte 8      session      = 0
#   byte 9      segment      = 0
#   bytes 10-15 counter      = 1 (base 0)
#   16..774     payload, 759 bytes;   775..790  tag
# and a fresh receiver holding session 0 at current index 0 (so it holds 0 and 1).
# Flipping one bit gives the reason of the first §3.2 check that fails. Step 1 judges the
# fragment fields by the length the fragment implies: s = 791 - 16 - tag_len(lvl of the
# packet), q = s - 1 if i < r else s, L = n*q + r, within the limits of the packet's type.


def header_bit_reason(level: int, byte: int, bit: int) -> str | None:
    """Why the packet above is dropped once bit `bit` (0 = least significant) of header byte
    `byte` flips; None where it is no data packet any more and is handed up whole."""
    if byte == 0:
        # bits 7-6 ver (10): either flip leaves ver 0 or 3 -> version.
        # bits 5-4 lvl: 10 (encrypt) -> bit 5 gives 00 none, bit 4 gives 11 invalid;
        #               01 (auth)    -> bit 5 gives 11 invalid, bit 4 gives 00 none.
        #   A packet claiming none has no tag, so s = 775, L = 2*775 = 1550: well formed,
        #   it only has the wrong level -> level_mismatch.
        # bits 3-0 type 0001 -> 1001 (9), 0101 (5 RESP), 0011 (3 SESSION), 0000 (0). 9 and 0
        #   are unknown -> malformed. A RESP is the handshake's (§5), handed up whole. A
        #   SESSION message of L = 1518 bytes is well formed; the data keys are not its
        #   control keys -> auth (step 4 does not apply to SESSION messages).
        if bit in (7, 6):
            return "version"
        none_bit = 5 if level == ref.LEVEL_ENCRYPT else 4
        if bit in (5, 4):
            return "level_mismatch" if bit == none_bit else "malformed"
        return {2: None, 1: "auth"}.get(bit, "malformed")
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
        # exceeds 65557 -> malformed (step 1 holds L to the type's limits, §2.1).
        return {1: "malformed", 7: "malformed"}.get(bit, "auth")
    if 4 <= byte <= 7:
        # key_index 0 -> 2**(8 * (7 - byte) + bit). 1 is c + 1, held: the tag tells -> auth.
        # Anything from 2 on is not held, and nothing is derived for it -> key_index.
        return "auth" if (byte, bit) == (7, 0) else "key_index"
    if byte == 8:
        return "no_session"  # session 0 -> 2**bit: the receiver holds session 0 only
    if byte == 9:
        return "auth"  # the segment is authenticated like every header byte
    # counter 1 -> 1 ^ 2**k. Bit 0 of the last byte makes it 0 < frag_index 1, so
    # base would be negative -> malformed; every other flip leaves counter >= 1 -> auth.
    return "malformed" if (byte, bit) == (15, 0) else "auth"


def packet_under_test(level):
    sender, _ = make_pair(level)
    first, second = sender.seal(bytes(range(256)) * 5 + bytes(238))
    return first, second


@pytest.mark.parametrize("level", KEYED)
def test_the_packet_under_test_has_the_header_the_tamper_table_assumes(level):
    _, packet = packet_under_test(level)
    assert len(packet) == 791
    assert packet[:16] == bytes([0x80 | level << 4 | 1, 0, 1, 2]) + bytes(6) + (1).to_bytes(6, "big")


@pytest.mark.parametrize("level", KEYED)
def test_every_single_bit_flip_in_the_header_is_dropped_for_the_reason_protocol_md_implies(level):
    first, packet = packet_under_test(level)
    got, want = {}, {}
    for byte in range(ref.HEADER_LEN):
        for bit in range(8):
            _, receiver = make_pair(level)
            tampered = bytearray(packet)
            tampered[byte] ^= 1 << bit
            opened = receiver.open(bytes(tampered))
            got[byte, bit] = receiver.last_drop
            want[byte, bit] = header_bit_reason(level, byte, bit)
            if receiver.last_drop is None:
                assert opened == [(tampered[0] & 0xF, bytes(tampered))]  # handed up whole, untouched
            else:
                assert opened == [] and receiver.counters[receiver.last_drop] == 1
            # A dropped packet leaves no trace: the genuine fragments still make the frame.
            assert receiver.current_index == 0 and receiver.reassembly == {}
            assert receiver.open(packet) == [] and receiver.last_drop is None
            assert len(receiver.open(first)) == 1
    assert got == want


@pytest.mark.parametrize("level", KEYED)
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


@pytest.mark.parametrize("level", KEYED)
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
        for packet in sender.seal(bytes(1518)) + sender.seal(SESSION_MESSAGE, ref.TYPE_SESSION):
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
    receiver.open(ref.pack_header(ref.LEVEL_AUTH, ref.TYPE_FRAME) + bytes(15))
    assert receiver.last_drop == "malformed"


@pytest.mark.parametrize("level", LEVELS)
def test_a_packet_before_any_session_or_under_a_session_id_not_held_is_no_session(level):
    sender, _ = make_pair(level, session_id=5)
    packets = sender.seal(bytes(1518)) + sender.seal(SESSION_MESSAGE, ref.TYPE_SESSION)
    receiver = ref.Receiver(level, ROOT)
    _, reasons = open_all(receiver, packets)
    assert reasons == ["no_session"] * 3
    receiver.install(make_secret(0), 4)
    receiver.install(make_secret(0), 6, confirmed=False)
    _, reasons = open_all(receiver, packets)
    assert reasons == ["no_session"] * 3
    receiver.install(make_secret(0), 5)
    _, reasons = open_all(receiver, packets)
    assert reasons == [None] * 3


@pytest.mark.parametrize("version", [0, 1, 3])
@pytest.mark.parametrize("level", LEVELS)
def test_a_datagram_of_another_protocol_version_is_version_whatever_else_it_holds(level, version):
    receiver = receiver_with(level)
    for packet in (crafted(level, version=version), crafted(level, claimed_level=3, version=version),
                   bytes([version << 6 | 0x0F]), bytes([version << 6 | 0x14]) + bytes(123)):
        assert receiver.open(packet) == [] and receiver.last_drop == "version"
    assert receiver.counters["version"] == 4


@pytest.mark.parametrize("level", LEVELS)
def test_handshake_and_probe_packets_are_handed_up_whole_unchecked(level):
    receiver = ref.Receiver(level, ROOT)  # no session needed
    for ptype in ref.HANDED_UP_TYPES:
        for other_level in LEVELS:
            for packet in (bytes([ref.first_byte(other_level, ptype)]), bytes([ref.first_byte(other_level, ptype)]) + os.urandom(123)):
                assert receiver.open(packet) == [(ptype, packet)] and receiver.last_drop is None
        receiver.open(bytes([ref.first_byte(3, ptype)]) + bytes(123))  # but level 3 is no level
        assert receiver.last_drop == "malformed"


MALFORMED_HEADERS = [
    # (what is wrong, crafted() arguments)
    ("level 3", dict(claimed_level=3)),
    ("type 0", dict(ptype=0)),
    ("type 9", dict(ptype=9)),
    ("type 15", dict(ptype=15)),
    ("frag_count 0", dict(count=0)),
    ("frag_index = frag_count", dict(index=2, count=2, counter=5)),
    ("frag_big = frag_count", dict(big=2, count=2)),
    ("q = 0 from an empty payload", dict(size=0)),
    ("q = 0 from one byte while i < r", dict(big=1, count=2, size=1)),
    ("counter below frag_index", dict(index=3, count=4, counter=2)),
    ("FRAME of 13 bytes", dict(size=13)),
    ("FRAME of 65558 bytes", dict(count=8, big=6, size=8195)),
    ("FRAME_VNET of 23 bytes", dict(ptype=ref.TYPE_FRAME_VNET, size=23)),
    ("FRAME_VNET of 65568 bytes", dict(ptype=ref.TYPE_FRAME_VNET, count=8, size=8196)),
    ("SESSION of 3 bytes", dict(ptype=ref.TYPE_SESSION, size=3)),
    ("SESSION of 8193 bytes", dict(ptype=ref.TYPE_SESSION, count=2, big=1, size=4097)),
]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", MALFORMED_HEADERS, ids=[c[0] for c in MALFORMED_HEADERS])
def test_impossible_headers_are_malformed_even_when_correctly_tagged(level, case):
    _, arguments = case
    receiver = receiver_with(level)
    receiver.open(crafted(level, **arguments))
    assert receiver.last_drop == "malformed"


@pytest.mark.parametrize("level", LEVELS)
def test_a_payload_larger_than_any_max_packet_allows_is_malformed(level):
    receiver = receiver_with(level)
    receiver.open(crafted(level, size=ref.max_payload(level, ref.MAX_PACKET_MAX) + 1))
    assert receiver.last_drop == "malformed"


@pytest.mark.parametrize("level", LEVELS)
def test_the_limits_themselves_are_accepted(level):
    receiver = receiver_with(level)
    largest = ref.max_payload(level, ref.MAX_PACKET_MAX)
    for counter, arguments in enumerate([
        dict(size=14), dict(ptype=ref.TYPE_FRAME_VNET, size=24), dict(count=8, big=5, size=8195),
        dict(ptype=ref.TYPE_SESSION, size=4), dict(ptype=ref.TYPE_SESSION, count=2, size=4096), dict(size=largest),
    ]):
        receiver.open(crafted(level, counter=counter * 2, **arguments))
        assert receiver.last_drop is None, arguments


@pytest.mark.parametrize("level", LEVELS)
def test_datagrams_shorter_than_header_and_tag_are_malformed(level):
    _, receiver = make_pair(level)
    for length in range(ref.HEADER_LEN + ref.tag_len(level)):
        receiver.open(bytes([0x81 | level << 4]) + bytes(max(0, length - 1)))
        assert receiver.last_drop == "malformed", length


# --- replay (§3.2, RFC 6479) ------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
def test_replaying_any_packet_of_a_flow_is_dropped_as_replay(level):
    sender, receiver = make_pair(level)
    packets = [p for length in (60, 1518, 9000, 65557) for p in sender.seal(os.urandom(length))]
    packets += sender.seal(SESSION_MESSAGE * 100, ref.TYPE_SESSION)
    random.Random(1).shuffle(packets)
    frames, reasons = open_all(receiver, packets)
    assert reasons == [None] * len(packets) and len(frames) == 5
    _, reasons = open_all(receiver, packets)
    assert reasons == ["replay"] * len(packets)
    assert receiver.counters["replay"] == len(packets)


def test_a_duplicate_fragment_of_an_incomplete_frame_is_a_replay_and_does_not_disturb_reassembly():
    sender, receiver = make_pair(ref.LEVEL_ENCRYPT)
    frame = os.urandom(3000)
    packets = sender.seal(frame)
    _, reasons = open_all(receiver, [packets[1], packets[1], packets[0], packets[0]])
    assert reasons == [None, "replay", None, "replay"]
    frames, _ = open_all(receiver, packets[2:])
    assert receiver.last_drop is None and frames == [(ref.TYPE_FRAME, frame)]


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
    (2**48 - 1, True),  # 18 the last counter there is
    (2**48 - 1 - W, True),  # 19
    (2**48 - 2 - W, False),  # 20
    (2**48 - 1, False),  # 21
]


def test_the_replay_window_accepts_and_refuses_each_counter_as_the_numbered_table_says():
    window = ref.ReplayWindow()
    for number, (counter, fresh) in enumerate(REPLAY_TABLE, start=1):
        assert window.is_fresh(counter) == fresh, f"row {number}"
        if fresh:
            window.mark(counter)


@pytest.mark.parametrize("level", LEVELS)
def test_the_receivers_window_gives_the_tables_verdicts_for_real_packets(level):
    receiver = receiver_with(level)
    for number, (counter, fresh) in enumerate(REPLAY_TABLE, start=1):
        receiver.open(crafted(level, counter=counter))
        assert receiver.last_drop == (None if fresh else "replay"), f"row {number}"


def test_a_forged_packet_never_moves_the_replay_window():
    receiver = receiver_with(ref.LEVEL_AUTH)
    receiver.open(forged(crafted(ref.LEVEL_AUTH, counter=1_000_000)))
    assert receiver.last_drop == "auth"
    receiver.open(crafted(ref.LEVEL_AUTH, counter=5))
    assert receiver.last_drop is None


@pytest.mark.parametrize("level", KEYED)
def test_replay_windows_are_per_key_index_and_session_messages_have_their_own(level):
    receiver = receiver_with(level)
    cases = [
        (ref.TYPE_FRAME, 0, None), (ref.TYPE_FRAME, 1, None), (ref.TYPE_FRAME, 1, "replay"),
        (ref.TYPE_FRAME, 0, "replay"), (ref.TYPE_SESSION, 0, None), (ref.TYPE_SESSION, 5, "replay"),
        (ref.TYPE_FRAME_VNET, 1, "replay"),
    ]
    for ptype, key_index, reason in cases:
        size = 60 if ptype != ref.TYPE_FRAME_VNET else 70
        receiver.open(crafted(level, ptype=ptype, key_index=key_index, counter=7, size=size))
        assert receiver.last_drop == reason, (ptype, key_index)


def test_level_none_removes_duplicates_with_one_replay_window_per_session():
    receiver = receiver_with(ref.LEVEL_NONE)
    receiver.install(b"", 1, confirmed=False)
    cases = [
        (ref.TYPE_FRAME, 0, 0, 7, None), (ref.TYPE_FRAME, 0, 0, 7, "replay"), (ref.TYPE_FRAME, 0, 5, 7, "replay"),
        (ref.TYPE_SESSION, 0, 9, 7, "replay"), (ref.TYPE_SESSION, 0, 9, 8, None), (ref.TYPE_FRAME, 0, 5, 8, "replay"),
        (ref.TYPE_FRAME, 0, 0, 4041, None), (ref.TYPE_FRAME, 0, 5, 8, "replay"),  # 4033 below the highest
        (ref.TYPE_FRAME, 1, 0, 7, None),  # another session, another window
    ]
    for ptype, session, key_index, counter, reason in cases:
        receiver.open(crafted(ref.LEVEL_NONE, ptype=ptype, session=session, key_index=key_index, counter=counter))
        assert receiver.last_drop == reason, (ptype, session, key_index, counter)


def test_level_none_holds_no_keys_so_any_key_index_opens():
    receiver = receiver_with(ref.LEVEL_NONE)
    for counter, key_index in enumerate([0, 2, 64, 65, 2**32 - 1, 3, 0]):
        receiver.open(crafted(ref.LEVEL_NONE, key_index=key_index, counter=counter))
        assert receiver.last_drop is None, key_index
    assert receiver.current_index == 0


def test_sessions_keep_their_windows_apart_and_each_starts_its_counter_at_0():
    old_sender, receiver = make_pair(ref.LEVEL_AUTH, seed=1, session_id=1)
    first = old_sender.seal(bytes(60))[0]
    new_sender = ref.Sender(ref.LEVEL_AUTH, index_root=ROOT)
    new_sender.set_session(make_secret(2), 2)
    receiver.install(make_secret(2), 2)
    _, reasons = open_all(receiver, [first, new_sender.seal(bytes(60))[0], first])
    assert reasons == [None, None, "replay"]  # both counter 0, in two windows


# --- fragments that disagree (§3.2 step 7) ----------------------------------


@pytest.mark.parametrize("level", LEVELS)
def test_fragments_of_a_frame_that_contradict_the_first_one_are_frag_inconsistent(level):
    first = crafted(level, count=2, counter=100, size=500)
    contradictions = {
        "frag_count": dict(count=3, size=500),
        "frag_big": dict(big=1, count=2, size=500),
        "q": dict(count=2, size=499),
        "type": dict(ptype=ref.TYPE_FRAME_VNET, count=2, size=500),
        "key index": dict(count=2, size=500, key_index=1),
        "segment": dict(count=2, size=500, segment=1),
    }
    for what, arguments in contradictions.items():
        receiver = receiver_with(level)
        receiver.open(first)
        assert receiver.last_drop is None
        receiver.open(crafted(level, index=1, counter=101, **arguments))
        assert receiver.last_drop == "frag_inconsistent", what
        ((_, partial),) = receiver.reassembly.items()
        assert list(partial.parts) == [0], what  # the frame held is untouched
        # It authenticated, so step 6 saw its counter (§3.2: the window moves for authenticated
        # packets); dropped at step 7, it changed nothing else: c stays (key index 1 is c + 1).
        receiver.open(crafted(level, index=1, counter=101, **arguments))
        assert receiver.last_drop == "replay", what
        assert receiver.current_index == 0


@pytest.mark.parametrize("level", LEVELS)
def test_a_single_packet_frame_naming_the_base_of_a_held_frame_is_frag_inconsistent(level):
    # The frame is identified by its session and base (§2.1): a one-packet "frame" with
    # counter 100 claims n = 1 for the frame whose fragment 1 (counter 101) says n = 2.
    receiver = receiver_with(level)
    receiver.open(crafted(level, index=1, count=2, counter=101, size=500))
    assert receiver.last_drop is None and len(receiver.reassembly) == 1
    assert receiver.open(crafted(level, counter=100, size=500)) == []
    assert receiver.last_drop == "frag_inconsistent"


@pytest.mark.parametrize("level", LEVELS)
def test_the_same_base_in_two_sessions_names_two_frames(level):
    receiver = receiver_with(level, session_id=1)
    receiver.install(SECRET, 2, confirmed=False)
    receiver.open(crafted(level, count=2, counter=0, size=500, session=1))
    receiver.open(crafted(level, count=3, index=1, counter=1, size=500, session=2))  # promotes session 2
    assert receiver.last_drop is None and len(receiver.reassembly) == 2
    frames, reasons = open_all(receiver, [crafted(level, count=2, index=1, counter=1, size=500, session=1)])
    assert reasons == [None] and len(frames) == 1


# --- key indices (§4.2) -----------------------------------------------------


@pytest.fixture
def derivations(monkeypatch):
    """Every (secret, index) a receiver derives data keys for, as it happens."""
    calls = []
    original = ref.data_keys

    def recording(secret, index_root, index):
        calls.append(index)
        return original(secret, index_root, index)

    monkeypatch.setattr(ref, "data_keys", recording)
    return calls


@pytest.mark.parametrize("level", KEYED)
def test_a_receiver_holds_c_minus_1_c_and_c_plus_1_and_nothing_else(level):
    receiver = receiver_with(level, index=10)
    cases = [(8, "key_index"), (9, None), (10, None), (12, "key_index"), (74, "key_index"),
             (2**32 - 1, "key_index"), (11, None)]
    for counter, (key_index, reason) in enumerate(cases):
        receiver.open(crafted(level, key_index=key_index, counter=counter))
        assert receiver.last_drop == reason, key_index
    assert receiver.current_index == 11  # the packet at c + 1 moved c


@pytest.mark.parametrize("level", KEYED)
def test_after_a_rotation_the_next_index_opens_and_the_previous_one_still_does(level):
    sender, receiver = make_pair(level)
    before = sender.seal(os.urandom(1518))
    sender.rotate()
    after = sender.seal(os.urandom(1518))
    frames, reasons = open_all(receiver, after[:1] + before + after[1:])
    assert reasons == [None] * 4 and len(frames) == 2
    assert receiver.current_index == 1
    sender.rotate()
    sender.rotate()
    (late,) = sender.seal(os.urandom(100))
    assert ref.parse_header(late).key_index == 3
    receiver.open(late)
    assert receiver.last_drop == "key_index" and receiver.current_index == 1  # c + 2: not held


@pytest.mark.parametrize("level", KEYED)
def test_c_plus_1_becomes_current_only_once_a_packet_under_it_authenticates(level):
    receiver = receiver_with(level)
    for packet in (forged(crafted(level, key_index=1, counter=0)), crafted(level, key_index=1, counter=0, size=13)):
        receiver.open(packet)
        assert receiver.last_drop in ("auth", "malformed") and receiver.current_index == 0
    receiver.open(crafted(level, key_index=1, counter=1))
    assert receiver.last_drop is None and receiver.current_index == 1
    receiver.open(crafted(level, key_index=1, counter=1))  # a replay moves nothing either
    receiver.open(crafted(level, key_index=0, counter=2))  # c - 1 opens and leaves c alone
    assert receiver.last_drop is None and receiver.current_index == 1


@pytest.mark.parametrize("level", KEYED)
def test_a_forged_packet_at_c_plus_2_to_c_plus_64_derives_nothing_and_is_key_index(level, derivations):
    receiver = receiver_with(level, index=100)
    packets = [forged(crafted(level, key_index=100 + ahead, counter=ahead)) for ahead in range(2, 65)]
    genuine = crafted(level, key_index=102, counter=1000)
    derivations.clear()  # crafting the packets derived their keys; from here on only the receiver derives
    _, reasons = open_all(receiver, packets)
    assert reasons == ["key_index"] * 63
    # ... and so is the genuine sender's packet: only a SESSION message moves c that far.
    receiver.open(genuine)
    assert receiver.last_drop == "key_index" and receiver.current_index == 100
    assert derivations == []
    receiver.open(crafted(level, key_index=101, counter=1001))
    assert derivations[-1] == 101  # held indices are what keys get derived for


@pytest.mark.parametrize("level", KEYED)
def test_a_session_message_moves_c_to_the_index_it_carries_so_a_receiver_catches_up(level):
    sender, receiver = make_pair(level)
    assert len(receiver.open(sender.seal(bytes(100))[0])) == 1
    for _ in range(100):  # far beyond any look-ahead
        sender.rotate()
    late = sender.seal(bytes(100))
    assert receiver.open(late[0]) == [] and receiver.last_drop == "key_index"
    (message,) = sender.seal(SESSION_MESSAGE, ref.TYPE_SESSION)
    assert receiver.open(message) == [(ref.TYPE_SESSION, SESSION_MESSAGE)]
    assert receiver.current_index == 100
    assert len(receiver.open(late[0])) == 1  # the packet refused before now opens
    sender.rotate()
    assert len(receiver.open(sender.seal(bytes(100))[0])) == 1 and receiver.current_index == 101


@pytest.mark.parametrize("level", KEYED)
def test_a_session_message_never_moves_c_back_and_is_not_held_to_the_indices_data_is(level):
    receiver = receiver_with(level, index=50)
    for counter, key_index in enumerate([3, 49, 50, 0]):
        receiver.open(crafted(level, ptype=ref.TYPE_SESSION, key_index=key_index, counter=counter))
        assert receiver.last_drop is None and receiver.current_index == 50


@pytest.mark.parametrize("level", KEYED)
def test_a_forged_or_replayed_session_message_moves_nothing(level):
    receiver = receiver_with(level)
    message = crafted(level, ptype=ref.TYPE_SESSION, key_index=1000, counter=5)
    receiver.open(forged(message))
    assert receiver.last_drop == "auth" and receiver.current_index == 0
    # A SESSION message under the data keys of the current index does not authenticate.
    header = ref.pack_header(level, ref.TYPE_SESSION, key_index=1000, counter=5)
    receiver.open(ref.build_packet(level, ref.data_keys(SECRET, ROOT, 0)[1], header, bytes(60)))
    assert receiver.last_drop == "auth" and receiver.current_index == 0
    receiver.open(message)
    assert receiver.last_drop is None and receiver.current_index == 1000
    receiver.open(crafted(level, key_index=1001, counter=6))
    receiver.open(message)  # recorded and replayed: its counter was seen
    assert receiver.last_drop == "replay" and receiver.current_index == 1001


@pytest.mark.parametrize("level", KEYED)
def test_the_last_key_index_has_no_next_and_never_wraps_to_0(level):
    sender, receiver = make_pair(level)
    recorded = sender.seal(bytes(100))[0]  # index 0, as a listener recorded it
    late = ref.Sender(level, index_root=ROOT)
    late.set_session(make_secret(0), 0, 2**32 - 1)
    late.counter = 1
    receiver.open(late.seal(SESSION_MESSAGE, ref.TYPE_SESSION)[0])
    assert receiver.current_index == 2**32 - 1
    assert len(receiver.open(late.seal(bytes(100))[0])) == 1
    assert receiver.open(recorded) == [] and receiver.last_drop == "key_index"
    assert receiver.current.holds(2**32 - 2) and not receiver.current.holds(0)


# --- sessions and their roles (§5.2, §5.4) ----------------------------------


def session_sender(level, seed, session_id, index=0):
    sender = ref.Sender(level, index_root=ROOT)
    sender.set_session(make_secret(seed), session_id, index)
    return sender


@pytest.mark.parametrize("level", LEVELS)
def test_a_confirmed_install_becomes_current_and_the_one_it_replaces_previous(level):
    receiver = ref.Receiver(level, ROOT)
    receiver.install(make_secret(1), 1)
    assert receiver.sessions() == {"current": (1, True), "previous": None, "next": None}
    receiver.install(make_secret(2), 2)
    assert receiver.sessions() == {"current": (2, True), "previous": (1, True), "next": None}
    receiver.install(make_secret(3), 3)
    assert receiver.sessions() == {"current": (3, True), "previous": (2, True), "next": None}
    for seed, reason in [(1, "no_session"), (2, None), (3, None)]:
        receiver.open(session_sender(level, seed, seed).seal(bytes(60))[0])
        assert receiver.last_drop == reason, seed


@pytest.mark.parametrize("level", LEVELS)
def test_a_replaced_session_opens_packets_in_flight_for_10_seconds(level):
    receiver = ref.Receiver(level, ROOT)
    receiver.install(make_secret(1), 1, now_ms=0)
    receiver.install(make_secret(2), 2, now_ms=5000)
    old = session_sender(level, 1, 1)
    for now_ms, reason in [(5000, None), (14_999, None), (15_000, "no_session"), (14_999, "no_session")]:
        receiver.open(old.seal(bytes(60))[0], now_ms)
        assert receiver.last_drop == reason, now_ms
    assert receiver.sessions()["previous"] is None


@pytest.mark.parametrize("level", LEVELS)
def test_an_unconfirmed_session_waits_in_next_until_a_packet_under_it_authenticates(level):
    receiver = ref.Receiver(level, ROOT)
    receiver.install(make_secret(1), 1)
    receiver.install(make_secret(2), 2, index=7, confirmed=False)
    assert receiver.sessions() == {"current": (1, True), "previous": None, "next": (2, False)}
    assert receiver.current_index == 0
    new = session_sender(level, 2, 2, index=7)
    if level != ref.LEVEL_NONE:
        receiver.open(forged(new.seal(bytes(60))[0]), 100)  # a forgery confirms nothing
        assert receiver.last_drop == "auth"
    receiver.open(new.seal(bytes(60))[0][:20], 100)  # nor does a broken packet
    assert receiver.last_drop == "malformed" and receiver.sessions()["next"] == (2, False)
    assert len(receiver.open(new.seal(bytes(60))[0], 100)) == 1
    assert receiver.sessions() == {"current": (2, True), "previous": (1, True), "next": None}
    assert receiver.current_index == (0 if level == ref.LEVEL_NONE else 7)
    # The session it replaced counts its 10 seconds from the confirmation.
    old = session_sender(level, 1, 1)
    receiver.open(old.seal(bytes(60))[0], 10_099)
    assert receiver.last_drop is None
    receiver.open(old.seal(bytes(60))[0], 10_100)
    assert receiver.last_drop == "no_session"


@pytest.mark.parametrize("level", LEVELS)
def test_a_session_message_or_any_fragment_confirms_a_session_too(level):
    for packet in (session_sender(level, 2, 2).seal(SESSION_MESSAGE, ref.TYPE_SESSION)[0],
                   session_sender(level, 2, 2).seal(bytes(3000))[1]):
        receiver = ref.Receiver(level, ROOT)
        receiver.install(make_secret(2), 2, confirmed=False)
        assert receiver.current_index is None
        receiver.open(packet)
        assert receiver.last_drop is None and receiver.sessions()["current"] == (2, True)
        assert receiver.current_index == 0


@pytest.mark.parametrize("level", KEYED)
def test_a_packet_at_c_plus_1_under_next_confirms_it_and_moves_its_c(level):
    receiver = receiver_with(level, session_id=1)
    receiver.install(make_secret(2), 2, index=7, confirmed=False)
    receiver.open(session_sender(level, 2, 2, index=8).seal(bytes(60))[0])
    assert receiver.last_drop is None and receiver.sessions()["current"] == (2, True)
    assert receiver.current_index == 8


@pytest.mark.parametrize("level", LEVELS)
def test_a_confirmed_install_drops_a_session_waiting_in_next_and_a_new_next_replaces_the_old(level):
    receiver = ref.Receiver(level, ROOT)
    receiver.install(make_secret(1), 1)
    receiver.install(make_secret(2), 2, confirmed=False)
    receiver.install(make_secret(3), 3, confirmed=False)
    assert receiver.sessions() == {"current": (1, True), "previous": None, "next": (3, False)}
    receiver.open(session_sender(level, 2, 2).seal(bytes(60))[0])
    assert receiver.last_drop == "no_session"
    receiver.install(make_secret(4), 4)
    assert receiver.sessions() == {"current": (4, True), "previous": (1, True), "next": None}
    receiver.open(session_sender(level, 3, 3).seal(bytes(60))[0])
    assert receiver.last_drop == "no_session"


@pytest.mark.parametrize("level", KEYED)
def test_a_replayed_handshakes_session_can_never_take_the_id_of_the_session_in_use(level):
    receiver = receiver_with(level, secret=make_secret(1), session_id=9)
    receiver.install(make_secret(2), 9, confirmed=False)  # same id, waiting for confirmation
    receiver.open(session_sender(level, 2, 9).seal(bytes(60))[0])
    assert receiver.last_drop == "auth"  # the id names the current session first
    receiver.open(session_sender(level, 1, 9).seal(bytes(60))[0])
    assert receiver.last_drop is None
    assert receiver.sessions() == {"current": (9, True), "previous": None, "next": (9, False)}


@pytest.mark.parametrize("level", LEVELS)
def test_drop_sessions_forgets_every_role(level):
    receiver = receiver_with(level, session_id=1)
    receiver.install(SECRET, 2)
    receiver.install(SECRET, 3, confirmed=False)
    receiver.drop_sessions()
    assert receiver.sessions() == {"current": None, "previous": None, "next": None}
    for session in (1, 2, 3):
        receiver.open(crafted(level, session=session, counter=session))
        assert receiver.last_drop == "no_session"


@pytest.mark.parametrize("level", LEVELS)
def test_each_session_has_its_own_key_index(level):
    receiver = receiver_with(level, session_id=1, index=5)
    receiver.install(SECRET, 2, index=500)
    for counter, (session, key_index, reason) in enumerate([(1, 6, None), (2, 6, "key_index"), (2, 501, None),
                                                            (1, 501, "key_index"), (1, 7, None)]):
        receiver.open(crafted(level, session=session, key_index=key_index, counter=counter))
        assert receiver.last_drop == (None if level == ref.LEVEL_NONE else reason), (session, key_index)
    if level != ref.LEVEL_NONE:
        assert receiver.current_index == 501 and receiver.previous.current == 7


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


@pytest.mark.parametrize("level", LEVELS)
def test_a_frame_left_behind_by_a_dropped_session_is_never_completed_by_another_and_expires(level):
    sender, receiver = make_pair(level)
    first, second = sender.seal(bytes(1518))
    receiver.open(first, 0)
    receiver.drop_sessions()
    receiver.install(make_secret(0))  # the same secret and id again, but another session
    assert receiver.open(second, 0) == [] and receiver.last_drop is None  # same base, a frame of its own
    assert len(receiver.reassembly) == 2
    receiver.expire(1001)
    assert receiver.reassembly == {} and receiver.counters["frag_timeout"] == 2
