"""The control of the forward-secrecy attack, without root: with the ephemeral key, it works.

The control of the forward-secrecy attack (tests/e2e/test_secrecy.py), without root: with one
handshake's ephemeral private key as well as the key file, the attacker's tools read everything."""

import os

from noise.connection import Keypair, NoiseConnection

from etun import _fast
from tests import reference as ref
from tests.material import random_secrets
from tests.thief import MARKER, NAME, opens


def test_the_same_attack_reads_everything_with_one_ephemeral_private_key():
    """The control: a handshake whose initiator ephemeral the attacker knows is opened by the
    same code: it computes message 2's `ee` with the independent Noise library, and the
    recorded frames decrypt to what was sent."""
    secrets = random_secrets()
    a, b = _fast.Datapath(_fast.LEVEL_ENCRYPT), _fast.Datapath(_fast.LEVEL_ENCRYPT)
    secrets.install(a)
    secrets.install(b)
    e_i = os.urandom(32)
    hi, hr = _fast.Handshake(a), _fast.Handshake(b)
    init = hi.initiate(bytes(36), ephemeral=e_i)
    hr.respond(init)
    resp = hr.reply(bytes(24))
    hi.finish(resp)
    a.install_session(hi, 1, 2, 7, 0)
    b.install_session(hr, 2, 1, 0, 7)
    frame = bytes.fromhex(MARKER) * 50
    wire = a.seal(frame)
    # The attacker: the key file (secrets), the recorded INIT and RESP, and e_i.
    thief = NoiseConnection.from_name(NAME)
    thief.set_as_initiator()
    thief.set_psks(psk=secrets.psk)
    thief.set_prologue(b"etun/v2")
    thief.set_keypair_from_private_bytes(Keypair.EPHEMERAL, e_i)
    thief.start_handshake()
    assert bytes(thief.write_message(bytes(36))) == init[8:92]
    thief.read_message(resp[8:80])
    k1 = thief.noise_protocol.cipher_state_encrypt.k
    assert all(opens(k1, secrets.index_root, d) for d in wire)
    hdr = ref.parse_header(wire[0])
    enc_key, _ = ref.data_keys(k1, secrets.index_root, hdr.key_index)
    text = ref.chacha20(enc_key, ref.frame_nonce(hdr.key_index, hdr.session, hdr.segment, hdr.base),
                        b"".join(d[16:-16] for d in wire))
    assert text == frame
