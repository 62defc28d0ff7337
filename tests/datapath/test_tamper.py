"""Every single-bit flip of a sealed packet is dropped by the datapath for the reason the reference and a table give."""

# The packets under test, sealed by a fresh sender at the default max_packet 800
# (P = 759 payload bytes at auth and encrypt), each received by a fresh receiver
# holding the session at key index 0 (previous: none, next: 1, derivable on demand:
# 2..64, token bucket full):
#
#   fragment 0 of 2 and fragment 1 of 2 of a 1518-byte FRAME, 791 bytes each:
#     byte 0 0x51 (auth) / 0x61 (encrypt): ver 1, lvl, type 1 FRAME
#     byte 1 frag_big r = 0   byte 2 frag_index i = 0 / 1   byte 3 frag_count n = 2
#     bytes 4-7 key_index 0   bytes 8-15 counter 0 / 1 (base 0)
#     bytes 16..774 payload (759)   bytes 775..790 tag
#   a single-packet 600-byte FRAME, 632 bytes: r = 0, i = 0, n = 1, key_index 0, counter 0
#
# Step 1 of PROTOCOL.md §3.2 judges the fragment fields by the frame length the packet
# implies: s = len - 16 - tag_len(the lvl the packet claims), q = s - 1 if i < r else s,
# L = n*q + r, and L must be 14..65557 for a FRAME. A flip that turns the type into a
# control type comes back from Datapath.open whole; its reason is then what
# _fast.open_control raises, as in the control plane.

import pytest

from etun import _fast
from tests import reference as ref

AUTH, ENCRYPT = ref.LEVEL_AUTH, ref.LEVEL_ENCRYPT
SECRET = bytes(range(32))
CTL_KEY = ref.control_key(ref.derive_prk(bytes(range(256)) * 128))
T0 = 10**12  # beyond the real monotonic clock, which the datapath never moves back from
FRAMES = {"fragment 0 of 2": bytes(range(256)) * 5 + bytes(238), "single packet": bytes(range(200)) * 3}
FRAMES["fragment 1 of 2"] = FRAMES["fragment 0 of 2"]
PACKETS = list(FRAMES)
WHOLE = {"fragment 0 of 2": 0, "fragment 1 of 2": 1, "single packet": 0}  # which datagram of the frame


def level_bits(level):
    """(bit that makes lvl read 0 = none, bit that makes it read 3) in byte 0, for this level."""
    # lvl sits in bits 5-4: encrypt is 10, so bit 5 clears it and bit 4 sets 11; auth is 01, the other way.
    return (5, 4) if level == ENCRYPT else (4, 5)


def header_table(level, packet):
    """{(byte, bit): reason} for every bit of the 16 header bytes, derived by hand from PROTOCOL.md."""
    to_none, to_three = level_bits(level)
    fragment = packet != "single packet"
    i = 1 if packet == "fragment 1 of 2" else 0
    rows = [
        # (byte, bits, reason): why
        (0, {7, 6}, "malformed"),  # ver 01 becomes 00 or 11: only version 1 exists (step 1)
        (0, {to_three}, "malformed"),  # lvl 3 is no level (step 1)
        # Claiming none drops the tag from the layout: s grows by 16 (775 / 616), and the fields
        # still describe a frame (L = 1550 / 616); the only fault left is the level (step 2).
        (0, {to_none}, "level_mismatch"),
        (0, {3, 1, 0}, "malformed"),  # type 1 becomes 9, 3 or 0: unknown types (step 1)
        # type 1 becomes 5, PROBE. A control packet must be one datagram (frag_count 1) under
        # key index 0 (§5): a fragment of 2 is malformed; the single packet has a control
        # header, its level matches, and its tag is not under the control key -> auth.
        (0, {2}, "malformed" if fragment else "auth"),
    ]
    if fragment:
        rows += [
            # frag_big 0 -> 1: r = 1 < n = 2 is plausible. Fragment 0 (i < r) then holds q + 1
            # bytes, q = 758, L = 1517; fragment 1 (i >= r) has q = 759, L = 1519: only the tag tells.
            (1, {0}, "auth"),
            (1, set(range(1, 8)), "malformed"),  # r >= 2 = n (step 1)
            # frag_index 0 -> 1 makes the counter 0 smaller than i: base would be negative (§2).
            # frag_index 1 -> 0 is fragment 0 of the same 1518-byte frame, plausible: the tag tells.
            (2, {0}, "malformed" if i == 0 else "auth"),
            (2, set(range(1, 8)), "malformed"),  # i >= 3 > n - 1 (step 1)
            (3, {1}, "malformed"),  # frag_count 2 -> 0 (step 1)
            # frag_count 2 -> 130: L = 130 * 759 = 98670 > 65557, beyond a FRAME (step 1, §2)
            (3, {7}, "malformed"),
            # frag_count 2 -> 3, 6, 10, 18, 34, 66: L = n * 759 <= 50094 fits a FRAME -> the tag tells
            (3, {0, 2, 3, 4, 5, 6}, "auth"),
        ]
    else:
        rows += [
            (1, set(range(8)), "malformed"),  # frag_big 0 -> 2**bit >= 1 = n (step 1)
            (2, set(range(8)), "malformed"),  # frag_index 0 -> 2**bit >= 1 = n (step 1)
            (3, {0}, "malformed"),  # frag_count 1 -> 0 (step 1)
            # frag_count 1 -> 129: L = 129 * 600 = 77400 > 65557, beyond a FRAME (step 1, §2)
            (3, {7}, "malformed"),
            # frag_count 1 -> 3, 5, 9, 17, 33, 65: L = n * 600 <= 39000 fits -> the tag tells
            (3, set(range(1, 7)), "auth"),
        ]
    rows += [
        # key_index 0 -> 2**(8 * (7 - byte) + bit). 128 and above are more than 64 ahead (step 4).
        (4, set(range(8)), "key_index"),
        (5, set(range(8)), "key_index"),
        (6, set(range(8)), "key_index"),
        (7, {7}, "key_index"),
        (7, {0}, "auth"),  # 1 is "next", held: the tag tells (step 5)
        # 2..64 are ahead and derived on demand; a fresh receiver's bucket is full -> the tag tells
        (7, set(range(1, 7)), "auth"),
    ]
    # counter c -> c ^ 2**k (bytes 8-15, bit 0 of byte 15 is the lowest). Only fragment 1
    # can go below its frag_index: counter 1 -> 0 < i = 1 (§2). Everything else -> the tag tells.
    for byte in range(8, 16):
        low_bit = {0} if (byte == 15 and i == 1) else set()
        rows += [(byte, low_bit, "malformed"), (byte, set(range(8)) - low_bit, "auth")]
    table = {}
    for byte, bits, reason in rows:
        for bit in bits:
            assert (byte, bit) not in table, (byte, bit)
            table[byte, bit] = reason
    assert len(table) == 128  # every header bit has exactly one row
    return table


