"""The forward-secrecy attacker's tools (docs/SECURITY.md), for the secrecy tests.

The forward-secrecy attacker's tools (docs/SECURITY.md): every secret a thief of the key file can
derive from it and from recorded initiations, and whether a secret opens a recorded packet."""

import hashlib
import hmac

from etun import _fast
from tests import reference as ref

NAME = b"Noise_NNpsk0_25519_ChaChaPoly_SHA256"
MARKER = "e7a1f0c5e7a1f0c5e7a1f0c5e7a1f0c5"           # the attacked traffic's plaintext (ping -p): 16 bytes, repeated


def after_message_1(psk: bytes, init: bytes) -> bytes:
    """All the attacker can compute of a handshake from the key file: Noise's chaining key after
    message 1 (psk, e). Message 2's `ee` needs an ephemeral private key."""
    def mix(ck, ikm, n):
        temp = hmac.new(ck, ikm, hashlib.sha256).digest()
        outs, last = [], b""
        for i in range(1, n + 1):
            last = hmac.new(temp, last + bytes([i]), hashlib.sha256).digest()
            outs.append(last)
        return outs
    h = hashlib.sha256(NAME).digest()
    ck = h
    h = hashlib.sha256(h + b"etun/v2").digest()
    ck, th, _ = mix(ck, psk, 3)
    h = hashlib.sha256(h + th).digest()
    e = init[8:40]
    ck, _ = mix(ck, e, 2)
    return ck


def candidate_secrets(static: ref.StaticKeys, prk: bytes, inits: list[bytes]) -> list[bytes]:
    """Every 32-byte secret the thief can derive: the key file's, and what Split() would give
    after message 1 alone."""
    out = [prk, static.psk, static.mac1_key, static.cookie_key, static.probe_key, static.index_root]
    for init in inits:
        ck = after_message_1(static.psk, init)
        temp = hmac.new(ck, b"", hashlib.sha256).digest()
        k1 = hmac.new(temp, b"\x01", hashlib.sha256).digest()
        out += [ck, k1, hmac.new(temp, k1 + b"\x02", hashlib.sha256).digest()]
    return out


def opens(secret: bytes, index_root: bytes, datagram: bytes) -> bool:
    """Whether `secret` authenticates this recorded data or SESSION packet (the reference's keys)."""
    hdr = ref.parse_header(datagram)
    if hdr.ptype == _fast.TYPE_SESSION:
        _, mac_key = ref.control_keys(secret)
    else:
        _, mac_key = ref.data_keys(secret, index_root, hdr.key_index)
    return hmac.compare_digest(ref.compute_tag(mac_key, datagram[:-16]), datagram[-16:])
