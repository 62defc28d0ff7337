"""Forward secrecy, played as the attacker (docs/SECURITY.md): record a tunnel's traffic on the
WAN, stop both sites, then take the key file and try to read what was recorded, with the
independent reference implementation (tests/reference.py). Nothing opens. As a control, the
very same attack succeeds when the attacker also holds one handshake's ephemeral private key,
so the attack code is right and only the missing Diffie-Hellman secret stops it.

    hostA - gwA - [wan: tcpdump] - gwB - hostB
"""

import hashlib
import hmac
import os

import pytest
from noise.connection import Keypair, NoiseConnection

from etun import _fast
from tests import reference as ref
from tests.e2e.topology import HOST_IP
from tests.material import random_secrets

pytestmark = pytest.mark.usefixtures("e2e_ready")
MARKER = "e7a1f0c5e7a1f0c5e7a1f0c5e7a1f0c5"           # ping's -p pattern: 16 bytes, repeated
NAME = b"Noise_NNpsk0_25519_ChaChaPoly_SHA256"


def recorded(t) -> list[bytes]:
    from scapy.all import UDP
    with t.capture("wan", "a0", "udp") as packets:
        t.start_pair()
        r = t.run(f"ping -n -q -c 5 -i 0.2 -s 1400 -p {MARKER} {HOST_IP['b']}", "ha", check=False, capture=True)
        assert " 0% packet loss" in r.stdout, r.stdout
    for site in "ab":
        assert t.stop_etun(site) == 0                    # the sessions, and their keys, are gone
    return [bytes(p[UDP].payload) for p in packets if UDP in p]


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


def test_a_thief_of_the_key_file_cannot_read_traffic_recorded_before(topo):
    t = topo()
    wire = recorded(t)
    material = (t.workdir / "site.key").read_bytes()             # now the attacker has it
    prk = ref.derive_prk(material)
    static = ref.static_keys(prk)
    inits = [d for d in wire if _fast.packet_type(d)[2] == _fast.TYPE_INIT]
    data = [d for d in wire if _fast.packet_type(d)[2] in (_fast.TYPE_FRAME, _fast.TYPE_SESSION)]
    assert inits and len(data) >= 10
    assert not any(bytes.fromhex(MARKER) in d for d in data)       # encrypted on the wire
    candidates = candidate_secrets(static, prk, inits)
    for datagram in data:
        assert not any(opens(s, static.index_root, datagram) for s in candidates)


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
