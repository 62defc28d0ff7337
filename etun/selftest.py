"""Known-answer self-test of the compiled datapath, run before `run` and `verify-peer` (milliseconds).

A broken build or bundle (a miscompiled extension, a libcrypto that misbehaves, a PyInstaller
bundle missing a piece) must stop etun with one clear line, not carry traffic wrongly.
"""

from etun.errors import RuntimeFailure

# RFC 8439 §2.4.2 (block counter 1) and RFC 4231 test case 2.
CHACHA_KEY = bytes(range(32))
CHACHA_NONCE = bytes.fromhex("000000000000004a00000000")
CHACHA_PLAIN = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip "
                b"for the future, sunscreen would be it.")
CHACHA_CIPHER = bytes.fromhex(
    "6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0b"
    "f91b65c5524733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d8"
    "07ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab7793736"
    "5af90bbf74a35be6b40b8eedf2785e42874d")
HMAC_MAC = bytes.fromhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")

# A 100-byte frame sealed at level encrypt, session secret 00 01 .. 1f, index root 20 .. 3f,
# to the peer's session 0x2a at key index 3, counter 0: checked against tests/reference.py (an
# independent implementation) when pinned.
KNOWN_SECRET = bytes(range(32))
KNOWN_INDEX_ROOT = bytes(range(32, 64))
KNOWN_PSK = bytes(range(64, 96))
KNOWN_MAC1_KEY = bytes(range(96, 128))
KNOWN_FRAME = bytes(range(100))
KNOWN_PACKET = bytes.fromhex(
    "a1000001000000032a00000000000000"
    "9435eda721613a119b7028f296fc8a6ec033ab48109e71beae2c3da0f3f2bffe7a02593765ed867d11a55d9c"
    "3126ee6caee217c5754e6e6ba5123f49d808a3a51c4d843d11a40b6c687afd85d987c3198d36bd48ba200846"
    "733283821de7ea0acc39d9584e1bdbe9f396b6350a29ae0bf223e485")
# The handshake hash of a Noise_NNpsk0 handshake with ephemeral private keys 01 .. 20 and
# 21 .. 40 and that PSK: checked against the noiseprotocol package in tests/ when pinned.
KNOWN_EPHEMERALS = (bytes(range(1, 33)), bytes(range(33, 65)))
KNOWN_HANDSHAKE_HASH = bytes.fromhex("725ec3209a6117d19f026ed9f58a761319cf876210a834407644c4aab3109fb0")


def run_selftest() -> None:
    """Raise RuntimeFailure naming the first thing that does not give its known answer."""
    try:
        from etun import _fast
    except ImportError as e:
        raise RuntimeFailure(f"self-test failed: the datapath extension does not load ({e}); "
                             "the build or bundle is broken") from None

    def check(what: str, ok: bool) -> None:
        if not ok:
            raise RuntimeFailure(f"self-test failed: {what} gives a wrong answer "
                                 f"(libcrypto {_fast.openssl_version()}); the build or bundle is broken")

    check("ChaCha20 (RFC 8439 2.4.2)", _fast.chacha20(CHACHA_KEY, CHACHA_NONCE, CHACHA_PLAIN, 1) == CHACHA_CIPHER)
    check("HMAC-SHA256 (RFC 4231 case 2)",
          _fast.hmac_sha256(b"Jefe", b"what do ya want for nothing?") == HMAC_MAC)
    tx, rx = _fast.Datapath(2), _fast.Datapath(2)
    for dp in (tx, rx):
        dp.set_static_keys(KNOWN_PSK, KNOWN_MAC1_KEY, bytes(32), bytes(32), KNOWN_INDEX_ROOT)
    initiator, responder = _fast.Handshake(tx), _fast.Handshake(rx)
    init = initiator.initiate(bytes(36), ephemeral=KNOWN_EPHEMERALS[0])
    check("a Noise handshake (X25519, ChaCha20-Poly1305)",
          responder.respond(init) == bytes(36)
          and initiator.finish(responder.reply(bytes(24), ephemeral=KNOWN_EPHEMERALS[1])) == bytes(24)
          and initiator.handshake_hash == responder.handshake_hash == KNOWN_HANDSHAKE_HASH)
    tx.set_send_session(KNOWN_SECRET, 0x2A, 3)
    rx.set_recv_session(KNOWN_SECRET, 0x2A, 3)
    sealed = tx.seal(KNOWN_FRAME)
    check("sealing a known frame", sealed == [KNOWN_PACKET])
    check("opening a known packet", rx.open(KNOWN_PACKET) == [(_fast.TYPE_FRAME, KNOWN_FRAME)])
    check("the replay window", rx.open(KNOWN_PACKET) == [] and rx.last_drop == "replay")
    big = bytes(range(256)) * 6
    check("fragmenting and reassembling a 1536-byte frame",
          [f for d in reversed(tx.seal(big)) for f in rx.open(d)] == [(_fast.TYPE_FRAME, big)])
