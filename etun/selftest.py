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

# A 100-byte frame sealed at level encrypt under session secret 00 01 .. 1f, key index 0,
# counter 0: checked against tests/reference.py (an independent implementation) when pinned.
KNOWN_SECRET = bytes(range(32))
KNOWN_FRAME = bytes(range(100))
KNOWN_PACKET = bytes.fromhex(
    "61000001000000000000000000000000"
    "5223520019795319872145c66d8a42f1e589cd3da4be6cd7f16a8f54c598b8bd2a3360ef88dc349641d2abeb"
    "1fe4dbc27e76ad92c64944a71b1c4caf4762013297b5b8f9f9c041e022c7dbad4c679369c06801de96320124"
    "3353e4564f27ddf0bd866d1cd9adaccf1e30a72dec6ca80540cf02a0")


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
    tx.set_send_session(KNOWN_SECRET)
    rx.set_recv_session(KNOWN_SECRET)
    sealed = tx.seal(KNOWN_FRAME)
    check("sealing a known frame", sealed == [KNOWN_PACKET])
    check("opening a known packet", rx.open(KNOWN_PACKET) == [(_fast.TYPE_FRAME, KNOWN_FRAME)])
    check("the replay window", rx.open(KNOWN_PACKET) == [] and rx.last_drop == "replay")
    big = bytes(range(256)) * 6
    check("fragmenting and reassembling a 1536-byte frame",
          [f for d in reversed(tx.seal(big)) for f in rx.open(d)] == [(_fast.TYPE_FRAME, big)])