def sealed(level, packet):
    """The frame and its datagrams, sealed by a fresh datapath sender."""
    tx = _fast.Datapath(level)
    tx.set_send_session(SECRET)
    frame = FRAMES[packet]
    return frame, tx.seal(frame)


def extension_reason(level, datagram, genuine, frame):
    """The drop reason a fresh datapath receiver gives; it must still deliver the frame afterwards."""
    # A small reassembly table: a fresh receiver per flip stays cheap, and one frame needs one slot.
    rx = _fast.Datapath(level, reassembly_kib=64)
    rx.set_recv_session(SECRET)
    items = rx.open(datagram, T0)
    if items:
        ((ptype, whole),) = items
        assert ptype in _fast.CONTROL_TYPES and whole == datagram and rx.last_drop is None
        with pytest.raises(_fast.Dropped) as drop:
            _fast.open_control(level, CTL_KEY, datagram)
        reason = drop.value.reason
    else:
        reason = rx.last_drop
        assert reason is not None and rx.counters()["rx"][reason] == 1
    assert _fast.reassembly_in_use(rx) == 0 and rx.recv_index == 0
    delivered = [item for packet in genuine for item in rx.open(packet, T0)]
    assert delivered == [(ref.TYPE_FRAME, frame)] and rx.last_drop is None
    return reason


def reference_reason(level, datagram, genuine, frame):
    """The drop reason a fresh reference receiver gives; it must still deliver the frame afterwards."""
    rx = ref.Receiver(level, ctl_key=CTL_KEY)
    rx.set_session(SECRET)
    assert rx.open(datagram, T0) == []
    reason = rx.last_drop
    delivered = [item for packet in genuine for item in rx.open(packet, T0)]
    assert delivered == [(ref.TYPE_FRAME, frame)] and rx.last_drop is None
    return reason


def flipped(datagram, position, bit):
    out = bytearray(datagram)
    out[position] ^= 1 << bit
    return bytes(out)


@pytest.mark.parametrize("packet", PACKETS)
@pytest.mark.parametrize("level", [AUTH, ENCRYPT])
def test_the_packets_under_test_have_the_headers_the_table_assumes(level, packet):
    frame, datagrams = sealed(level, packet)
    datagram = datagrams[WHOLE[packet]]
    byte0 = 0x40 | level << 4 | ref.TYPE_FRAME
    if packet == "single packet":
        assert len(datagrams) == 1 and len(datagram) == 632
        assert datagram[:16] == bytes([byte0, 0, 0, 1]) + bytes(12)
    else:
        i = WHOLE[packet]
        assert len(datagrams) == 2 and len(datagram) == 791
        assert datagram[:16] == bytes([byte0, 0, i, 2]) + bytes(4) + i.to_bytes(8, "big")


@pytest.mark.parametrize("packet", PACKETS)
@pytest.mark.parametrize("level", [AUTH, ENCRYPT])
def test_every_header_bit_flip_is_dropped_for_the_reason_in_the_table_and_the_reference(level, packet):
    frame, genuine = sealed(level, packet)
    datagram = genuine[WHOLE[packet]]
    table = header_table(level, packet)
    extension, reference = {}, {}
    for byte in range(ref.HEADER_LEN):
        for bit in range(8):
            tampered = flipped(datagram, byte, bit)
            extension[byte, bit] = extension_reason(level, tampered, genuine, frame)
            reference[byte, bit] = reference_reason(level, tampered, genuine, frame)
    assert reference == table
    assert extension == table


@pytest.mark.parametrize("packet", PACKETS)
@pytest.mark.parametrize("level", [AUTH, ENCRYPT])
def test_every_payload_and_tag_bit_flip_is_dropped_as_auth_by_the_extension_and_the_reference(level, packet):
    frame, genuine = sealed(level, packet)
    datagram = genuine[WHOLE[packet]]
    wrong = {}
    for position in range(ref.HEADER_LEN, len(datagram)):
        for bit in range(8):
            tampered = flipped(datagram, position, bit)
            reasons = [reason(level, tampered, genuine, frame) for reason in (extension_reason, reference_reason)]
            if reasons != ["auth", "auth"]:
                wrong[position, bit] = reasons
    assert wrong == {}
