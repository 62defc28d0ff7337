"""verify-peer's probes (PROTOCOL.md §7): the Prober that sends and judges them, the daemon's Responder.

The Prober sends probes and judges the answers; the Responder inside the daemon answers other
sites' probes.

A probe carries a fresh nonce, the time, and the prober's instance; a reply echoes the nonce and
names the responder's instance. So a probe reflected back to its own sender, or replayed later,
gets no answer, and a prober takes only replies to its own outstanding probes."""

import os
import socket
import struct
import time
from dataclasses import dataclass, field

from etun import _fast
from etun.ratelimit import TokenBucket
from etun.text import printable
from etun.transport import format_sockaddr

KIND_PLAIN, KIND_SIZE = 1, 2                       # probes
KIND_ANSWER, KIND_BIG, KIND_UNAUTHENTICATED = 1, 2, 3   # replies
PROBE_MIN_BYTES = 200           # a probe is never smaller than any answer to it
RETRY_S = 0.5                   # resend a probe that got no answer after this long
SIZE_TRIES = 3                  # size probes sent before concluding they do not pass
ANSWERS_PER_SECOND = 20         # to authenticated probes
UNAUTH_ANSWERS_PER_SECOND = 10  # to probes we cannot authenticate

PROBE_HEAD = struct.Struct("!BBH16s16sQ")      # kind, level, reserved, nonce, instance, time_ms
REPLY_HEAD = struct.Struct("!BBBx16s16s20s20s32s")   # kind, level, flags, echo, instance, seen, target, site
LEVEL_NAMES = _fast.LEVEL_NAMES
SOURCES_REMEMBERED = 64         # per-source answer budgets kept (the least recent goes first)
PROBE_AGE_MAX_S = 300           # a probe's time may be this far from ours (clocks of two sites)
CHECKS = ("reachable", "key", "level", "size", "address")   # a report's checks, in its order; then "segments"
NONCES_REMEMBERED = 256         # nonces of authentic probes answered: a replay gets nothing


def encode_addr(raw: bytes | None) -> bytes:
    """A socket address in 20 bytes: family (4 or 6), 0, port, 16 address bytes."""
    if not raw:
        return bytes(20)
    family = struct.unpack_from("=H", raw)[0]
    port = raw[2:4]
    if family == socket.AF_INET:
        return bytes([4, 0]) + port + raw[4:8] + bytes(12)
    address = raw[8:24]
    if address[:12] == bytes(10) + b"\xff\xff":         # v4-mapped: say it as IPv4
        return bytes([4, 0]) + port + address[12:] + bytes(12)
    return bytes([6, 0]) + port + address


def decode_addr(blob: bytes) -> str | None:
    if blob[0] == 4:
        return f"{socket.inet_ntoa(blob[4:8])}:{int.from_bytes(blob[2:4], 'big')}"
    if blob[0] == 6:
        return f"[{socket.inet_ntop(socket.AF_INET6, blob[4:20])}]:{int.from_bytes(blob[2:4], 'big')}"
    return None


