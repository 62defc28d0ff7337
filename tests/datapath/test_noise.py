"""etun's handshake against an independent Noise implementation, and the framing around it.

etun's handshake (noise.pxi, handshake.pxi) against an independent Noise implementation, the
`noiseprotocol` package: with fixed ephemeral keys, both roles, every message byte and the split
keys must agree. And the framing around it: mac1, ids, tampering, a wrong key file."""

import hashlib
import hmac
import os

import pytest
from noise.connection import Keypair, NoiseConnection

from etun import _fast, keys, selftest
from tests.material import random_secrets

NAME = b"Noise_NNpsk0_25519_ChaChaPoly_SHA256"
PROLOGUE = b"etun/v2"
E_I, E_R = os.urandom(32), os.urandom(32)


def datapath(secrets: keys.Secrets, level: int = _fast.LEVEL_ENCRYPT) -> _fast.Datapath:
    dp = _fast.Datapath(level)
    secrets.install(dp)
    return dp


def library(role: str, psk: bytes, ephemeral: bytes) -> NoiseConnection:
    c = NoiseConnection.from_name(NAME)
    c.set_as_initiator() if role == "initiator" else c.set_as_responder()
    c.set_psks(psk=psk)
    c.set_prologue(PROLOGUE)
    c.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral)
    c.start_handshake()
    return c


