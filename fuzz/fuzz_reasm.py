"""Fuzz target: reassembly fed a real sender's fragments reordered, duplicated, lost, corrupted, late."""

# Input: byte 0 picks the level and max_packet; then up to 6 frames (length, fill) that a real
# sender seals; then a schedule of up to 96 steps, each delivering one of the datagrams (maybe
# with one bit flipped) and moving the clock. Oracles -- the promises the soak checks on the
# wire: a delivered frame is byte-for-byte one that was sent, no frame is delivered twice, and
# a schedule that delivers every datagram at least once, unharmed, within the reassembly
# timeout, delivers every frame.

import harness
from harness import KEY, Reader

from etun import _fast

LEVELS = (_fast.LEVEL_NONE, _fast.LEVEL_AUTH, _fast.LEVEL_ENCRYPT)
MAX_PACKETS = (320, 800, 1400, 9000)
LENGTHS = (14, 60, 64, 1514, 1518, 1522, 1600, 3000, 9216, 9234, 65557)


# The body of a frame: 251 bytes (a prime: no period of 2^k) from a start, repeated; one per start.
PATTERNS = [bytes((start + i * 7) & 0xFF for i in range(251)) for start in range(256)]


def make_frame(number: int, length: int, fill: int) -> bytes:
    # A frame says which it is in its first bytes, so a mix-up can never pass as correct.
    head = bytes([number]) * 6 + bytes([fill]) * 6
    return (head + PATTERNS[(fill + number) & 0xFF] * (length // 251 + 1))[:length]


def test_one_input(data: bytes) -> None:
    r = Reader(data)
    mode = r.byte()
    level = LEVELS[mode % 3]
    max_packet = MAX_PACKETS[(mode >> 2) & 3]
    sender = harness.datapath(level, max_packet, role="sender")
    receiver = harness.datapath(level, max_packet)
    sender.set_send_session(KEY)
    receiver.set_recv_session(KEY)
    frames, datagrams, large = [], [], 0
    for number in range(1 + r.byte() % 6):
        choice = r.byte()
        length = LENGTHS[choice % len(LENGTHS)] if choice < 200 else 14 + r.int(2) % 2000
        frame = make_frame(number, length, r.byte())
        large += length + 64 > 2048
        frames.append(frame)
        datagrams.extend(sender.seal(frame))
    if not datagrams:
        return
    delivered: list[bytes] = []
    seen = set()
    clean, flipped = True, False
    now = 1000
    for _ in range(96):
        if r.left() < 2:
            break
        pick, how = r.byte() | (r.byte() << 8), r.byte()
        datagram = datagrams[pick % len(datagrams)]
        if how >= 240:
            bit = r.int(2) % (len(datagram) * 8)
            datagram = bytearray(datagram)
            datagram[bit // 8] ^= 1 << (bit % 8)
            clean, flipped = False, True
        if 200 <= how < 240:
            now += (how - 199) * 10
            clean = False
        seen.add(pick % len(datagrams))
        for ftype, frame in _fast.open_exact(receiver, bytes(datagram), now):
            if ftype in (_fast.TYPE_FRAME, _fast.TYPE_FRAME_VNET):
                delivered.append(frame)
    # At level none nothing is authenticated: a flipped bit is a new packet nobody can tell apart.
    if level != _fast.LEVEL_NONE or not flipped:
        for frame in delivered:
            assert frame in frames, f"a {len(frame)}-byte frame that was never sent was delivered"
        for frame in frames:
            assert delivered.count(frame) <= 1 or frames.count(frame) > 1, "a frame was delivered twice"
    if clean and len(seen) == len(datagrams) and large <= 2:
        assert sorted(delivered) == sorted(frames), (
            f"every datagram arrived, yet {len(frames) - len(delivered)} of {len(frames)} frames did not")


if __name__ == "__main__":
    harness.main(test_one_input)
