"""verify-peer's two ends in isolation (etun/probe.py): no amplifier, no leak, no replay.

No amplification, nothing told to strangers, budgets per source, and no answer to a probe reflected
back or replayed."""

import socket
import time

from etun import _fast, keys
from etun.probe import KIND_PLAIN, KIND_SIZE, KIND_UNAUTHENTICATED, PROBE_HEAD, REPLY_HEAD, Prober, Responder
from etun.transport import pack_sockaddr
from tests.material import random_secrets
from tests.probes import seal_probe

ENCRYPT = _fast.LEVEL_ENCRYPT
SOURCE = pack_sockaddr(socket.AF_INET, "198.51.100.9", 40000)
TARGET = pack_sockaddr(socket.AF_INET, "203.0.113.7", 5555)
OURS = b"\x11" * 16                 # the responder's instance


def datapath(level=ENCRYPT, secrets=None):
    dp = _fast.Datapath(level)
    if secrets is None:
        secrets = keys.Secrets.none() if level == 0 else \
            random_secrets()
    secrets.install(dp)
    return dp


def reply_fields(datagram):
    return REPLY_HEAD.unpack_from(datagram, 16)


def responder(dp, **kw):
    return Responder(dp, "berlin", OURS, **kw)


def answers_to(r: Responder, packet: bytes, times: int = 100, source: bytes = SOURCE) -> int:
    """How many of `times` copies of `packet` the responder answers."""
    answered = 0
    for _ in range(times):
        try:
            answered += len(r.answer(packet, source, TARGET, True))
        except _fast.Dropped:
            pass
    return answered


def test_a_probe_under_another_key_gets_one_small_answer_that_tells_nothing():
    r = responder(datapath())
    p = seal_probe(datapath())
    (answer,) = r.answer(p, SOURCE, TARGET, True)
    kind, level, flags, _, instance, seen, target, site = reply_fields(answer)
    assert len(answer) <= len(p)
    assert (kind, level, flags, instance, seen, target, site) == \
        (KIND_UNAUTHENTICATED, ENCRYPT, 0, bytes(16), bytes(20), bytes(20), bytes(32))


def test_unauthenticated_answers_are_never_larger_than_the_probe_and_rate_limited():
    r = responder(datapath())
    tiny = seal_probe(datapath(), size=90)
    assert answers_to(r, tiny) == 0                        # an answer would outweigh the probe
    big = seal_probe(datapath(), size=300)
    assert answers_to(r, big) <= 10


def test_at_level_none_no_answer_outweighs_its_probe():
    dp = datapath(0)
    r = responder(dp)
    for size in (80, 100, 200, 799):
        p = seal_probe(dp, kind=KIND_SIZE if size > 200 else KIND_PLAIN, size=size)
        for answer in r.answer(p, pack_sockaddr(socket.AF_INET, "198.51.100.1", size), TARGET, True):
            assert len(answer) <= len(p)


def test_a_probe_is_answered_once_and_its_replay_gets_nothing():
    dp = datapath()
    r = responder(dp)
    p = seal_probe(dp)
    assert answers_to(r, p, times=1) == 1
    assert answers_to(r, p, times=20) == 0


def test_a_probe_reflected_back_to_its_own_sender_gets_no_answer():
    dp = datapath()
    r = responder(dp)
    assert answers_to(r, seal_probe(dp, instance=OURS)) == 0


def test_a_probe_recorded_long_ago_gets_no_answer():
    import time
    dp = datapath()
    r = responder(dp)
    assert answers_to(r, seal_probe(dp, time_ms=int(time.time() * 1000) - 400_000), times=1) == 0


def test_authentic_probes_from_one_address_cannot_use_up_everyones_answers():
    dp = datapath()
    r = responder(dp)
    flood = sum(answers_to(r, seal_probe(dp), times=1) for _ in range(100))
    assert flood <= 10
    other = pack_sockaddr(socket.AF_INET, "198.51.100.77", 5555)
    assert answers_to(r, seal_probe(dp), times=1, source=other) == 1


