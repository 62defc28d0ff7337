"""Fuzz target: raw datagrams into the receive path and the admission gate at each level, as a stranger sends them."""

# Input: byte 0 picks the level (none, auth, encrypt) and whether a receive session exists,
# byte 1 its session id (header byte 8); the rest is a sequence of length-prefixed datagrams
# opened in order as the rx pump opens them (handshake and probe packets through the admission
# gate, from a fixed source), with the clock moving between them. At level none nothing is
# authenticated, so fragments reach reassembly as sent; at auth and encrypt data packets stop
# at the tag, after the header checks and the session and key-index lookups, and handshake
# messages at mac1. Whatever arrives: no crash, no sanitizer report, and a drop always names
# a reason.

import socket
import struct

import harness
from harness import KEY, Reader

from etun import _fast

LEVELS = (_fast.LEVEL_NONE, _fast.LEVEL_AUTH, _fast.LEVEL_ENCRYPT)
DATA_TYPES = (_fast.TYPE_FRAME, _fast.TYPE_FRAME_VNET)
HANDED_UP = (*_fast.HANDSHAKE_TYPES, *_fast.PROBE_TYPES)
SOURCE = struct.pack("=H", socket.AF_INET) + (5555).to_bytes(2, "big") + bytes([198, 19, 2, 1]) + bytes(8)


def test_one_input(data: bytes) -> None:
    r = Reader(data)
    mode = r.byte()
    level = LEVELS[mode % 3]
    dp = harness.datapath(level)
    session_id = r.byte()
    if not mode & 0x80:
        dp.set_recv_session(KEY, session_id)
    now = 1000
    for _ in range(64):
        if r.left() < 2:
            break
        datagram = r.chunk(_fast.UDP_DATAGRAM_MAX)
        now += r.byte() * 4
        fragments = dp.counters()["rx"]["fragments"]
        out = _fast.open_exact(dp, datagram, now, SOURCE)
        if not out:
            assert dp.last_drop is not None or dp.counters()["rx"]["fragments"] > fragments, \
                "a datagram vanished uncounted"
        for ftype, frame in out:
            assert ftype in (*DATA_TYPES, _fast.TYPE_SESSION, *HANDED_UP), ftype
            if ftype in DATA_TYPES:
                assert _fast.MIN_FRAME_LEN <= len(frame) <= _fast.MAX_PAYLOAD_LEN, len(frame)
            elif ftype in HANDED_UP:
                assert frame == datagram, "a handshake or probe packet is handed up whole"
            if level != _fast.LEVEL_NONE:
                # Nobody but the peer holds a session's keys; a stranger's bytes open nothing,
                # and no handshake message passes mac1 without the key file.
                assert ftype in _fast.PROBE_TYPES, f"a stranger's datagram was accepted as type {ftype}"


if __name__ == "__main__":
    harness.main(test_one_input)