class Responder:
    """Answers probes from other sites' verify-peer (inside the daemon). `instance` is this
    etun's (session.Session.instance): a probe carrying it is our own, reflected."""

    def __init__(self, datapath, site: str, instance: bytes, wall=time.time):
        self.dp = datapath
        self.level = datapath.level
        self.site = site
        self.instance = instance
        self.wall = wall
        self.answers = TokenBucket(ANSWERS_PER_SECOND)
        self.unauth = TokenBucket(UNAUTH_ANSWERS_PER_SECOND)
        self.per_source: dict[bytes, TokenBucket] = {}
        self.nonces: dict[bytes, None] = {}       # authentic probes answered, oldest first

    def _source_allows(self, source: bytes) -> bool:
        """A recorded probe replayed from one address must not use up everyone's answers."""
        bucket = self.per_source.pop(source, None) or TokenBucket(ANSWERS_PER_SECOND // 2)
        self.per_source[source] = bucket
        while len(self.per_source) > SOURCES_REMEMBERED:
            del self.per_source[next(iter(self.per_source))]
        return bucket.take()

    def _fresh(self, nonce: bytes, instance: bytes, time_ms: int) -> bool:
        """An authentic probe is answered once, and only while its time is near ours: a
        reflection of our own probe, or a recording replayed, gets nothing."""
        if instance == self.instance or abs(self.wall() * 1000 - time_ms) > PROBE_AGE_MAX_S * 1000:
            return False
        return nonce not in self.nonces

    def _answered(self, nonce: bytes) -> None:
        """Remember a nonce once it got an answer; one refused for a budget may come again."""
        self.nonces[nonce] = None
        while len(self.nonces) > NONCES_REMEMBERED:
            del self.nonces[next(iter(self.nonces))]

    def answer(self, datagram: bytes, source: bytes, target: bytes | None, peer_up: bool) -> list[bytes]:
        """The replies to one PROBE (possibly none); raises _fast.Dropped for a broken one."""
        probe_level, ptype, payload, authenticated = _fast.read_probe(self.dp, datagram)
        if ptype != _fast.TYPE_PROBE or len(payload) < PROBE_HEAD.size:
            raise _fast.Dropped("malformed")
        kind, _, _, nonce, instance, time_ms = PROBE_HEAD.unpack_from(payload)

        def reply(reply_kind: int, size: int = 0, telling: bool = True) -> bytes:
            # Only an authenticated prober learns where we send and how the tunnel is.
            fields = ((1 if peer_up else 0), self.instance, encode_addr(source), encode_addr(target),
                      self.site.encode()[:32]) if telling else (0, bytes(16), bytes(20), bytes(20), b"")
            body = REPLY_HEAD.pack(reply_kind, self.level, fields[0], nonce, *fields[1:])
            tag = _fast.TAG_LEN if self.level else 0
            body = body.ljust(max(len(body), size - _fast.HEADER_LEN - tag), b"\0")
            return _fast.seal_probe(self.dp, _fast.TYPE_PROBE_REPLY, body)

        if not authenticated and not (self.level == 0 and probe_level == 0):
            # We cannot tell who sent this: one small answer that tells nothing but our level,
            # rarely, never larger than the probe.
            answer = reply(KIND_UNAUTHENTICATED, telling=False)
            if len(answer) > len(datagram) or not self.unauth.take():
                raise _fast.Dropped("auth")
            return [answer]
        if not self._fresh(nonce, instance, time_ms):
            raise _fast.Dropped("replay")
        if not self._source_allows(source):
            return []
        if self.level == 0:
            # Level none proves nothing about who asked: one answer, no larger than the probe.
            answer = reply(KIND_BIG, size=len(datagram)) if kind == KIND_SIZE else reply(KIND_ANSWER)
            if len(answer) > len(datagram) or not self.unauth.take():
                return []
            self._answered(nonce)
            return [answer]
        if not self.answers.take():
            return []
        self._answered(nonce)
        out = [reply(KIND_ANSWER)]
        if kind == KIND_SIZE:
            out.append(reply(KIND_BIG, size=len(datagram)))
        return out


@dataclass
class Check:
    name: str
    ok: bool | None = None          # None: not decided (yet)
    detail: str = ""


@dataclass
class Prober:
    """One verify-peer run against the peer at `peer` (raw sockaddr), driven by the caller's
    clock and socket: outgoing() says what to send, incoming() takes answers."""

    datapath: object                # holds the probe key (keys.Secrets.install)
    instance: bytes                 # this etun's (or this verify-peer run's own) instance
    max_packet: int
    peer: bytes
    timeout_s: float
    family: int
    checks: dict = field(default_factory=dict)

    def __post_init__(self):
        self.level = self.datapath.level
        self.started = time.monotonic()
        self.plain_nonces: set[bytes] = set()    # one per probe sent: a retry is a new probe,
        self.size_nonces: set[bytes] = set()     # so a lost answer does not make it a replay
        self.plain_sent_at: float | None = None
        self.size_sent: list[float] = []
        self.size_acked = self.size_big = False
        self.phase = "plain"
        self.ip_overhead = 40 if format_sockaddr(self.peer).startswith("[") else 20
        for name in CHECKS:
            self.checks[name] = Check(name)

    # -- sending ----------------------------------------------------------------------------

    def _probe(self, kind: int, nonces: set, size: int) -> bytes:
        nonce = os.urandom(16)
        nonces.add(nonce)
        body = PROBE_HEAD.pack(kind, self.level, 0, nonce, self.instance, int(time.time() * 1000))
        tag = _fast.TAG_LEN if self.level else 0
        body = body.ljust(size - _fast.HEADER_LEN - tag, b"\0")
        return _fast.seal_probe(self.datapath, _fast.TYPE_PROBE, body)

    @property
    def size_bytes(self) -> int:
        """UDP payload of the size probe: the datagram is max_packet - 1 bytes with its header."""
        return self.max_packet - 1 - 8

    def outgoing(self) -> list[bytes]:
        now = time.monotonic()
        if self.done():
            return []
        if self.phase == "plain" and (self.plain_sent_at is None or now - self.plain_sent_at >= RETRY_S):
            self.plain_sent_at = now
            return [self._probe(KIND_PLAIN, self.plain_nonces, PROBE_MIN_BYTES)]
        if self.phase == "size" and len(self.size_sent) < SIZE_TRIES and (
                not self.size_sent or now - self.size_sent[-1] >= RETRY_S):
            self.size_sent.append(now)
            return [self._probe(KIND_SIZE, self.size_nonces, self.size_bytes)]
        return []

    # -- receiving --------------------------------------------------------------------------

    def incoming(self, datagram: bytes) -> None:
        try:
            level, ptype, payload, authenticated = _fast.read_probe(self.datapath, datagram)
        except _fast.Dropped:
            return
        if ptype != _fast.TYPE_PROBE_REPLY or len(payload) < REPLY_HEAD.size:
            return
        kind, peer_level, flags, echo, instance, seen, target, site = REPLY_HEAD.unpack_from(payload)
        if (echo not in self.plain_nonces and echo not in self.size_nonces) or instance == self.instance:
            return                                   # not an answer to this run, or our own
        c = self.checks
        if c["reachable"].ok is None:
            rtt = (time.monotonic() - (self.plain_sent_at or self.started)) * 1000
            name = printable(site.rstrip(b"\0").decode(errors="replace")) or "?"
            c["reachable"] = Check("reachable", True, f"answer from {name} in {rtt:.2f} ms")
        if peer_level != self.level:
            c["level"] = Check("level", False, f"security level differs: the peer runs "
                               f"{LEVEL_NAMES.get(peer_level, '?')}, we run {LEVEL_NAMES[self.level]}")
        elif c["level"].ok is None:
            c["level"] = Check("level", True, f"same security level: {LEVEL_NAMES[self.level]}")
        if self.level == 0 and peer_level == 0:
            c["key"] = Check("key", True, "no key material in use (level none at both sites)")
        elif self.level == 0 or peer_level == 0 or kind == KIND_UNAUTHENTICATED or not authenticated:
            c["key"] = Check("key", False, "key material differs: the peer cannot authenticate our "
                             "probe, or its answer does not authenticate under our key material "
                             "(compare fingerprints with etun check)")
            c["size"] = Check("size", False, "not tested: needs matching key material")
            c["address"] = Check("address", False, "not tested: needs matching key material")
            self.phase = "done"
            return
        else:
            c["key"] = Check("key", True, "same key material (proved by challenge and response)")
        if echo in self.plain_nonces and kind == KIND_ANSWER and c["address"].ok is None:
            seen_s, target_s = decode_addr(seen), decode_addr(target)
            if target_s is None:
                c["address"] = Check("address", False, f"the peer has no address to send to; it sees us at {seen_s}")
            elif target_s == seen_s:
                c["address"] = Check("address", True, f"the peer sees us at {seen_s}, where it sends")
            else:
                c["address"] = Check("address", False, f"the peer sends to {target_s}, but our packets "
                                     f"reach it from {seen_s} (a NAT, or a stale [tunnel] peer there)")
            if self.phase == "plain":
                self.phase = "size"
        if echo in self.size_nonces:
            if kind == KIND_ANSWER:
                self.size_acked = True
            elif kind == KIND_BIG and len(datagram) >= self.size_bytes:
                self.size_big = True
            # At level none the peer sends only the big answer: it then stands for both ways.
            if self.size_big and (self.size_acked or self.level == 0):
                c["size"] = Check("size", True, f"{self.size_bytes + 8}-byte tunnel packets pass both "
                                  "ways with DF set")
                self.phase = "done"

    # -- the end ----------------------------------------------------------------------------

    def done(self) -> bool:
        if self.phase == "done":
            return True
        if time.monotonic() - self.started >= self.timeout_s:
            return True
        # Size probes all sent and their answers overdue.
        return (self.phase == "size" and len(self.size_sent) == SIZE_TRIES
                and time.monotonic() - self.size_sent[-1] >= RETRY_S)

    def report(self, segments: tuple[tuple[str, ...], tuple[str, ...]] | None = None) -> dict:
        """The checks, decided. `segments`: (ours, the peer's) when a session told us the peer's
        (the running daemon's verify-peer): then they are checked too."""
        c = self.checks
        if segments is not None:
            c["segments"] = segments_check(*segments)
        n = self.size_bytes + 8
        wire = n + self.ip_overhead
        if c["reachable"].ok is None:
            c["reachable"] = Check("reachable", False, f"no answer from {format_sockaddr(self.peer)} "
                                   f"within {self.timeout_s:g} s (is etun running there, and UDP open?)")
            for name in ("key", "level", "size", "address"):
                c[name] = Check(name, False, "not tested: no answer")
        if c["size"].ok is None:
            if not self.size_sent:
                c["size"].ok, c["size"].detail = False, "not tested: no time left"
            elif self.level == 0:
                c["size"].ok, c["size"].detail = False, (
                    f"{n}-byte tunnel packets do not pass (in at least one direction): a path MTU "
                    f"below {wire} bytes; lower [tunnel] max_packet")
            elif not self.size_acked:
                c["size"].ok, c["size"].detail = False, (
                    f"{n}-byte tunnel packets do not reach the peer: the path MTU towards it is "
                    f"below {wire} bytes; lower [tunnel] max_packet")
            else:
                c["size"].ok, c["size"].detail = False, (
                    f"{n}-byte tunnel packets from the peer do not reach us: the path MTU from it "
                    f"is below {wire} bytes; lower [tunnel] max_packet at both sites")
        for check in c.values():
            if check.ok is None:
                check.ok, check.detail = False, check.detail or "not decided"
        checks = [{"check": k.name, "ok": k.ok, "detail": k.detail} for k in c.values()]
        return {"peer": format_sockaddr(self.peer), "ok": all(k.ok for k in c.values()), "checks": checks}


def segments_check(ours: tuple[str, ...], theirs: tuple[str, ...]) -> Check:
    """Whether both sites have the same segments, naming those only one has."""
    here = [name for name in ours if name not in theirs]
    there = [name for name in theirs if name not in ours]
    if not here and not there:
        return Check("segments", True, f"the peer has the same segments: {', '.join(ours)}")
    parts = [f"{', '.join(names)} only {where}" for names, where in ((here, "here"), (there, "at the peer")) if names]
    return Check("segments", False, "segments differ: " + "; ".join(parts)
                 + " (their frames are dropped and counted as unknown_segment)")
