"""Fuzz target: software GRO (gro_merge) on fuzzer-shaped TCP trains, each merge cut back by GSO."""

# Input: the shape of a train -- IPv4 or IPv6, VLAN tags, segment count and size, TCP options,
# flags -- then per segment a few fuzzer-chosen deviations (a sequence gap, another IP ID, a
# flag, a byte changed with or without fixing the checksums). Random bytes would almost never
# carry valid checksums, and GRO merges only segments that do. Oracle: GRO may merge only what
# GSO turns back into exactly the segments that were sent: in order, every message is either
# one frame as it came (behind a zero vnet header) or a super-frame that gso_split() cuts into
# exactly the next frames of the batch.

import functools
import struct

import harness
from harness import Reader

from etun import _fast

OUT_BATCH = 64                  # frames gro_merge takes at once (OUT_BATCH in _fast.pxd)


FILL = [bytes([b]) * 1700 for b in range(256)]      # payloads: a view of one of these, no copy
ZERO_VNET = bytes(_fast.VNET_HDR_LEN)


def fold(total: int) -> int:
    """The Internet checksum (RFC 1071) of data that is not all zero, from the data read as a
    big-endian number modulo 0xFFFF: 2^16 is 1 modulo 0xFFFF, so that is the ones' complement
    sum of its 16-bit words, where a sum of 0 stands for 0xFFFF."""
    return ~(total % 0xFFFF or 0xFFFF) & 0xFFFF


def words(data: bytes) -> int:
    """The even-length `data` read as one big-endian number, modulo 0xFFFF (see fold)."""
    return int.from_bytes(data, "big") % 0xFFFF


@functools.cache
def ethernet(v6: bool, tags: int) -> bytes:
    eth = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01"
    for k in range(tags):
        eth += (b"\x88\xa8" if k == 0 and tags > 1 else b"\x81\x00") + struct.pack("!H", 10 + k)
    return eth + (b"\x86\xdd" if v6 else b"\x08\x00")


V6_SRC, V6_DST = bytes(15) + b"\x01", bytes(15) + b"\x02"
V4_SRC, V4_DST = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])


def segment(v6: bool, tags: int, seq: int, ipid: int, flags: int, options: bytes, fill: int, size: int,
            fix: bool = True) -> bytes:
    """One TCP segment in its Ethernet frame, `size` bytes of `fill` as payload, its checksums
    right unless not `fix`. The payload's share of the TCP checksum is worked out, not read:
    `size` bytes of b equal size // 2 words of b * 257, and a last b * 256 if size is odd."""
    doff = (20 + len(options)) // 4
    tcp_len = 20 + len(options) + size
    if v6:
        ip = struct.pack("!IHBB", 0x60000000, tcp_len, 6, 64) + V6_SRC + V6_DST
        pseudo = V6_SRC + V6_DST + struct.pack("!IxxxB", tcp_len, 6)
    else:
        ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + tcp_len, ipid & 0xFFFF, 0x4000, 64, 6, 0) + V4_SRC + V4_DST
        if fix:
            ip = ip[:10] + struct.pack("!H", fold(words(ip))) + ip[12:]
        pseudo = V4_SRC + V4_DST + struct.pack("!xBH", 6, tcp_len)
    check = 0
    if fix:
        head = struct.pack("!HHIIBBHHH", 40000, 5201, seq & 0xFFFFFFFF, 777, doff << 4, flags, 512, 0, 0)
        check = fold(words(pseudo) + words(head + options) + size // 2 * fill * 257 + size % 2 * fill * 256)
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, seq & 0xFFFFFFFF, 777, doff << 4, flags, 512, check, 0)
    return b"".join((ethernet(v6, tags), ip, tcp, options, memoryview(FILL[fill])[:size]))


_cutter = []


def cutter():
    """gso_split() as the capture path runs it, on a datapath and engine built once."""
    dp = harness.datapath(_fast.LEVEL_NONE, 9000, role="gso")
    if not _cutter:
        _cutter.append(_fast.LanCapture(dp))
    dp.set_send_session(b"")
    return _cutter[0]


def test_one_input(data: bytes) -> None:
    r = Reader(data)
    shape = r.byte()
    v6, tags = bool(shape & 1), (shape >> 1) % 3
    count = 1 + r.byte() % 70 if shape & 0x40 else 1 + r.byte() % 12
    mss = 1 + r.int(2) % (1600 if shape & 0x20 else 120)
    options = bytes(r.byte() % 3 * 4 * (1 if shape & 0x80 else 0))
    frames: list[bytes] = []
    seq, ipid = r.int(4), r.int(2)
    for _ in range(count):
        if len(frames) == OUT_BATCH:
            break
        dev = r.byte()
        size = mss if dev < 200 else 1 + r.int(2) % (mss + 8)
        flags = 0x10 if dev < 230 else r.byte()
        if 220 <= dev < 225:
            seq += r.byte()
        if 225 <= dev < 230:
            ipid += r.byte()
        frame = segment(v6, tags, seq, ipid, flags, options, dev, size, fix=dev != 255)
        if dev >= 250:
            # One byte changed after the checksums were made: never merged, passed on as it came.
            changed = bytearray(frame)
            at = r.int(2) % len(changed)
            changed[at] ^= r.byte() or 1
            frame = bytes(changed)
        frames.append(frame)
        seq += size
        ipid += 1
    if not frames:
        return
    messages = _fast.gro_merge(frames, harness.datapath(_fast.LEVEL_NONE, role="gro"))
    i = 0
    for message in messages:
        if message[1] == 0:          # no GSO type: one frame as it came, behind a zero header
            assert (message.startswith(ZERO_VNET) and i < len(frames)
                    and memoryview(message)[_fast.VNET_HDR_LEN:] == frames[i]), f"frame {i} was changed"
            i += 1
            continue
        kind, cut = cutter().capture(message)
        assert kind == "segments", f"a merged super-frame GSO does not cut: {kind}"
        assert len(cut) >= 2, "a super-frame of one segment"
        assert cut == frames[i:i + len(cut)], f"frames {i}..{i + len(cut) - 1} do not survive GRO + GSO"
        i += len(cut)
    assert i == len(frames), f"{len(frames)} frames in, {i} out"


if __name__ == "__main__":
    harness.main(test_one_input)
