"""Fuzz target: verify-peer's probes today: the daemon's Responder and the Prober, on fuzzer packets."""

# Kept apart from the HELLO target: the probes move to the new handshake's keys separately.
# Input: byte 0 picks our level; then up to 12 steps, each a probe for the Responder or a reply
# for a Prober, either raw bytes or authentic under the control key with fuzzer-chosen fields
# (kind, claimed level, nonces, addresses, site, padding). Oracles: the Responder's answer to
# a probe it cannot authenticate is never larger than that probe (SPEC: no amplifier) and
# tells nothing (no addresses, no site); nothing raises but Dropped; a Prober's report is
# always complete (every check decided, ok or not).

import socket
import struct

import harness
from harness import CONTROL_KEY, Reader

harness.instrumented("etun.probe")

from etun import _fast, probe  # noqa: E402  (after the instrumented import)

LEVELS = (_fast.LEVEL_AUTH, _fast.LEVEL_ENCRYPT, _fast.LEVEL_NONE)
PEER = struct.pack("=H", socket.AF_INET) + (5555).to_bytes(2, "big") + bytes([198, 19, 2, 1]) + bytes(8)


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


def test_one_input(data: bytes) -> None:
    r = Reader(data)
    level = LEVELS[r.byte() % 3]
    key = CONTROL_KEY if level else None
    responder = probe.Responder(level, key, "site-b")
    prober = probe.Prober(level, key, 800, PEER, 5.0, socket.AF_INET)
    prober.outgoing()
    for _ in range(12):
        if r.left() < 2:
            break
        op = r.byte()
        raw = op & 1
        claimed = r.byte() % 4 if op & 2 else level
        wrong = op & 4
        if op < 128:
            # A probe for the daemon's Responder.
            if raw:
                datagram = r.chunk(1500)
            else:
                body = probe.PROBE_HEAD.pack(r.byte() % 4, claimed, 0, r.bytes(16).ljust(16, b"\0"))
                body += bytes(r.int(2) % 900)
                ptype = _fast.TYPE_PROBE if op & 8 else _fast.CONTROL_TYPES[r.byte() % 3]
                datagram = _fast.seal_control(claimed % 3, CONTROL_KEY if not wrong else bytes(32), ptype, 0, body)
            try:
                answers = responder.answer(datagram, sockaddr(r), PEER if op & 16 else None, bool(op & 32))
            except _fast.Dropped:
                continue
            for answer in answers:
                _, _, _, payload = _fast.read_control(answer)
                kind = payload[0]
                if kind == probe.KIND_UNAUTHENTICATED:
                    assert len(answer) <= len(datagram), "an unauthenticated probe got a larger answer"
                    # Only the kind, our level and the prober's own nonce (bytes 4..20) may be in it.
                    told = payload[2] or payload[20:].strip(b"\0")
                    assert not told, "an unauthenticated probe learnt something"
                if level == _fast.LEVEL_NONE:
                    assert len(answer) <= len(datagram), "at level none an answer is no larger than its probe"
        else:
            # A reply for our Prober: echo one of its nonces most of the time.
            if raw:
                datagram = r.chunk(1500)
            else:
                echo = (prober.plain_nonce, prober.size_nonce, r.bytes(16).ljust(16, b"\0"))[r.byte() % 3]
                seen = probe.encode_addr(sockaddr(r)) if r.byte() < 200 else r.bytes(20).ljust(20, b"\0")
                target = probe.encode_addr(sockaddr(r)) if r.byte() < 200 else r.bytes(20).ljust(20, b"\0")
                body = probe.REPLY_HEAD.pack(r.byte() % 4, claimed, r.byte(), echo, seen, target,
                                             r.bytes(32).ljust(32, b"\0"))
                body += bytes(r.int(2) % 900)
                datagram = _fast.seal_control(claimed % 3, CONTROL_KEY if not wrong else bytes(32),
                                              _fast.TYPE_PROBE_REPLY, 0, body)
            prober.incoming(datagram)
            prober.outgoing()
    report = prober.report()
    assert all(c["ok"] in (True, False) and c["detail"] for c in report["checks"]), report


if __name__ == "__main__":
    harness.main(test_one_input)
