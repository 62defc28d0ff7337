"""Fuzz target: verify-peer's probes through the admission gate to the daemon's Responder and the Prober."""

# Input: byte 0 picks our level; then up to 12 steps, each a probe for the Responder or a reply
# for a Prober, either raw bytes or authentic under the probe key of our key file (or another
# one) with fuzzer-chosen fields (kind, the level it claims, nonce, instance, wall-clock time,
# echoed nonce, addresses, site, padding), from a fuzzer-chosen source address, now and then
# a copy of an earlier step's datagram. Every datagram goes the daemon's way: the admission
# gate (open_exact with a source: budgets, the ring of tags admitted, a probe's time within
# 5 minutes of our wall clock), then the Responder or the Prober. Oracles: an authentic
# datagram is admitted once, and a probe whose time is 5 minutes off never; the Responder's
# answer to a probe it cannot authenticate is never larger than that probe (SPEC: no
# amplifier) and tells nothing (no addresses, no site, no instance); at level none no answer
# is larger than its probe; nothing raises but Dropped; a Prober's report is always complete
# (every check decided, ok or not).

import socket
import struct
import time

import harness
from harness import Reader

harness.instrumented("etun.probe")

from etun import _fast, keys, probe  # noqa: E402  (after the instrumented import)

LEVELS = (_fast.LEVEL_AUTH, _fast.LEVEL_ENCRYPT, _fast.LEVEL_NONE)
PEER = struct.pack("=H", socket.AF_INET) + (5555).to_bytes(2, "big") + bytes([198, 19, 2, 1]) + bytes(8)
OURS = b"\x11" * 16                 # the responder's instance (the daemon's Session.instance)
PROBER = b"\x22" * 16               # the Prober's
AGE_MAX_MS = 300_000                # PROTOCOL.md §7: a probe's time within 5 minutes of ours
CLOCK_SLACK_MS = 2_000              # our wall clock and the gate's coarse one differ by this, at most
OTHER_KEY_FILE = keys.Secrets.from_prk(bytes(range(200, 232)))
_sealers: dict = {}


def sealer(level: int, ours: bool):
    """A datapath that seals probes at `level` under our key file's probe key or another's."""
    key = (level, ours)
    if key not in _sealers:
        dp = _sealers[key] = _fast.Datapath(level)
        (harness.secrets(level) if ours or level == _fast.LEVEL_NONE else OTHER_KEY_FILE).install(dp)
    return _sealers[key]


def sockaddr(r: Reader) -> bytes:
    """A source address as the pump reports it: a whole sockaddr_in or sockaddr_in6, any content."""
    b = r.byte()
    if b < 128:
        return PEER
    if b < 160:
        return struct.pack("=H", socket.AF_INET) + r.bytes(14).ljust(14, b"\0")
    if b < 200:
        return struct.pack("=H", socket.AF_INET6) + r.bytes(26).ljust(26, b"\0")
    mapped = bytes(10) + b"\xff\xff" + r.bytes(4).ljust(4, b"\0")     # a v4-mapped IPv6 source
    return struct.pack("=H", socket.AF_INET6) + r.bytes(2).ljust(2, b"\0") + bytes(4) + mapped + bytes(4)


def wall_ms(r: Reader, now_ms: int) -> int:
    """A probe's time: ours, near ours, near the edge of the window, or anything."""
    b = r.byte()
    if b < 100:
        return now_ms + (r.byte() - 128) * 1000
    if b < 200:
        return now_ms + (1 if b & 1 else -1) * (AGE_MAX_MS + (r.byte() - 128) * 100)
    return r.int(8)


def nonce(r: Reader, pool: list) -> bytes:
    b = r.byte()
    return pool[b % len(pool)] if pool and b < 192 else r.bytes(16).ljust(16, b"\0")


