"""Fuzz target: today's control messages: read/open_control, HELLO decoding, the session state machine."""

# This target belongs to the HELLO protocol (wire version 1); the handshake that replaces it
# gets a target of its own in this file's place. Input: byte 0 picks the level; then up to 24
# steps: a raw datagram; an authentic HELLO whose every field is picked from what the session
# could meet (its own sender nonce and challenges, the peer's, zeros, fuzzer bytes), with a
# counter and a clock step; our own HELLO reflected back; a rotation or renewal being due.
# Oracles: nothing raises; a refused HELLO names a drop reason the daemon counts; a session
# that sends has keys in the datapath; every HELLO the session writes opens and decodes.

import harness
from harness import CONTROL_KEY, Reader

harness.instrumented("etun.session")

from etun import _fast, session  # noqa: E402  (after the instrumented import)

LEVELS = (_fast.LEVEL_AUTH, _fast.LEVEL_ENCRYPT, _fast.LEVEL_NONE)
PRK = bytes(range(100, 132))
REASONS = set(_fast.DROP_REASONS)


class Draws:
    """Deterministic 'random' nonces for the session: the same input, the same run."""

    def __init__(self):
        self.n = 0

    def __call__(self, size: int) -> bytes:
        self.n += 1
        return self.n.to_bytes(size, "big")


def test_one_input(data: bytes) -> None:
    r = Reader(data)
    level = LEVELS[r.byte() % 3]
    dp = harness.datapath(level)
    key = CONTROL_KEY if level else None
    now = 10_000
    s = session.Session(level, dp, "site-a", PRK if level else None, key, now, keepalive_ms=2000,
                        rekey_ms=1000, random=Draws())
    peer_sender = bytes(15) + b"\x99"
    peer_challenges = [bytes(15) + b"\x77"]
    ours: list[bytes] = [s.challenge]
    counter = 0
    for _ in range(24):
        if r.left() < 2:
            break
        op = r.byte()
        now += r.byte() * 8
        if op < 40:
            datagram = r.chunk(1500)
            try:
                _fast.read_control(datagram)
            except _fast.Dropped as e:
                assert e.reason == "malformed"
            out = s.receive(datagram, now)
        elif op < 230:
            pool = [s.sender, s.challenge, *ours[-3:], peer_sender, *peer_challenges[-2:], bytes(16)]

            def nonce(pool=pool):
                b = r.byte()
                return pool[b % len(pool)] if b < 240 else r.bytes(16).ljust(16, b"\0")

            sender = peer_sender if op < 200 else nonce()
            challenge = nonce()
            peer_challenges.append(challenge)
            h = session.Hello(sender=sender, challenge=challenge, propose=nonce(), acc_sender=nonce(),
                              acc_chal=nonce(), time_us=r.int(4), echo_us=r.int(4), held_us=r.int(4),
                              flags=r.byte(), send_index=r.int(4) if r.byte() > 200 else r.byte() % 4, site="")
            payload = bytearray(h.encode())
            if op >= 220:
                payload[100:132] = r.bytes(32).ljust(32, b"\0")          # any site bytes, UTF-8 or not
            step = r.byte()
            counter = counter + 1 + step % 4 if step < 250 else r.int(8)
            datagram = _fast.seal_control(level, key, _fast.TYPE_HELLO, counter & 0xFFFFFFFFFFFFFFFF, bytes(payload))
            out = s.receive(datagram, now)
        elif op < 245:
            out = s.receive(s.hello(now), now)             # a reflected HELLO of our own
        else:
            s.rotate_if_due(now)
            if op == 255:
                s.renew_send()
            continue
        ours.append(s.challenge)
        assert out.drop is None or out.drop in REASONS, out.drop
        if s.send is not None:
            assert dp.send_index is not None, "a send session without send keys"
        mine = s.hello(now)
        ptype, _, payload = _fast.open_control(level, key, mine)
        assert ptype == _fast.TYPE_HELLO and session.Hello.decode(payload).sender == s.sender


if __name__ == "__main__":
    harness.main(test_one_input)
