"""Segments in the datapath: frame to segment, tags off and on, the segment byte, strays kept off.

Which segment a captured frame belongs to and what is sealed of it (table-driven), the tags pushed
on the way out with the priority carried across, the segment byte on the wire, and frames for
segments the peer lacks kept off it."""

import struct

import pytest
from etun._fast import SEGMENT_NONE, segment_admits_frame, segment_capture, segment_inject

from etun import _fast

DST, SRC = bytes.fromhex("020000000002"), bytes.fromhex("020000000001")
PAYLOAD = bytes.fromhex("0800") + bytes(range(46))       # an EtherType and something behind it


def tag(tpid: int, vid: int, pcp: int = 0, dei: int = 0) -> bytes:
    return struct.pack("!HH", tpid, (pcp << 13) | (dei << 12) | vid)


def q(vid, pcp=0, dei=0):
    return tag(0x8100, vid, pcp, dei)


def ad(vid, pcp=0):
    return tag(0x88A8, vid, pcp)


def frame(*tags: bytes) -> bytes:
    return DST + SRC + b"".join(tags) + PAYLOAD


def trunk(*segments) -> _fast.Datapath:
    """A datapath whose segments are (port, vlan ids, carry_all)."""
    dp = _fast.Datapath(_fast.LEVEL_NONE)
    dp.set_segments(segments)
    return dp


# port 0: VLAN 10, VLAN 20, QinQ 100.20, VLAN 100, untagged; port 1: one segment for all.
SEGMENTS = [(0, (10,), False), (0, (20,), False), (0, (100, 20), False), (0, (100,), False), (0, (), False),
            (1, (), True)]

SELECTION = [
    # (what, port, frame, segment, pcp, sealed)
    ("one tag", 0, frame(q(10, pcp=5)), 0, 5, frame()),
    ("another tag", 0, frame(q(20)), 1, 0, frame()),
    ("a one-tag path is 802.1Q only: an 802.1ad tag 10 is not VLAN 10", 0, frame(ad(10, pcp=3)), -1, 0, None),
    ("QinQ, 802.1ad outer", 0, frame(ad(100, pcp=6), q(20, pcp=1)), 2, 6, frame()),
    ("QinQ, 802.1Q outer", 0, frame(q(100), q(20)), 2, 0, frame()),
    ("the longest path wins; a deeper tag stays", 0, frame(ad(100), q(20), q(7)), 2, 0, frame(q(7))),
    ("an outer tag with another inner one", 0, frame(q(100), q(30)), 3, 0, frame(q(30))),
    ("... but 802.1ad outside matches only a two-tag path", 0, frame(ad(100), q(30)), -1, 0, None),
    ("an inner 802.1ad tag is not a QinQ path", 0, frame(q(100), ad(20)), 3, 0, frame(ad(20))),
    ("a deeper tag stays in a one-tag segment", 0, frame(q(10), q(5, pcp=2)), 0, 0, frame(q(5, pcp=2))),
    ("untagged goes to the segment without vlan", 0, frame(), 4, 0, frame()),
    ("a priority tag (VLAN 0) is untagged, its tag kept", 0, frame(q(0, pcp=4)), 4, 0, frame(q(0, pcp=4))),
    ("a VLAN nobody selects", 0, frame(q(99)), -1, 0, None),
    ("the segment alone on its port takes all, tags and all", 1, frame(q(10), q(20)), 5, 0, frame(q(10), q(20))),
    ("... and untagged frames", 1, frame(), 5, 0, frame()),
]


@pytest.mark.parametrize("what,port,raw,segment,pcp,sealed", SELECTION, ids=[c[0] for c in SELECTION])
def test_selection_takes_exactly_the_path_off_and_keeps_the_rest(what, port, raw, segment, pcp, sealed):
    assert segment_capture(trunk(*SEGMENTS), port, raw) == (segment, pcp, sealed)


def test_without_an_untagged_segment_untagged_frames_are_not_selected():
    dp = trunk((0, (10,), False))
    assert segment_capture(dp, 0, frame())[0] == -1
    assert segment_capture(dp, 0, frame(q(11)))[0] == -1
    assert segment_capture(dp, 1, frame(q(10)))[0] == -1          # another port


INJECTION = [
    # (what, segments, segment byte (pcp << 5 | id), written to the LAN, port)
    ("VLAN 30 pushed, priority from the wire", [(0, (30,), False)], (5 << 5) | 0, frame(q(30, pcp=5)), 0),
    ("QinQ pushed: 802.1ad outer by default", [(0, (10,), False), (2, (100, 20), False)], (2 << 5) | 1,
     frame(ad(100, pcp=2), q(20, pcp=2)), 2),
    ("untagged: nothing pushed, the priority dropped", [(0, (10,), False), (1, (), True)], (7 << 5) | 1,
     frame(), 1),
]


@pytest.mark.parametrize("what,segments,byte,written,port", INJECTION, ids=[c[0] for c in INJECTION])
def test_injection_pushes_the_local_segments_tags(what, segments, byte, written, port):
    assert segment_inject(trunk(*segments), byte, frame())[:2] == (port, written)


