"""Fuzz target: the LAN capture path, from a captured frame to what would be sealed.

The LAN capture path: tag restore, own-tunnel check, segment selection, filter, vnet header, GSO
cutting."""

# Input: byte 0 picks the auxdata the kernel attaches (no tag, an 802.1Q or 802.1ad tag moved
# into metadata), the level, a filter and a trunk (VLAN segments: the selected tags come off);
# bytes 1-2 the UDP port etun listens on; the rest is what the AF_PACKET socket reads: a 10-byte
# virtio_net_hdr and the frame. Oracles: a super-frame is cut into segments that carry exactly
# its payload, in order, none longer than its headers + gso_size; a frame kept whole keeps its
# length, less the tags its segment selected (4 or 8 bytes).

import harness
from harness import KEY, Reader

from etun import _fast

AUX_VLAN_VALID, AUX_TPID_VALID = 0x10, 0x40      # TP_STATUS_VLAN_VALID, TP_STATUS_VLAN_TPID_VALID
AUX = ((0, 0), (AUX_VLAN_VALID, 0),
       (AUX_VLAN_VALID | AUX_TPID_VALID, 0x88A8), (AUX_VLAN_VALID | AUX_TPID_VALID, 0x8100))


FILTER = [(False, "ethertype", 0x88B5), (False, "oui", b"\x01\x80\xc2"), (False, "ethertype", 0x8100)]
# A trunk: VLAN 10, QinQ 10.20 (the longest path wins) and the untagged frames.
TRUNK = [(0, (10,), False), (0, (10, 20), False), (0, (), False)]
_captures: dict = {}


def capture(level: int, filtered: bool, trunk: bool):
    """A LanCapture on a datapath reset to its start (built once: the engine's buffers are large)."""
    key = (level, filtered, trunk)
    dp = harness.datapath(level, 9000, role=f"lan-{filtered}-{trunk}")
    if key not in _captures:
        if trunk:
            dp.set_segments(TRUNK)
        for segment in range(dp.segments) if filtered else ():
            dp.set_filter(_fast.FILTER_NIC_INGRESS, True, FILTER, segment)
        _captures[key] = _fast.LanCapture(dp)
    dp.set_send_session(KEY if level else b"")
    return _captures[key]


def test_one_input(data: bytes) -> None:
    r = Reader(data)
    mode = r.byte()
    status, tpid = AUX[mode & 3]
    level = _fast.LEVEL_AUTH if mode & 4 else _fast.LEVEL_NONE
    trunk = bool(mode & 16)
    lan = capture(level, bool(mode & 8), trunk)
    port = r.int(2)
    message = r.bytes(r.left())
    if len(message) < _fast.VNET_HDR_LEN or len(message) - _fast.VNET_HDR_LEN > _fast.MAX_FRAME_LEN:
        return
    tci = int.from_bytes(message[:2], "big") ^ 0x5A5A
    kind, out = lan.capture(message, status, tpid, tci, port)
    frame_len = len(message) - _fast.VNET_HDR_LEN + (4 if status and frame_len_ok(message) else 0)
    if trunk and kind in ("frame", "frame_vnet"):
        cut = frame_len + (_fast.VNET_HDR_LEN if kind == "frame_vnet" else 0) - len(out)
        assert cut in (0, 4, 8), (len(out), frame_len, kind)
    elif kind == "frame":
        assert len(out) == frame_len, (len(out), frame_len)
    elif kind == "frame_vnet":
        assert len(out) == frame_len + _fast.VNET_HDR_LEN
    elif kind == "segments_flushed":
        assert out, "a super-frame cut into nothing"
    elif kind == "segments" and not trunk:      # with a trunk, headers shrank by the tags taken off
        mss = int.from_bytes(message[4:6], "little")
        n = frame_len
        assert out, "a super-frame cut into nothing"
        if len(out) == 1:
            assert len(out[0]) <= n
            return
        total = sum(map(len, out))
        hdr, rest = divmod(total - n, len(out) - 1)
        assert rest == 0 and 0 < hdr < n, (total, n, len(out))
        assert all(len(s) - hdr <= mss for s in out), "a segment longer than gso_size"
        frame = tag_restored(message, status, tpid, tci)
        assert b"".join(s[hdr:] for s in out) == frame[hdr:], "segments do not carry the payload as sent"


def frame_len_ok(message: bytes) -> bool:
    return len(message) - _fast.VNET_HDR_LEN >= 12


def tag_restored(message: bytes, status: int, tpid: int, tci: int) -> bytes:
    frame = message[_fast.VNET_HDR_LEN:]
    if not status or len(frame) < 12:
        return frame
    return frame[:12] + (tpid or 0x8100).to_bytes(2, "big") + tci.to_bytes(2, "big") + frame[12:]


if __name__ == "__main__":
    harness.main(test_one_input)
