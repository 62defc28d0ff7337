"""The HELLO exchange (docs/PROTOCOL.md §5): sessions per direction, keepalive, round-trip time,
and when the send side moves to its next key index."""

import logging
import os
import struct
import time
from dataclasses import dataclass, field

from etun import _fast, keys
from etun.ratelimit import TokenBucket

log = logging.getLogger("etun")

HELLO_LAYOUT = struct.Struct("!16s16s16s16s16sIIIB3xI32s")   # PROTOCOL.md §5
HELLO_LEN = HELLO_LAYOUT.size
FLAG_ANSWER = 0x01
ZERO16 = bytes(16)
SENDERS_REMEMBERED = 16         # HELLO counters kept per sender nonce: bounded, whatever arrives
ANSWERS_PER_SECOND = 10         # replies to HELLOs: a replayed flood cannot make us chatty
UNSETTLED_INTERVAL_MS = 1000    # HELLO period while a direction has no confirmed session


def clock_us() -> int:
    """Microseconds on the monotonic clock, for round-trip times (the pumps' clock is coarse)."""
    return time.monotonic_ns() // 1000


@dataclass
class Hello:
    sender: bytes
    challenge: bytes
    propose: bytes
    acc_sender: bytes
    acc_chal: bytes
    time_us: int
    echo_us: int
    held_us: int
    flags: int
    send_index: int
    site: str

    def encode(self) -> bytes:
        return HELLO_LAYOUT.pack(self.sender, self.challenge, self.propose, self.acc_sender,
                                self.acc_chal, self.time_us & 0xFFFFFFFF, self.echo_us & 0xFFFFFFFF,
                                self.held_us & 0xFFFFFFFF, self.flags, self.send_index,
                                self.site.encode()[:32])

    @classmethod
    def decode(cls, payload: bytes) -> "Hello":
        if len(payload) != HELLO_LEN:
            raise ValueError("malformed")
        f = HELLO_LAYOUT.unpack(payload)
        try:
            site = f[10].rstrip(b"\0").decode()
        except UnicodeDecodeError:
            raise ValueError("malformed") from None
        return cls(*f[:10], site=site)


@dataclass
class Outcome:
    """What one received HELLO asks of the daemon."""

    answer: bool = False
    roam: bool = False
    events: list[str] = field(default_factory=list)
    drop: str | None = None


