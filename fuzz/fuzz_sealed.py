"""Fuzz target: authentic datagrams with fuzzer-chosen fields into the receive path, or wrong-key ones."""

# A stranger's packets stop at the tag (fuzz_open.py); this target seals what the fuzzer
# chooses with a session's real keys (tests/reference.py derives them, independently of the
# datapath), so every field behind the tag is exercised: fragment geometry, the session id and
# its roles (current, previous, next: key confirmation), segment, key indices and their
# movement by data packets and SESSION messages, the 48-bit counter and the replay window,
# reassembly, decryption. Input: byte 0 picks the level (auth or encrypt) and the key (the
# session's, or a wrong one), then up to 48 steps, each a packet -- first byte, fragment
# fields, type, session id, segment, key index and counter choices, payload, a clock step --
# or a move of the control plane: a session installed (current or next), the sessions dropped.
# Oracles: with the wrong key nothing is ever delivered; a frame delivered has a length its
# type allows; a single-packet frame under the right key comes out as it was sealed.

import harness
from harness import KEY, WRONG_KEY, Reader

from etun import _fast
from tests import reference as ref

LEVELS = (_fast.LEVEL_AUTH, _fast.LEVEL_ENCRYPT)
SEALED = (_fast.TYPE_FRAME, _fast.TYPE_FRAME_VNET, _fast.TYPE_SESSION)
REFUSED = {"auth", "key_index", "malformed", "level_mismatch", "no_session", "version"}
LIMITS = {_fast.TYPE_FRAME: (_fast.MIN_FRAME_LEN, _fast.MAX_FRAME_LEN),
          _fast.TYPE_FRAME_VNET: (_fast.VNET_HDR_LEN + _fast.MIN_FRAME_LEN, _fast.MAX_PAYLOAD_LEN),
          _fast.TYPE_SESSION: (ref.SESSION_MIN_LEN, ref.SESSION_MAX_LEN)}


def mac_key(secret: bytes, index_root: bytes, ptype: int, key_index: int) -> bytes:
    if ptype == _fast.TYPE_SESSION:
        return ref.control_keys(secret)[1]
    return ref.data_keys(secret, index_root, key_index)[1]


def test_one_input(data: bytes) -> None:
    r = Reader(data)
    mode = r.byte()
    level = LEVELS[mode & 1]
    wrong = bool(mode & 2)
    secret = WRONG_KEY if wrong else KEY
    index_root = harness.secrets(level).index_root
    dp = harness.datapath(level)
    ids = [r.byte()]                       # the receive session ids installed, latest last
    dp.set_recv_session(KEY, ids[0], r.int(4) if mode & 4 else 0)
    now = 1000
    counter = 0
    index = dp.recv_index
    for _ in range(48):
        if r.left() < 4:
            break
        op = r.byte()
        if op >= 248:
            # The control plane's moves between packets: a new session (the initiator's,
            # current at once, or the responder's, waiting in next), or every session dropped.
            if op < 254:
                ids.append(r.byte())
                dp.set_recv_session(KEY, ids[-1], r.int(4) if op & 1 else index, confirmed=op < 251)
            else:
                dp.drop_sessions(keep_next=op == 254)
            continue
        b0 = r.byte()
        # Mostly well-formed first bytes (version 2, our level, a sealed type), sometimes anything.
        ptype = SEALED[b0 % 3] if b0 < 0xF0 else b0 & 0x0F
        first = b0 if b0 >= 0xF0 else ref.first_byte(level, ptype)
        big, frag_index, count = r.byte(), r.byte(), r.byte()
        pick = r.byte()
        session = ids[pick % len(ids)] if pick < 240 else r.byte()
        segment = r.byte() if pick & 1 else 0
        step = r.byte()
        if step < 128:
            counter += step
        elif step < 192:
            counter -= step - 128
        else:
            counter = r.int(6)
        counter = min(max(counter, 0), ref.COUNTER_LIMIT - 1)
        how = r.byte()
        if how < 200:
            index = index + (how % 3) - 1 if how < 150 else index + (how & 0x3F)
        else:
            index = r.int(4)
        index &= 0xFFFFFFFF
        header = bytes([first, big, frag_index, count]) + ref.pack_header(
            level, 0, key_index=index, session=session, segment=segment, counter=counter)[4:]
        payload = r.chunk(_fast.MAX_PACKET_MAX)
        now += r.byte() * 2
        datagram = ref.build_packet(level, mac_key(secret, index_root, ptype, index), header, payload)
        out = _fast.open_exact(dp, datagram, now)
        if wrong:
            assert not out or out[0][0] not in SEALED, "a datagram under the wrong key was accepted"
            assert out or dp.last_drop in REFUSED, dp.last_drop
        for ftype, frame in out:
            if ftype in SEALED:
                low, high = LIMITS[ftype]
                assert low <= len(frame) <= high, (ftype, len(frame))
                if count == 1 and b0 < 0xF0:
                    plain = payload
                    if level == _fast.LEVEL_ENCRYPT:
                        enc_key = (ref.control_keys(secret)[0] if ptype == _fast.TYPE_SESSION
                                   else ref.data_keys(secret, index_root, index)[0])
                        plain = ref.chacha20(enc_key, ref.frame_nonce(index, session, segment, counter), payload)
                    assert (ftype, frame) == (ptype, plain), "a frame came out other than it was sealed"


if __name__ == "__main__":
    harness.main(test_one_input)