def test_what_is_pushed_is_fixed_whatever_the_lan_sent():
    dp = trunk((0, (100, 20), False), (0, (10,), False))
    assert segment_capture(dp, 0, frame(q(100), q(20)))[0] == 0      # selected with an 802.1Q outer tag
    assert segment_inject(dp, 0, frame())[1] == frame(ad(100), q(20))  # pushed with 802.1ad all the same
    assert segment_inject(dp, 1, frame())[1] == frame(q(10))


@pytest.mark.parametrize("raw,admitted", [
    (frame(), True),
    (frame(q(0, pcp=5)), True),                    # a priority tag alone is untagged
    (frame(q(99)), False),                         # would land in VLAN 99 of the trunk
    (frame(ad(99)), False),
    (frame(q(0), q(99)), False),                   # a priority tag in front of a real one
])
def test_a_trunks_untagged_segment_takes_no_tagged_frame_from_the_tunnel(raw, admitted):
    dp = trunk((0, (10,), False), (0, (), False), (1, (), True))
    assert segment_admits_frame(dp, 1, raw) is admitted
    assert segment_admits_frame(dp, 0, raw) is True                # a VLAN segment pushes its own tag in front
    assert segment_admits_frame(dp, 2, raw) is True                # alone on its NIC: every frame


def test_an_offload_header_moves_with_the_tags_pushed():
    dp = trunk((0, (10, 20), False))
    inner = frame()
    vnet = struct.pack("<BBHHHH", 1, 1, 14 + 20 + 20, 1400, 34, 16)   # NEEDS_CSUM, TCPv4 GSO
    port, written, head = segment_inject(dp, 0, vnet + inner, _fast.TYPE_FRAME_VNET)
    assert written == frame(ad(10), q(20))
    assert struct.unpack("<BBHHHH", head) == (1, 1, 14 + 20 + 20 + 8, 1400, 34 + 8, 16)


def test_the_segment_byte_is_the_peers_id_with_the_priority_and_opens_to_the_same():
    sender = _fast.Datapath(_fast.LEVEL_AUTH)
    receiver = _fast.Datapath(_fast.LEVEL_AUTH)
    secret = bytes(range(32))
    sender.set_send_session(secret, peer_id=7)
    receiver.set_recv_session(secret, session_id=7)
    (datagram,) = sender.seal(frame(), _fast.TYPE_FRAME, segment=(3 << 5) | 2)
    assert datagram[9] == (3 << 5) | 2
    assert receiver.open(datagram) == [(_fast.TYPE_FRAME, frame())]
    assert receiver.last_segment == (3 << 5) | 2


def test_a_new_peer_instance_starts_without_a_segment_map_and_the_same_instance_keeps_it():
    dp = _fast.Datapath(_fast.LEVEL_NONE)
    dp.set_segments([(0, (10,), False), (0, (20,), False)])
    assert _fast.segment_map(dp) is None
    dp.set_send_session()                                 # generation 0: no control plane, same ids
    assert _fast.segment_map(dp) == bytes([0, 1])
    dp.set_segment_map(bytes([1, SEGMENT_NONE]), 0)
    assert _fast.segment_map(dp) == bytes([1, SEGMENT_NONE])
    with pytest.raises(ValueError):
        dp.set_segment_map(bytes([1]), 0)                 # one per segment
    with pytest.raises(ValueError):
        dp.set_segment_map(bytes([1, _fast.SEGMENTS_MAX]), 0)
    engine = _fast.Engine(dp, -1, _fast.LAN_PACKET, -1, 5555, False, False)
    with pytest.raises(RuntimeError):
        dp.set_segments([(0, (), True)])                  # fixed once an Engine exists
    del engine


@pytest.mark.parametrize("bad", [
    [], [(0, (0,), False)], [(0, (4095,), False)], [(0, (1, 2, 3), False)], [(_fast.PORTS_MAX, (), False)],
    [(0, (10,), True)], [(0, (), False)] * (_fast.SEGMENTS_MAX + 1),
])
def test_set_segments_refuses_what_cannot_be(bad):
    with pytest.raises(ValueError):
        _fast.Datapath(_fast.LEVEL_NONE).set_segments(bad)


def test_filters_and_counts_are_per_segment():
    dp = trunk((0, (10,), False), (0, (20,), False))
    dp.set_filter(_fast.FILTER_NIC_INGRESS, False, [], 1)            # segment 1 denies everything
    assert _fast.filter_check(dp, _fast.FILTER_NIC_INGRESS, frame(), 0) == (True, None)
    assert _fast.filter_check(dp, _fast.FILTER_NIC_INGRESS, frame(), 1) == (False, None)
    assert dp.filter_stats(_fast.FILTER_NIC_INGRESS, 1)["default"] == 1
    assert dp.filter_stats(_fast.FILTER_NIC_INGRESS, 0)["ethertypes"] == {0x0800: 1}
    assert set(dp.segment_counters(1)["tx"]) == {"frames", "bytes", "filter", "malformed", "unknown_segment",
                                                 "local_destination", "loop", "storm"}
    with pytest.raises(ValueError):
        dp.segment_counters(2)