def test_one_input(data: bytes) -> None:
    r = Reader(data)
    level = LEVELS[r.byte() % 3]
    dp = harness.datapath(level, role="probe")
    responder = probe.Responder(dp, "site-b", OURS)
    prober = probe.Prober(dp, PROBER, 800, PEER, 5.0, socket.AF_INET)
    prober.outgoing()
    sent: list[bytes] = []
    admitted_tags: set[bytes] = set()
    now = 1000
    for _ in range(12):
        if r.left() < 2:
            break
        op = r.byte()
        now += r.byte() * 8
        wall = int(time.time() * 1000)
        claimed = LEVELS[r.byte() % 3] if op & 2 else level
        ours = not op & 4
        timely = True
        if op & 1:
            datagram = r.chunk(1500) if op & 8 or not sent else sent[r.byte() % len(sent)]
        elif op < 128:
            # A probe for the daemon's Responder.
            stamp = wall_ms(r, wall)
            timely = abs(stamp - wall) <= AGE_MAX_MS - CLOCK_SLACK_MS
            instance = (OURS, PROBER, r.bytes(16).ljust(16, b"\0"))[r.byte() % 3]
            body = probe.PROBE_HEAD.pack(r.byte() % 4, claimed, 0, nonce(r, []), instance, stamp % (1 << 64))
            body += bytes(r.int(2) % 900)
            ptype = _fast.TYPE_PROBE if op & 8 else _fast.PROBE_TYPES[r.byte() % 2]
            datagram = _fast.seal_probe(sealer(claimed, ours), ptype, body)
            if abs(stamp - wall) <= AGE_MAX_MS + CLOCK_SLACK_MS:
                timely = None                      # near the edge: either verdict is right
        else:
            # A reply for our Prober: echo one of its nonces most of the time.
            echo = nonce(r, sorted(prober.plain_nonces | prober.size_nonces))
            seen = probe.encode_addr(sockaddr(r)) if r.byte() < 200 else r.bytes(20).ljust(20, b"\0")
            target = probe.encode_addr(sockaddr(r)) if r.byte() < 200 else r.bytes(20).ljust(20, b"\0")
            instance = (OURS, PROBER, r.bytes(16).ljust(16, b"\0"))[r.byte() % 3]
            body = probe.REPLY_HEAD.pack(r.byte() % 4, claimed, r.byte(), echo, instance, seen, target,
                                         r.bytes(32).ljust(32, b"\0"))
            body += bytes(r.int(2) % 900)
            datagram = _fast.seal_probe(sealer(claimed, ours), _fast.TYPE_PROBE_REPLY, body)
        sent.append(datagram)
        source = sockaddr(r)
        for ptype, item in _fast.open_exact(dp, datagram, now, source):
            if ptype not in _fast.PROBE_TYPES:
                continue                           # a handshake message: fuzz_handshake.py's
            assert item == datagram
            try:
                authentic = _fast.read_probe(dp, datagram)[3]
            except _fast.Dropped:
                authentic = False                  # a broken header: the Responder drops it too
            if authentic:
                tag = datagram[-_fast.TAG_LEN:]
                assert tag not in admitted_tags, "an authentic probe packet was admitted twice"
                admitted_tags.add(tag)
                if ptype == _fast.TYPE_PROBE and timely is False:
                    raise AssertionError("a probe whose time is 5 minutes off ours was admitted")
            if ptype == _fast.TYPE_PROBE_REPLY:
                prober.incoming(datagram)
                prober.outgoing()
                continue
            try:
                answers = responder.answer(datagram, source, PEER if op & 16 else None, bool(op & 32))
            except _fast.Dropped as e:
                assert e.reason in _fast.DROP_REASONS, e.reason
                continue
            for answer in answers:
                _, kind_type, payload, _ = _fast.read_probe(dp, answer)
                assert kind_type == _fast.TYPE_PROBE_REPLY
                if payload[0] == probe.KIND_UNAUTHENTICATED:
                    assert len(answer) <= len(datagram), "an unauthenticated probe got a larger answer"
                    # Only the kind, our level and the prober's own nonce (bytes 4..20) may be in it.
                    told = payload[2] or payload[20:].strip(b"\0")
                    assert not told, "an unauthenticated probe learnt something"
                if level == _fast.LEVEL_NONE:
                    assert len(answer) <= len(datagram), "at level none an answer is no larger than its probe"
    report = prober.report()
    assert all(c["ok"] in (True, False) and c["detail"] for c in report["checks"]), report


if __name__ == "__main__":
    harness.main(test_one_input)
