"""Fuzz target: raw datagrams into the receive path (Datapath.open) at each level, as a stranger sends them."""

# Input: byte 0 picks the level (none, auth, encrypt) and whether a receive session exists;
# the rest is a sequence of length-prefixed datagrams opened in order, with the clock moving
# between them. At level none nothing is authenticated, so fragments reach reassembly as sent;
# at auth and encrypt they stop at the tag, after the header checks and the key-index lookup
# (which may derive keys ahead). Whatever arrives: no crash, no sanitizer report, and a drop
# always names a reason.

import harness
from harness import KEY, Reader

from etun import _fast

LEVELS = (_fast.LEVEL_NONE, _fast.LEVEL_AUTH, _fast.LEVEL_ENCRYPT)


def test_one_input(data: bytes) -> None:
    r = Reader(data)
    mode = r.byte()
    level = LEVELS[mode % 3]
    dp = harness.datapath(level)
    if not mode & 0x80:
        dp.set_recv_session(KEY)
    now = 1000
    for _ in range(64):
        if r.left() < 2:
            break
        datagram = r.chunk(_fast.UDP_DATAGRAM_MAX)
        now += r.byte() * 4
        out = _fast.open_exact(dp, datagram, now)
        if not out:
            assert dp.last_drop is not None or dp.counters()["rx"]["fragments"], "a datagram vanished uncounted"
        for ftype, frame in out:
            assert ftype in (_fast.TYPE_FRAME, _fast.TYPE_FRAME_VNET, *_fast.CONTROL_TYPES), ftype
            if ftype in (_fast.TYPE_FRAME, _fast.TYPE_FRAME_VNET):
                assert _fast.MIN_FRAME_LEN <= len(frame) <= _fast.MAX_PAYLOAD_LEN, len(frame)


if __name__ == "__main__":
    harness.main(test_one_input)
