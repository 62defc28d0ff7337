"""verify-peer's responder in isolation: no amplification, nothing told to strangers, budgets per source."""

import os
import socket

from etun import _fast, keys
from etun.probe import KIND_PLAIN, KIND_SIZE, KIND_UNAUTHENTICATED, PROBE_HEAD, REPLY_HEAD, Responder
from etun.transport import pack_sockaddr

ENCRYPT = 2
SOURCE = pack_sockaddr(socket.AF_INET, "198.51.100.9", 40000)
TARGET = pack_sockaddr(socket.AF_INET, "203.0.113.7", 5555)


def control_key():
    return keys.control_key(keys.derive_prk(os.urandom(keys.MATERIAL_LEN)))


def probe(level, key, kind=KIND_PLAIN, size=160):
    body = PROBE_HEAD.pack(kind, level, 0, os.urandom(16))
    tag = 16 if level else 0
    return _fast.seal_control(level, key, _fast.TYPE_PROBE, 0, body.ljust(size - 16 - tag, b"\0"))


def reply_fields(datagram):
    return REPLY_HEAD.unpack_from(datagram, 16)


def test_a_probe_under_another_key_gets_one_small_answer_that_tells_nothing():
    r = Responder(ENCRYPT, control_key(), "berlin")
    p = probe(ENCRYPT, control_key())
    (answer,) = r.answer(p, SOURCE, TARGET, True)
    kind, level, flags, _, seen, target, site = reply_fields(answer)
    assert len(answer) <= len(p)
    assert (kind, level, flags, seen, target, site) == (KIND_UNAUTHENTICATED, ENCRYPT, 0, bytes(20), bytes(20), bytes(32))


def answers_to(r: Responder, packet: bytes, times: int = 100) -> int:
    """How many of `times` copies of `packet` the responder answers."""
    answered = 0
    for _ in range(times):
        try:
            answered += len(r.answer(packet, SOURCE, TARGET, True))
        except _fast.Dropped:
            pass
    return answered


def test_unauthenticated_answers_are_never_larger_than_the_probe_and_rate_limited():
    r = Responder(ENCRYPT, control_key(), "berlin")
    tiny = probe(ENCRYPT, control_key(), size=60)
    assert answers_to(r, tiny) == 0                        # an answer would outweigh the probe
    big = probe(ENCRYPT, control_key(), size=200)
    assert answers_to(r, big) <= 10


def test_at_level_none_no_answer_outweighs_its_probe():
    r = Responder(0, None, "berlin")
    for size in (36, 100, 160, 799):
        p = probe(0, None, kind=KIND_SIZE if size > 160 else KIND_PLAIN, size=size)
        for answer in r.answer(p, pack_sockaddr(socket.AF_INET, "198.51.100.1", size), TARGET, True):
            assert len(answer) <= len(p)


def test_a_replayed_probe_from_one_address_cannot_use_up_everyones_answers():
    key = control_key()
    r = Responder(ENCRYPT, key, "berlin")
    p = probe(ENCRYPT, key)
    flood = sum(len(r.answer(p, SOURCE, TARGET, True)) for _ in range(100))
    assert flood <= 5
    other = pack_sockaddr(socket.AF_INET, "198.51.100.77", 5555)
    assert len(r.answer(probe(ENCRYPT, key), other, TARGET, True)) == 1


def test_an_authenticated_size_probe_gets_an_answer_and_a_big_answer_of_its_size():
    key = control_key()
    r = Responder(ENCRYPT, key, "berlin")
    p = probe(ENCRYPT, key, kind=KIND_SIZE, size=791)
    small, big = r.answer(p, SOURCE, TARGET, True)
    assert len(big) == len(p)
    _, _, flags, _, seen, target, site = reply_fields(small)
    assert flags == 1 and site.rstrip(b"\0") == b"berlin" and seen[0] == 4 and target[0] == 4