class Session:
    """Both directions' session state of one site; keys go to the datapath as they settle.

    Receive side: the peer opens a session to us by echoing our current challenge; we accept
    it and draw a new challenge at once. Send side: we propose (echo) the peer's challenge
    and keep sending under the session in use until the peer confirms it accepted ours.
    """

    def __init__(self, level: int, datapath, site: str, prk: bytes | None, control_key: bytes | None,
                 now_ms: int, keepalive_ms: int = 10_000, rekey_ms: int = 120_000, random=os.urandom):
        self.level = level
        self.keepalive_ms = keepalive_ms
        self.rekey_ms = rekey_ms
        self.dp = datapath
        self.site = site
        self.prk = prk
        self.control_key = control_key
        self.random = random
        self.sender = random(16)
        self.counter = 0
        self.challenge = random(16)
        self.recv: tuple[bytes, bytes] | None = None    # (peer sender, our challenge) we accept
        self.send: bytes | None = None                  # peer challenge we send under
        self.pending: bytes | None = None               # peer challenge proposed, unconfirmed
        self.renewing = False                           # we asked for a new send session
        self.peer_challenge: bytes | None = None        # the peer's latest challenge seen
        self.last_counter: dict[bytes, int] = {}
        self.peer_time: tuple[int, int] | None = None   # (peer's time_us, our clock_us on receipt)
        self.peer_site = ""
        self.rtt_ms: float | None = None
        self.last_rx_ms: int | None = None
        self.next_hello_ms = now_ms
        self.answers = TokenBucket(ANSWERS_PER_SECOND / 1000, ANSWERS_PER_SECOND, now=now_ms)
        self.rotated_ms = now_ms                        # the send keys' latest new index

    # -- state ------------------------------------------------------------------------------

    @property
    def settled(self) -> bool:
        return self.recv is not None and self.send is not None and self.pending is None

    def _secret(self, sender: bytes, challenge: bytes) -> bytes:
        if self.level == _fast.LEVEL_NONE:
            return b""
        return keys.session_secret(self.prk, sender, challenge)

    def _install_send(self, challenge: bytes, now_ms: int) -> None:
        self.dp.set_send_session(self._secret(self.sender, challenge))
        self.send = challenge
        self.rotated_ms = now_ms                        # a new session starts at index 0

    def rotate_if_due(self, now_ms: int) -> None:
        """Move the send keys to the next index every `rekey` of one send session; when the
        session's indices are used up, propose a new session instead."""
        if self.send is None or self.level == _fast.LEVEL_NONE or now_ms - self.rotated_ms < self.rekey_ms:
            return
        self.rotated_ms = now_ms
        try:
            self.dp.rotate_send()
        except OverflowError:
            log.info("key index space of the send session used up; proposing a new session")
            self.renew_send()
            return
        log.debug("send keys rotated to index %d", self.dp.send_index)

    def renew_send(self) -> None:
        """Propose a new send session (the current one used up its key indices); the old one
        stays in use until the peer confirms."""
        self.renewing = True
        if self.peer_challenge is not None and self.peer_challenge != self.send:
            self.pending = self.peer_challenge
            self.next_hello_ms = 0

    def _remember(self, sender: bytes, counter: int) -> None:
        """Keep HELLO counters of the latest few sender nonces, never evicting the one whose
        session we accept: forgetting it would make its recorded HELLOs fresh again."""
        self.last_counter.pop(sender, None)       # re-insert: the dict's order is recency
        self.last_counter[sender] = counter
        keep = self.recv[0] if self.recv else None
        while len(self.last_counter) > SENDERS_REMEMBERED:
            oldest = next(k for k in self.last_counter if k != keep)
            del self.last_counter[oldest]

    # -- sending ----------------------------------------------------------------------------

    def hello(self, now_ms: int) -> bytes:
        """A HELLO datagram saying where both directions stand."""
        self.counter += 1
        now_us = clock_us()
        echo, held = (0, 0)
        if self.peer_time is not None:
            echo, held = self.peer_time[0], now_us - self.peer_time[1]
        h = Hello(
            sender=self.sender,
            challenge=self.challenge,
            propose=self.pending or self.send or ZERO16,
            acc_sender=self.recv[0] if self.recv else ZERO16,
            acc_chal=self.recv[1] if self.recv else ZERO16,
            time_us=now_us,
            echo_us=echo,
            held_us=held,
            flags=0 if self.settled else FLAG_ANSWER,
            # The index of the session `propose` names: a proposed new one starts at 0.
            send_index=0 if self.pending not in (None, self.send) else (self.dp.send_index or 0),
            site=self.site,
        )
        self.next_hello_ms = now_ms + (UNSETTLED_INTERVAL_MS if not self.settled else self.keepalive_ms)
        return _fast.seal_control(self.level, self.control_key, _fast.TYPE_HELLO, self.counter, h.encode())

    def hello_due(self, now_ms: int) -> bool:
        return now_ms >= self.next_hello_ms

    # -- receiving --------------------------------------------------------------------------

    def receive(self, datagram: bytes, now_ms: int) -> Outcome:
        """Handle one HELLO datagram (already known to be of type HELLO)."""
        out = Outcome()
        try:
            _, counter, payload = _fast.open_control(self.level, self.control_key, datagram)
            h = Hello.decode(payload)
        except _fast.Dropped as e:
            out.drop = e.reason
            return out
        except ValueError:
            out.drop = "malformed"
            return out
        # Both sites hold the same control key: one of our own HELLOs, reflected back, would
        # authenticate. It is never the peer's.
        if h.sender == self.sender:
            out.drop = "replay"
            return out
        # 1. Freshness: per sender nonce, HELLO counters only grow.
        if counter <= self.last_counter.get(h.sender, 0):
            out.drop = "replay"
            return out
        self._remember(h.sender, counter)
        changed = accepted = False

        # 2. Accept: the peer echoed our current challenge, so this HELLO is fresh.
        if h.propose == self.challenge:
            if self.recv != (h.sender, h.propose):
                restarted = self.recv is not None and self.recv[0] != h.sender
                self.dp.set_recv_session(self._secret(h.sender, h.propose))
                self.dp.set_peer_hello_sender(h.sender)
                self.recv = (h.sender, h.propose)
                out.events.append("peer restarted; new session accepted" if restarted
                                  else "receive session accepted")
                changed = True
            self.challenge = self.random(16)
            out.roam = accepted = True
        elif self.recv is not None and h.sender == self.recv[0]:
            out.roam = True

        # 6. The peer sends under our receive session at h.send_index: after an outage longer
        # than the receiver's look-ahead, data alone could not tell us how far it rotated. (A
        # HELLO that just opened the session says nothing of it: new sessions start at 0.)
        if not accepted and self.recv == (h.sender, h.propose):
            self.dp.catch_up_recv(h.send_index)
        self.peer_challenge = h.challenge
        # 3./4. Confirm our proposal, or propose the peer's current challenge.
        if h.acc_sender == self.sender and self.pending is not None and h.acc_chal == self.pending:
            if self.send != self.pending:
                self._install_send(self.pending, now_ms)
            self.pending = None
            self.renewing = False
            out.events.append("send session confirmed")
        elif h.acc_sender == self.sender and h.acc_chal == self.send:
            # The peer accepts what we send under. A proposal still out is stale (say, made for
            # a HELLO of the peer's previous run) unless we asked for a new session ourselves;
            # then it follows the peer's latest challenge until the peer takes it.
            if self.renewing and self.pending != h.challenge:
                self.pending = h.challenge
                changed = True
            elif not self.renewing and self.pending is not None:
                self.pending = None
        else:
            if self.pending != h.challenge:
                self.pending = h.challenge
                changed = True
            if self.send is None:
                # Nothing to keep sending under: start now, the confirmation follows.
                self._install_send(self.pending, now_ms)

        now_us = clock_us()
        if h.echo_us:
            rtt_us = (now_us - h.echo_us - h.held_us) & 0xFFFFFFFF
            if rtt_us < 60_000_000:
                self.rtt_ms = rtt_us / 1000
        self.peer_time = (h.time_us, now_us)
        self.peer_site = h.site
        self.last_rx_ms = now_ms
        out.answer = (changed or bool(h.flags & FLAG_ANSWER)) and self.answers.take(now_ms)
        return out