def test_an_authenticated_size_probe_gets_an_answer_and_a_big_answer_of_its_size():
    dp = datapath()
    r = responder(dp)
    p = seal_probe(dp, kind=KIND_SIZE, size=791)
    small, big = r.answer(p, SOURCE, TARGET, True)
    assert len(big) == len(p)
    _, _, flags, _, instance, seen, target, site = reply_fields(small)
    assert flags == 1 and instance == OURS and site.rstrip(b"\0") == b"berlin"
    assert seen[0] == 4 and target[0] == 4


def prober(dp, instance=b"\x33" * 16):
    return Prober(dp, instance, 800, TARGET, 5, socket.AF_INET)


def test_a_prober_takes_the_answer_to_its_own_probe_and_reports_the_peer_reachable():
    a = random_secrets()
    mine, theirs = datapath(secrets=a), datapath(secrets=a)
    pr = prober(mine)
    (out,) = pr.outgoing()
    for answer in responder(theirs).answer(out, SOURCE, SOURCE, True):
        pr.incoming(answer)
    assert pr.checks["reachable"].ok and pr.checks["key"].ok and pr.checks["level"].ok


def test_when_the_first_answer_is_lost_the_probers_retry_is_a_new_probe_and_is_answered(monkeypatch):
    a = random_secrets()
    mine, theirs = datapath(secrets=a), datapath(secrets=a)
    pr, r = prober(mine), responder(theirs)
    (first,) = pr.outgoing()
    assert r.answer(first, SOURCE, SOURCE, True)              # answered, but the answer is lost
    clock = time.monotonic() + 0.6
    monkeypatch.setattr(time, "monotonic", lambda: clock)     # RETRY_S later
    (retry,) = pr.outgoing()
    assert PROBE_HEAD.unpack_from(retry, 16)[3] != PROBE_HEAD.unpack_from(first, 16)[3]   # a new nonce
    for answer in r.answer(retry, SOURCE, SOURCE, True):
        pr.incoming(answer)
    assert pr.checks["reachable"].ok


def test_a_probe_refused_for_a_budget_is_answered_when_it_comes_again():
    dp = datapath()
    r = responder(dp)
    p = seal_probe(dp)
    r.answers.tokens = 0                                       # everyone's answers spent
    r.answers.rate = 0
    assert answers_to(r, p, times=1) == 0
    r.answers.rate, r.answers.tokens = 20, 20
    assert answers_to(r, p, times=1) == 1


def test_a_probe_bounced_back_to_its_own_etun_gets_no_answer_and_no_ok():
    """An attacker bounces our probe to our own tunnel socket: our responder (our instance)
    refuses it, and a reply naming our own instance is no answer to the prober either, so
    verify-peer says "no answer", never ok."""
    dp = datapath()
    pr = prober(dp, instance=OURS)
    (out,) = pr.outgoing()
    assert answers_to(responder(dp), out, times=1) == 0
    for answer in Responder(dp, "berlin", b"\x44" * 16).answer(out, SOURCE, SOURCE, True):
        forged = bytearray(answer)
        forged[16 + 20:16 + 36] = OURS                  # as if our own responder had answered
        pr.incoming(_fast.seal_probe(dp, _fast.TYPE_PROBE_REPLY, bytes(forged[16:-16])))
    assert pr.checks["reachable"].ok is None


def test_a_site_name_from_the_wire_is_shown_without_control_characters():
    a = random_secrets()
    mine, theirs = datapath(secrets=a), datapath(secrets=a)
    pr = prober(mine)
    (out,) = pr.outgoing()
    for answer in Responder(theirs, "\x1b[2Jevil\x07", b"\x55" * 16).answer(out, SOURCE, SOURCE, True):
        pr.incoming(answer)
    detail = pr.checks["reachable"].detail
    assert "\x1b" not in detail and "\x07" not in detail and "evil" in detail
