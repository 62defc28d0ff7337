"""No ChaCha20 (key, nonce) pair repeats across directions, restarts, sessions and rotations."""

import os

from etun import _fast, keys

ENCRYPT = 2


def key_and_nonce(secret: bytes, datagram: bytes) -> tuple[bytes, bytes]:
    """The ChaCha20 key and nonce a data datagram was encrypted under (PROTOCOL.md §3.1)."""
    key_index = int.from_bytes(datagram[4:8], "big")
    base = int.from_bytes(datagram[8:16], "big") - datagram[2]
    enc_key, _ = keys.index_keys(secret, key_index)
    return enc_key, datagram[4:8] + base.to_bytes(8, "big")


class Site:
    """One etun process: a sender nonce drawn at start, a datapath whose counter starts at 0."""

    def __init__(self, prk: bytes):
        self.prk = prk
        self.sender = os.urandom(16)
        self.dp = _fast.Datapath(ENCRYPT)
        self.secret = b""

    def send_to(self, challenge: bytes):
        self.secret = keys.session_secret(self.prk, self.sender, challenge)
        self.dp.set_send_session(self.secret)

    def traffic(self, used: list, frames: int = 20):
        """Seal frames; each is one ChaCha20 pass, so it uses one (key, nonce) pair."""
        for i in range(frames):
            pairs = {key_and_nonce(self.secret, d) for d in self.dp.seal(os.urandom(14 + (i * 397) % 3000))}
            assert len(pairs) == 1
            used += pairs


def test_no_key_nonce_pair_repeats_across_directions_restarts_sessions_and_rotations():
    prk = keys.derive_prk(os.urandom(keys.KEY_LEN))
    used: list[tuple[bytes, bytes]] = []

    a, b = Site(prk), Site(prk)
    a.send_to(os.urandom(16))           # A -> B under B's challenge
    b.send_to(os.urandom(16))           # B -> A under A's challenge
    for _ in range(3):
        a.traffic(used)
        b.traffic(used)
        a.dp.rotate_send()
        b.dp.rotate_send()
    a.send_to(os.urandom(16))           # B drew a new challenge: A proposes again
    a.traffic(used)

    a = Site(prk)                        # A restarts: its counter starts at 0 again
    a.send_to(os.urandom(16))
    a.traffic(used)
    b = Site(prk)                        # and so does B, and both come back at index 0
    b.send_to(os.urandom(16))
    b.traffic(used)

    assert len(used) == 9 * 20
    assert len(set(used)) == len(used)


def test_fragments_of_one_frame_share_one_nonce_and_frames_never_do():
    site = Site(keys.derive_prk(os.urandom(keys.KEY_LEN)))
    site.send_to(os.urandom(16))
    datagrams = site.dp.seal(os.urandom(9000))
    assert len({key_and_nonce(site.secret, d) for d in datagrams}) == 1
    other = site.dp.seal(os.urandom(9000))
    assert key_and_nonce(site.secret, other[0]) != key_and_nonce(site.secret, datagrams[0])
