"""Fuzz target: authentic datagrams with fuzzer-chosen fields into the receive path, or wrong-key ones."""

# A stranger's packets stop at the tag (fuzz_open.py); this target seals what the fuzzer
# chooses with the session's real keys, so every field behind the tag is exercised: fragment
# geometry, key-index look-ahead and promotion, the replay window, reassembly, decryption.
# Input: byte 0 picks the level (auth or encrypt) and the key (the session's, or a wrong one),
# then up to 48 packets, each: header fields, counter and index choices, payload, a clock step.
# Oracles: with the wrong key nothing is ever delivered; a frame delivered has a length its
# type allows and, when its packets were all sealed by the sender (fuzz_reasm.py covers that
# case fully), is never delivered twice.

import hmac

import harness
from harness import KEY, WRONG_KEY, Reader

from etun import _fast
from tests.reference import index_keys, pack_header

LEVELS = (_fast.LEVEL_AUTH, _fast.LEVEL_ENCRYPT)
REFUSED = {"auth", "key_index", "malformed", "level_mismatch", "no_session", "control_queue"}


def seal(level: int, secret: bytes, header: bytes, payload: bytes) -> bytes:
    key_index = int.from_bytes(header[4:8], "big")
    mac_key = index_keys(secret, key_index)[1]
    body = header + payload
    return body + hmac.new(mac_key, body, "sha256").digest()[:16]


def test_one_input(data: bytes) -> None:
    r = Reader(data)
    mode = r.byte()
    level = LEVELS[mode & 1]
    wrong = bool(mode & 2)
    secret = WRONG_KEY if wrong else KEY
    dp = harness.datapath(level)
    dp.set_recv_session(KEY)
    now = 1000
    counter = 0
    index = 0
    for _ in range(48):
        if r.left() < 4:
            break
        op = r.byte()
        if op >= 250:
            # The control plane's moves between packets: a new receive session, a catch-up.
            if op == 250:
                dp.set_recv_session(KEY)
            else:
                dp.catch_up_recv(r.int(4) if op == 251 else (index + (r.byte() & 0x7F)) & 0xFFFFFFFF)
            continue
        b0 = r.byte()
        # Mostly well-formed first bytes (version 1, our level, a data type), sometimes anything.
        first = b0 if b0 >= 0xF0 else ((1 << 6) | (level << 4) | (1 if b0 & 1 else 2))
        big, frag_index, count = r.byte(), r.byte(), r.byte()
        step = r.byte()
        if step < 128:
            counter = (counter + step) & 0xFFFFFFFFFFFFFFFF
        elif step < 192:
            counter = max(0, counter - (step - 128))
        else:
            counter = r.int(8)
        how = r.byte()
        if how < 200:
            index = index + (how % 3) - 1 if how < 150 else index + (how & 0x3F)
        else:
            index = r.int(4)
        index &= 0xFFFFFFFF
        header = bytes([first, big, frag_index, count]) + pack_header(0, 0, 0, 0, 0, index, counter)[4:]
        payload = r.chunk(_fast.MAX_PACKET_MAX)
        now += r.byte() * 2
        datagram = seal(level, secret, header, payload)
        out = _fast.open_exact(dp, datagram, now)
        if wrong:
            assert not out or out[0][0] in _fast.CONTROL_TYPES, "a datagram under the wrong key was accepted"
            assert out or dp.last_drop in REFUSED, dp.last_drop
        for ftype, frame in out:
            if ftype in (_fast.TYPE_FRAME, _fast.TYPE_FRAME_VNET):
                assert _fast.MIN_FRAME_LEN <= len(frame) <= _fast.MAX_PAYLOAD_LEN, len(frame)


if __name__ == "__main__":
    harness.main(test_one_input)
