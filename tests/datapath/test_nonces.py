"""No ChaCha20 (key, nonce) pair repeats across directions, restarts, sessions and rotations.

Every random value here is etun's own: each site is a real Session (which draws its sender
nonce and its challenges) over a real Datapath, and the sessions are set up by the HELLO
exchange itself. A restart is a new Session and a new Datapath, as a new process has.
"""

import os

from etun import _fast, keys
from etun.session import Session

ENCRYPT = _fast.LEVEL_ENCRYPT


def key_and_nonce(secret: bytes, datagram: bytes) -> tuple[bytes, bytes]:
    """The ChaCha20 key and nonce a data datagram was encrypted under (PROTOCOL.md §3.1)."""
    key_index = int.from_bytes(datagram[4:8], "big")
    base = int.from_bytes(datagram[8:16], "big") - datagram[2]
    enc_key, _ = keys.index_keys(secret, key_index)
    return enc_key, datagram[4:8] + base.to_bytes(8, "big")


class Site:
    """One etun process: its Session (sender nonce, challenges) and its Datapath (counters)."""

    def __init__(self, name: str, prk: bytes):
        self.prk = prk
        self.dp = _fast.Datapath(ENCRYPT)
        self.s = Session(ENCRYPT, self.dp, name, prk, keys.control_key(prk), now_ms=0)

    @property
    def send_secret(self) -> bytes:
        """The secret of the session this site seals under now, from what the session chose."""
        return keys.session_secret(self.prk, self.s.sender, self.s.send)

    def traffic(self, used: list, frames: int = 20) -> None:
        """Seal frames; each is one ChaCha20 pass, so it uses one (key, nonce) pair."""
        for i in range(frames):
            sealed = self.dp.seal(bytes(14 + (i * 397) % 3000))
            pairs = {key_and_nonce(self.send_secret, d) for d in sealed}
            assert len(pairs) == 1
            used += pairs


def settle(a: Site, b: Site) -> None:
    """HELLOs both ways, answered as the daemon answers them, until both directions settle."""
    outcome = b.s.receive(a.s.hello(0), 0)
    turn = (b, a)
    for _ in range(8):
        if a.s.settled and b.s.settled:
            return
        sender, receiver = turn if outcome.answer else turn[::-1]
        outcome = receiver.s.receive(sender.s.hello(0), 0)
        turn = (receiver, sender)
    assert a.s.settled and b.s.settled


def test_no_key_nonce_pair_repeats_across_directions_restarts_sessions_and_rotations():
    prk = keys.derive_prk(os.urandom(keys.MATERIAL_LEN))
    used: list[tuple[bytes, bytes]] = []

    a, b = Site("a", prk), Site("b", prk)
    settle(a, b)
    for _ in range(3):
        a.traffic(used)
        b.traffic(used)
        a.dp.rotate_send()
        b.dp.rotate_send()
    a.s.renew_send()                     # A asks for a new session: B's next challenge keys it
    settle(a, b)
    a.traffic(used)

    a = Site("a", prk)                   # A restarts: its counter starts at 0 again
    settle(a, b)
    a.traffic(used)
    b = Site("b", prk)                   # and so does B, and both come back at index 0
    settle(a, b)
    a.traffic(used)
    b.traffic(used)

    assert len(used) == 10 * 20
    assert len(set(used)) == len(used)


def test_fragments_of_one_frame_share_one_nonce_and_frames_never_do():
    prk = keys.derive_prk(os.urandom(keys.MATERIAL_LEN))
    a, b = Site("a", prk), Site("b", prk)
    settle(a, b)
    datagrams = a.dp.seal(bytes(9000))
    assert len({key_and_nonce(a.send_secret, d) for d in datagrams}) == 1
    other = a.dp.seal(bytes(9000))
    assert key_and_nonce(a.send_secret, other[0]) != key_and_nonce(a.send_secret, datagrams[0])
