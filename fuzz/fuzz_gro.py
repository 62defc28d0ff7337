"""Fuzz target: software GRO (gro_merge) on fuzzer-shaped TCP trains, each merge cut back by GSO."""

# Input: the shape of a train -- IPv4 or IPv6, VLAN tags, segment count and size, TCP options,
# flags -- then per segment a few fuzzer-chosen deviations (a sequence gap, another IP ID, a
# flag, a byte changed with or without fixing the checksums). Random bytes would almost never
# carry valid checksums, and GRO merges only segments that do. Oracle: GRO may merge only what
# GSO turns back into exactly the segments that were sent: in order, every message is either
# one frame as it came (behind a zero vnet header) or a super-frame that gso_split() cuts into
# exactly the next frames of the batch.

import struct

import harness
from harness import Reader

from etun import _fast

OUT_BATCH = 64                  # frames gro_merge takes at once (OUT_BATCH in _fast.pxd)


def csum(data: bytes) -> int:
    """The Internet checksum (RFC 1071). 2^16 is 1 modulo 0xFFFF, so the data read as one
    big-endian number leaves the ones' complement sum of its 16-bit words modulo 0xFFFF; that
    sum is 0 only for all-zero data, and 0xFFFF (which the modulo makes 0) otherwise."""
    if len(data) % 2:
        data += b"\0"
    total = int.from_bytes(data, "big") % 0xFFFF
    if total == 0 and any(data):
        total = 0xFFFF
    return ~total & 0xFFFF


def segment(v6: bool, tags: int, seq: int, ipid: int, flags: int, options: bytes, payload: bytes,
            fix: bool = True) -> bytearray:
    eth = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01"
    for k in range(tags):
        eth += (b"\x88\xa8" if k == 0 and tags > 1 else b"\x81\x00") + struct.pack("!H", 10 + k)
    doff = (20 + len(options)) // 4
    tcp = bytearray(struct.pack("!HHIIBBHHH", 40000, 5201, seq & 0xFFFFFFFF, 777, doff << 4, flags, 512, 0, 0)
                    + options + payload)
    if v6:
        src, dst = bytes(15) + b"\x01", bytes(15) + b"\x02"
        ip = bytearray(struct.pack("!IHBB", 0x60000000, len(tcp), 6, 64) + src + dst)
        pseudo = src + dst + struct.pack("!IxxxB", len(tcp), 6)
        eth += b"\x86\xdd"
    else:
        src, dst = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
        ip = bytearray(struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(tcp), ipid & 0xFFFF, 0x4000, 64, 6, 0) + src + dst)
        if fix:
            ip[10:12] = struct.pack("!H", csum(bytes(ip)))
        pseudo = src + dst + struct.pack("!xBH", 6, len(tcp))
        eth += b"\x08\x00"
    if fix:
        tcp[16:18] = struct.pack("!H", csum(pseudo + bytes(tcp)))
    return bytearray(eth + ip + tcp)


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
        frame = segment(v6, tags, seq, ipid, flags, options, bytes([dev]) * size, fix=dev != 255)
        if dev >= 250:
            # One byte changed after the checksums were made: never merged, passed on as it came.
            at = r.int(2) % len(frame)
            frame[at] ^= r.byte() or 1
        frames.append(bytes(frame))
        seq += size
        ipid += 1
    if not frames:
        return
    messages = _fast.gro_merge(frames, harness.datapath(_fast.LEVEL_NONE, role="gro"))
    i = 0
    for message in messages:
        vnet, body = message[:_fast.VNET_HDR_LEN], message[_fast.VNET_HDR_LEN:]
        if vnet[1] == 0:
            assert vnet == bytes(_fast.VNET_HDR_LEN) and body == frames[i], f"frame {i} was changed"
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