def mac16(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()[:16]


def frame_init(secrets: keys.Secrets, message: bytes, hs_id: bytes = b"\x01\x02\x03\x04") -> bytes:
    """A library message 1 framed as an etun INIT (PROTOCOL.md §5.1), mac2 zero."""
    head = bytes([(2 << 6) | (2 << 4) | _fast.TYPE_INIT, 0, 0, 0]) + hs_id + message
    return head + mac16(secrets.mac1_key, head) + bytes(16)


def test_etun_as_initiator_and_the_library_as_responder_agree_on_every_byte(secrets):
    p1, p2 = os.urandom(36), os.urandom(24)
    ours = _fast.Handshake(datapath(secrets))
    init = ours.initiate(p1, ephemeral=E_I)
    theirs = library("responder", secrets.psk, E_R)
    assert theirs.read_message(init[8:92]) == p1
    message2 = bytes(theirs.write_message(p2))
    resp_head = bytes([(2 << 6) | (2 << 4) | _fast.TYPE_RESP, 0, 0, 0]) + init[4:8] + message2
    resp = resp_head + mac16(secrets.mac1_key, resp_head)
    assert ours.finish(resp) == p2
    k1, k2 = _fast.handshake_keys(ours)
    assert (k1, k2) == (theirs.noise_protocol.cipher_state_decrypt.k, theirs.noise_protocol.cipher_state_encrypt.k)
    assert ours.handshake_hash == theirs.get_handshake_hash()


def test_the_library_as_initiator_and_etun_as_responder_agree_on_every_byte(secrets):
    p1, p2 = os.urandom(36), os.urandom(24)
    theirs = library("initiator", secrets.psk, E_I)
    message1 = bytes(theirs.write_message(p1))
    ours = _fast.Handshake(datapath(secrets))
    assert ours.respond(frame_init(secrets, message1)) == p1
    resp = ours.reply(p2, ephemeral=E_R)
    assert len(resp) == _fast.RESP_LEN and resp[4:8] == b"\x01\x02\x03\x04"
    assert resp[-16:] == mac16(secrets.mac1_key, resp[:-16])
    assert theirs.read_message(resp[8:80]) == p2
    k1, k2 = _fast.handshake_keys(ours)
    assert (k1, k2) == (theirs.noise_protocol.cipher_state_encrypt.k, theirs.noise_protocol.cipher_state_decrypt.k)
    assert ours.handshake_hash == theirs.get_handshake_hash()


def test_the_self_tests_pinned_handshake_hash_is_the_librarys():
    theirs_i = library("initiator", selftest.KNOWN_PSK, selftest.KNOWN_EPHEMERALS[0])
    theirs_r = library("responder", selftest.KNOWN_PSK, selftest.KNOWN_EPHEMERALS[1])
    theirs_r.read_message(theirs_i.write_message(bytes(36)))
    theirs_i.read_message(theirs_r.write_message(bytes(24)))
    assert theirs_i.get_handshake_hash() == selftest.KNOWN_HANDSHAKE_HASH


def test_an_initiation_under_another_key_file_fails_mac1_before_any_noise_work(secrets):
    other = random_secrets()
    init = _fast.Handshake(datapath(other)).initiate(bytes(36))
    with pytest.raises(_fast.Dropped, match="auth"):
        _fast.Handshake(datapath(secrets)).respond(init)


def test_an_initiation_with_a_right_mac1_but_a_wrong_psk_fails_its_aead(secrets):
    theirs = library("initiator", os.urandom(32), E_I)       # same mac1 key, another PSK
    init = frame_init(secrets, bytes(theirs.write_message(bytes(36))))
    with pytest.raises(_fast.Dropped, match="auth"):
        _fast.Handshake(datapath(secrets)).respond(init)


@pytest.mark.parametrize("position", [0, 3, 4, 8, 39, 40, 91, 92, 107])
def test_any_changed_byte_of_an_initiation_before_mac2_is_refused(secrets, position):
    init = bytearray(_fast.Handshake(datapath(secrets)).initiate(bytes(36)))
    init[position] ^= 0x01
    with pytest.raises(_fast.Dropped):
        _fast.Handshake(datapath(secrets)).respond(bytes(init))


def test_an_answer_under_another_initiations_id_is_refused(secrets):
    a, b = datapath(secrets), datapath(secrets)
    ours = _fast.Handshake(a)
    ours.initiate(bytes(36))
    responder = _fast.Handshake(b)
    responder.respond(_fast.Handshake(a).initiate(bytes(36)))
    with pytest.raises(_fast.Dropped, match="malformed"):
        ours.finish(responder.reply(bytes(24)))


def test_after_the_handshake_its_keys_go_into_the_datapath_and_no_longer_exist_in_it(secrets):
    a, b = datapath(secrets), datapath(secrets)
    hi, hr = _fast.Handshake(a), _fast.Handshake(b)
    hr.respond(hi.initiate(bytes(36)))
    hi.finish(hr.reply(bytes(24)))
    a.install_session(hi, 1, 2, 0, 0)
    b.install_session(hr, 2, 1, 0, 0)
    with pytest.raises(ValueError, match="not done"):
        _fast.handshake_keys(hi)                                  # wiped by install_session
    frame = os.urandom(300)
    assert [f for d in a.seal(frame) for f in b.open(d)] == [(_fast.TYPE_FRAME, frame)]


def test_level_none_runs_the_same_handshake_with_a_zero_key_and_authenticates_nothing():
    none = keys.Secrets.none()
    a, b = datapath(none, _fast.LEVEL_NONE), datapath(none, _fast.LEVEL_NONE)
    hi, hr = _fast.Handshake(a), _fast.Handshake(b)
    assert hr.respond(hi.initiate(bytes(36))) == bytes(36)
    assert hi.finish(hr.reply(bytes(24))) == bytes(24)


def test_a_resp_with_a_right_mac1_that_fails_to_open_leaves_the_initiation_for_the_genuine_one(secrets):
    ours = _fast.Handshake(datapath(secrets))
    init = ours.initiate(os.urandom(36), ephemeral=E_I)
    theirs = library("responder", secrets.psk, E_R)
    theirs.read_message(init[8:92])
    p2 = os.urandom(24)
    message2 = bytes(theirs.write_message(p2))
    head = bytes([(2 << 6) | (2 << 4) | _fast.TYPE_RESP, 0, 0, 0]) + init[4:8]
    genuine = head + message2 + mac16(secrets.mac1_key, head + message2)
    bad = bytearray(message2)
    bad[40] ^= 1                                   # the encrypted payload: only its AEAD tag notices
    spoiled = head + bytes(bad) + mac16(secrets.mac1_key, head + bytes(bad))
    other_e = head + os.urandom(32) + message2[32:]
    other_e += mac16(secrets.mac1_key, other_e)
    for wrong in (spoiled, other_e):
        with pytest.raises(_fast.Dropped, match="auth"):
            ours.finish(wrong)
    assert ours.finish(genuine) == p2             # the failures spent nothing of our state
    k1, k2 = _fast.handshake_keys(ours)
    assert (k1, k2) == (theirs.noise_protocol.cipher_state_decrypt.k, theirs.noise_protocol.cipher_state_encrypt.k)
