"""Sessions with the peer (docs/PROTOCOL.md §5, §6): handshakes, key indices and SESSION messages.

When to shake hands, the handshake's payloads and freshness checks, the key index the send side
moves to every `rekey`, and the SESSION messages inside a session (keepalive, round-trip time, the
peer's site name and segments)."""

import logging
import os
import struct
import time
from dataclasses import dataclass, field

from etun import _fast
from etun.config import KEEPALIVE_DEFAULT_S, REKEY_DEFAULT_S
from etun.ratelimit import TokenBucket
from etun.text import printable

log = logging.getLogger("etun")

REKEY_AFTER_MS = 120_000        # the initiator of a session starts the next one after this
REKEY_FALLBACK_MS = 135_000     # ... and the responder, if the initiator has not
REJECT_AFTER_MS = 180_000       # a session's keys are never used after this
RETRY_MS = 1_000                # an unanswered initiation is sent again, anew, after this
RETRY_LIVE_MS = 5_000           # ... while a session still carries traffic
CONFIRM_RETRY_MS = 1_000        # an initiator repeats its confirmation until it is answered
COOKIE_LIFE_MS = 115_000        # a cookie is used this long (the responder's secret lives 120 s)
SILENT_KEEPALIVES = 3           # no authenticated SESSION message for this many keepalives:
                                # the session may be dead at the peer, shake hands again
ANSWERS_PER_SECOND = 10         # SESSION messages answered when asked, at most
TIMESTAMP_GRAIN_NS = 1 << 24    # initiation timestamps are rounded down to ~17 ms (no timing leak)
TIES_WON_MAX = 1                # a tie won this often with no handshake done: yield the next one
ALIVE_WAIT_MS = 2_000           # a stale initiation from another instance: the peer must answer
                                # under the current session within this, or we initiate
HURRY_MS = 10_000               # ... and then retry as if we had no session, this long

# Handshake payloads (inside the Noise messages, PROTOCOL.md §5.2).
INIT_PAYLOAD = struct.Struct("!QI16sB3xI")     # seconds, nanoseconds, instance, rx id, send index
RESP_PAYLOAD = struct.Struct("!16sB3xI")       # instance, rx id, send index
assert INIT_PAYLOAD.size == _fast.INIT_PAYLOAD_LEN and RESP_PAYLOAD.size == _fast.RESP_PAYLOAD_LEN

# SESSION messages (PROTOCOL.md §6): a fixed head, then items of type, length, value.
SESSION_HEAD = struct.Struct("!BBxxIII")        # kind, flags, time_us, echo_us, held_us
KIND_STATUS = 1
FLAG_ANSWER = 0x01              # please answer (round-trip time, or a confirmation)
FLAG_MACS = 0x02                # please send the MACs you know on your side (a new active gateway)
FLAG_MACS_ANSWER = 0x04         # ... this message answers that (its ITEM_MACS, maybe none)
ITEM_SITE = 1                   # the sender's [site] name, UTF-8
ITEM_SEGMENT = 2                # one per segment of the sender, in id order: its name, UTF-8
ITEM_MACS = 3                   # the sender's segment id (1 byte), then MACs local to the sender
MACS_PER_ITEM = 40              # 241-byte items
ITEMS_PER_MESSAGE = 4           # ... about 1 KB per message: two packets at the default max_packet
MACS_ANSWERED_MAX = 4096        # MACs a peer sends for one request (the most recently seen first),
                                # and the most one takeover announces
MACS_ANSWER_WINDOW_MS = 10_000  # answers to our request are taken this long after a takeover
MACS_ANSWERS_PER_SECOND = 0.5   # requests for our MACs answered, at most (a dump is a table scan of
MACS_ANSWERS_BURST = 2          # ~80 ms when full): enough for a pair failing over and back at once


def clock_us() -> int:
    """Microseconds on the monotonic clock, for round-trip times (the pumps' clock is coarse)."""
    return time.monotonic_ns() // 1000


@dataclass
class Outcome:
    """What one control packet asks of the daemon: datagrams to send back where it came from,
    lines to log, a drop to count."""

    replies: list[bytes] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    drop: str | None = None
    macs: list[tuple[int, bytes]] = field(default_factory=list)   # the far side's, to announce


def encode_session(flags: int, time_us: int, echo_us: int, held_us: int, site: str,
                   segments: tuple[str, ...] = (), raw_items: tuple[tuple[int, bytes], ...] = ()) -> bytes:
    items = [(ITEM_SITE, site.encode()[:32])] + [(ITEM_SEGMENT, name.encode()[:32]) for name in segments]
    return (SESSION_HEAD.pack(KIND_STATUS, flags, time_us & 0xFFFFFFFF, echo_us & 0xFFFFFFFF,
                              held_us & 0xFFFFFFFF)
            + b"".join(bytes([kind, len(value)]) + value for kind, value in [*items, *raw_items]))


def mac_items(macs: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """(segment id, MAC) pairs as ITEM_MACS items: one segment each, at most MACS_PER_ITEM MACs."""
    items = []
    by_segment: dict[int, list[bytes]] = {}
    for segment, mac in macs:
        by_segment.setdefault(segment, []).append(mac)
    for segment, group in by_segment.items():
        for k in range(0, len(group), MACS_PER_ITEM):
            items.append((ITEM_MACS, bytes([segment]) + b"".join(group[k:k + MACS_PER_ITEM])))
    return items


def decode_session(payload: bytes) -> tuple[int, int, int, int, dict[int, list[bytes]]]:
    """(flags, time_us, echo_us, held_us, {item type: [values, in order]}); ValueError if malformed."""
    if len(payload) < SESSION_HEAD.size:
        raise ValueError("malformed")
    kind, flags, time_us, echo_us, held_us = SESSION_HEAD.unpack_from(payload)
    if kind != KIND_STATUS:
        raise ValueError("malformed")
    items, off = {}, SESSION_HEAD.size
    while off < len(payload):
        if off + 2 > len(payload) or off + 2 + payload[off + 1] > len(payload):
            raise ValueError("malformed")
        items.setdefault(payload[off], []).append(payload[off + 2: off + 2 + payload[off + 1]])
        off += 2 + payload[off + 1]
    return flags, time_us, echo_us, held_us, items


class Session:
    """One site's sessions with its peer: the control plane above the datapath's keys.

    Either side may initiate. The initiator of a session uses it at once (the answer proved the
    peer holds the keys); the responder only once a packet under it arrives (the datapath
    switches). A replayed initiation fails the timestamp check, or installs a session nobody
    can confirm, which never carries traffic.
    """

    def __init__(self, level: int, datapath, site: str, now_ms: int, keepalive_ms: int = KEEPALIVE_DEFAULT_S * 1000,
                 rekey_ms: int = REKEY_DEFAULT_S * 1000, random=os.urandom, wall_ns=time.time_ns,
                 segments: tuple[str, ...] = ("lan",), local_macs=lambda: []):
        self.level = level
        self.dp = datapath
        self.site = site
        self.segments = tuple(segments)         # our segments' names, in id order
        self.local_macs = local_macs            # () -> [(segment id, MAC)] seen on our LAN, newest first
        self.want_macs = False                  # ask the peer for its MACs (we just became active)
        self.macs_asked_ms: int | None = None   # when: its answers are taken for a while after
        self.macs_taken: set[tuple[int, bytes]] = set()   # ... each MAC once, at most MACS_ANSWERED_MAX
        self.paused = False                     # the standby of a pair: no handshakes, no messages
        self.keepalive_ms = keepalive_ms
        self.rekey_ms = rekey_ms
        self.random = random
        self.wall_ns = wall_ns
        self.instance = random(16)              # this process, to the peer
        self.next_id = random(1)[0]             # the next receive session id we hand out
        self.send_index = 0                     # where the send side is in the 2^32 indices
        self.rotated_ms = now_ms
        self.pending: _fast.Handshake | None = None   # our initiation in flight
        self.pending_id = 0                     # the receive session id it offers
        self.pending_sent_ms = 0
        self.pending_init = b""                 # the INIT itself
        self.ties_won = 0                       # crossing initiations we won since a handshake was done
        self.prompt = False                     # initiate at the next tick
        self.hurry_until_ms = 0                 # until then, retry every RETRY_MS even with a session
        self.alive_check_ms: int | None = None  # since then the peer must show it holds the session
        self.cookie: tuple[bytes, int] | None = None  # (cookie, when it came)
        self.last_stamp_ns = 0                  # our latest initiation's timestamp
        self.greatest_stamp = (0, 0)            # the newest initiation the peer made that we took
        self.greatest_from: bytes | None = None  # ... and the instance that made it
        self.answered: tuple[int, bytes, int] | None = None  # (our id, peer instance, when): unconfirmed
        self.answered_earlier: dict[int, bytes] = {}  # our id -> peer instance of answers before it
        self.role: str | None = None            # "initiator" or "responder" of the current session
        self.current_id: int | None = None      # its receive session id
        self.born_ms = 0
        self.confirming_since: int | None = None     # initiator: waiting for an answer under it
        self.confirm_sent_ms = 0
        self.peer_instance: bytes | None = None
        self.peer_gen = 0                       # numbers the peer instances we made sessions with
        self.gen_instance: bytes | None = None  # ... the latest of them
        self.peer_segments: tuple[str, ...] | None = None   # its segments, once it named them
        self.mapped: tuple = ((), -1)           # the names and instance the datapath maps last
        self.gen_of_id: dict[int, int] = {}     # our receive session id -> the peer instance's gen
        self.peer_site = ""
        self.peer_time: tuple[int, int] | None = None  # (peer's time_us, our clock_us on receipt)
        self.rtt_ms: float | None = None
        self.last_rx_ms: int | None = None      # the latest authenticated SESSION message
        self.next_keepalive_ms = now_ms
        self.handshakes = 0
        self.ask_answer = False                 # the next keepalive asks for an answer
        self.answers = TokenBucket(ANSWERS_PER_SECOND / 1000, ANSWERS_PER_SECOND, now=now_ms)
        self.mac_answers = TokenBucket(MACS_ANSWERS_PER_SECOND / 1000, MACS_ANSWERS_BURST, now=now_ms)

    # -- reload seam (etun/reload.py): what a reload hands the session layer ------------------

    def set_secrets(self, secrets) -> None:
        """A reloaded key file (a keys.Secrets). Handshakes from now on use it; the sessions
        running keep their keys (and their copy of the index root), so traffic goes on. An
        initiation in flight under the old file is answered by a peer that still has it, or
        replaced by the next retry."""
        secrets.install(self.dp)

    def set_timers(self, keepalive_ms: int, rekey_ms: int) -> None:
        """Reloaded [tunnel] keepalive and [security] rekey: the next keepalive and rotation
        follow them."""
        self.keepalive_ms = keepalive_ms
        self.rekey_ms = rekey_ms
        self.next_keepalive_ms = min(self.next_keepalive_ms, _fast.now_ms() + keepalive_ms)

    # -- state --------------------------------------------------------------------------------

    @property
    def established(self) -> bool:
        """A confirmed session carries traffic both ways."""
        return self.current_id is not None and self.confirming_since is None

    def _new_id(self) -> int:
        """A receive session id none of our live sessions has."""
        live = {s[0] for s in self._held().values() if s}
        while self.next_id in live:
            self.next_id = (self.next_id + 1) % _fast.SESSION_IDS
        chosen = self.next_id
        self.next_id = (self.next_id + 1) % _fast.SESSION_IDS
        return chosen

    def _gen_of(self, instance: bytes) -> int:
        """The generation number of a peer instance we install a session with: a new instance
        (a restart) starts a new one, and its sessions start without a segment map."""
        if instance != self.gen_instance:
            self.gen_instance = instance
            self.peer_gen += 1
        return self.peer_gen

    def _held(self) -> dict:
        held = self.dp.sessions()
        return {role: held[role] for role in ("current", "previous", "next")}

    # -- initiating -----------------------------------------------------------------------------

    def _stamp(self) -> tuple[int, int]:
        """Now as (seconds, nanoseconds), rounded down, and later than our previous initiation's
        even if the wall clock stepped back while we run."""
        ns = max(self.wall_ns() & ~(TIMESTAMP_GRAIN_NS - 1), self.last_stamp_ns + TIMESTAMP_GRAIN_NS)
        self.last_stamp_ns = ns
        return divmod(ns, 1_000_000_000)

    def initiate(self, now_ms: int) -> bytes:
        """A new INIT (a new ephemeral key, a new timestamp); with a fresh cookie if we have one."""
        cookie = self.cookie[0] if self.cookie and now_ms - self.cookie[1] < COOKIE_LIFE_MS else None
        self.pending = _fast.Handshake(self.dp)
        self.pending_id = self._new_id()
        seconds, nanos = self._stamp()
        payload = INIT_PAYLOAD.pack(seconds, nanos, self.instance, self.pending_id, self.send_index)
        self.pending_sent_ms = now_ms
        self.prompt = False
        self.pending_init = self.pending.initiate(payload, cookie=cookie)
        return self.pending_init

    def _initiation_due(self, now_ms: int) -> bool:
        if self.prompt and (self.pending is None or now_ms - self.pending_sent_ms >= RETRY_MS):
            return True
        have = self.current_id is not None          # established, or being confirmed by us
        retry = RETRY_LIVE_MS if have and now_ms >= self.hurry_until_ms else RETRY_MS
        if self.pending is not None and now_ms - self.pending_sent_ms < retry:
            return False
        if not have:
            return self.answered is None or now_ms - self.answered[2] >= RETRY_MS
        if now_ms < self.hurry_until_ms:
            return True
        age = now_ms - self.born_ms
        if age >= (REKEY_AFTER_MS if self.role == "initiator" else REKEY_FALLBACK_MS):
            return True
        # The peer may have lost the session (a restart it did not announce): talk again.
        silent_for = now_ms - (self.last_rx_ms or self.born_ms)
        return silent_for >= max(SILENT_KEEPALIVES * self.keepalive_ms, RETRY_LIVE_MS)

    # -- the tick -----------------------------------------------------------------------------

    def takeover(self, now_ms: int) -> None:
        """This gateway just became the active one of its pair: shake hands at once (retrying
        every second for a while), and ask the peer for the MACs on its side, to announce them."""
        self.paused = False
        self.want_macs = True
        self.macs_asked_ms = now_ms
        self.macs_taken = set()
        self._hurry(now_ms)

    def stand_down(self) -> None:
        """This gateway just became the standby: forget the session (the datapath dropped its
        keys), send and answer nothing until takeover()."""
        self.paused = True
        self.want_macs = False
        self.macs_asked_ms = None
        self.pending = None
        self.answered = None
        self.answered_earlier = {}
        self._forget_session()

    def tick(self, now_ms: int) -> list[bytes]:
        """Everything time asks for, as datagrams for the peer."""
        out = []
        if self.paused:
            return out
        self._follow_datapath(now_ms)
        if self.current_id is not None and now_ms - self.born_ms >= REJECT_AFTER_MS:
            self.dp.drop_sessions(keep_next=True)
            self._forget_session()
            log.info("session expired (%d s without a new handshake)", REJECT_AFTER_MS // 1000)
        self._rotate_if_due(now_ms)
        self._check_alive(now_ms)
        if self._initiation_due(now_ms):
            out.append(self.initiate(now_ms))
        if self.confirming_since is not None and now_ms - self.confirm_sent_ms >= CONFIRM_RETRY_MS:
            out += self.status_message(now_ms, answer=True)
            self.confirm_sent_ms = now_ms
        elif self.current_id is not None and now_ms >= self.next_keepalive_ms:
            out += self.status_message(now_ms, answer=self.ask_answer)
            self.ask_answer = False
        return out

    def next_due_ms(self) -> int:
        """When tick() next has something to do, at the latest."""
        due = self.next_keepalive_ms
        if self.level != _fast.LEVEL_NONE:
            due = min(due, self.rotated_ms + self.rekey_ms)
        if self.pending is not None or not self.established:
            due = min(due, self.pending_sent_ms + RETRY_MS)
        if self.confirming_since is not None:
            due = min(due, self.confirm_sent_ms + CONFIRM_RETRY_MS)
        if self.alive_check_ms is not None:
            due = min(due, self.alive_check_ms + ALIVE_WAIT_MS)
        if self.prompt or self.hurry_until_ms:
            due = min(due, self.pending_sent_ms + RETRY_MS)
        return due

    def _forget_session(self) -> None:
        self.current_id = None
        self.role = None
        self.confirming_since = None

    def _follow_datapath(self, now_ms: int) -> None:
        """A session we answered becomes ours once the datapath saw the peer confirm it: the
        latest we answered, or an earlier one the peer confirmed before a newer initiation was
        answered (the rx pump switches on its own, between two ticks)."""
        held = self.dp.sessions()
        current = held["current"]
        instance = None
        if self.answered and current and current[0] == self.answered[0]:
            instance = self.answered[1]
            self.answered = None
        elif current and current[0] != self.current_id and current[0] in self.answered_earlier:
            instance = self.answered_earlier[current[0]]
        # Only answers the datapath still holds can be confirmed; their ids may be handed out again.
        live = {held[role][0] for role in ("previous", "next") if held[role]}
        self.answered_earlier = {k: v for k, v in self.answered_earlier.items() if k in live}
        if instance is not None:
            restarted = self.peer_instance is not None and self.peer_instance != instance
            self.current_id, self.peer_instance = current[0], instance
            self.ties_won = self.hurry_until_ms = 0
            self.role = "responder"
            self.born_ms = now_ms
            self.confirming_since = None
            self.handshakes += 1
            self.next_keepalive_ms = now_ms       # tell the peer our name and time at once,
            self.ask_answer = True                # and have it answer: our round-trip time
            log.info("%ssession established (the peer initiated): receive id %d",
                     "peer restarted; " if restarted else "", self.current_id)
        elif self.current_id is not None and current is None:
            self._forget_session()

    def _rotate_if_due(self, now_ms: int) -> None:
        """Every `rekey` the send side moves to the next of the key file's 2^32 key indices;
        sessions that begin later start there."""
        if self.level == _fast.LEVEL_NONE or now_ms - self.rotated_ms < self.rekey_ms:
            return
        self.rotated_ms = now_ms
        if self.send_index == 0xFFFFFFFF:
            self.send_index = 0            # 16,000 years at the default rekey: wrap the count
        else:
            self.send_index += 1
        if self.dp.send_index is not None and self.dp.send_index < 0xFFFFFFFF:
            self.dp.rotate_send()
            log.debug("send keys rotated to index %d", self.dp.send_index)

    # -- SESSION messages ---------------------------------------------------------------------

    def status_message(self, now_ms: int, answer: bool, flags: int = 0,
                       items: tuple[tuple[int, bytes], ...] = ()) -> list[bytes]:
        """A SESSION message: our clock for the round-trip time, our name and segments (and, when
        we want them, a request for the peer's MACs); sealed datagrams."""
        now_us = clock_us()
        echo, held = (0, 0) if self.peer_time is None else (self.peer_time[0], now_us - self.peer_time[1])
        self.next_keepalive_ms = now_ms + self.keepalive_ms
        flags |= (FLAG_ANSWER if answer else 0) | (FLAG_MACS if self.want_macs else 0)
        payload = encode_session(flags, now_us, echo, held, self.site, self.segments, items)
        return self.dp.seal(payload, _fast.TYPE_SESSION)

    def mac_messages(self, now_ms: int) -> list[bytes]:
        """The answer to FLAG_MACS: the MACs seen on our LAN, newest first, in SESSION messages of
        ITEMS_PER_MESSAGE items; at least one message, so the asker knows it has them all."""
        items = mac_items(list(self.local_macs())[:MACS_ANSWERED_MAX])
        out = []
        for k in range(0, max(len(items), 1), ITEMS_PER_MESSAGE):
            out += self.status_message(now_ms, answer=False, flags=FLAG_MACS_ANSWER,
                                       items=tuple(items[k:k + ITEMS_PER_MESSAGE]))
        return out

    def _far_macs(self, values: list[bytes], theirs: tuple[str, ...], now_ms: int) -> list[tuple[int, bytes]]:
        """ITEM_MACS values from the peer as (our segment id, MAC), new ones only: its segment ids
        are its own (named in the same message, `theirs`), mapped by name; MACs of a segment we
        lack, group and zero MACs, answers nobody asked for (or late ones) and anything beyond
        MACS_ANSWERED_MAX are left out."""
        if self.macs_asked_ms is None or now_ms - self.macs_asked_ms > MACS_ANSWER_WINDOW_MS:
            return []
        ours = {name: k for k, name in enumerate(self.segments)}
        out = []
        for value in values:
            if not value or (len(value) - 1) % 6 or value[0] >= len(theirs):
                continue
            k = ours.get(theirs[value[0]])
            if k is None:
                continue
            for i in range(1, len(value), 6):
                mac = value[i:i + 6]
                if mac[0] & 1 or mac == bytes(6) or (k, mac) in self.macs_taken:
                    continue
                if len(self.macs_taken) >= MACS_ANSWERED_MAX:
                    return out
                self.macs_taken.add((k, mac))
                out.append((k, mac))
        return out

    def receive_session(self, payload: bytes, session_id: int, now_ms: int) -> Outcome:
        """A SESSION message the datapath opened (authenticated, fresh) under `session_id`."""
        out = Outcome()
        try:
            flags, time_us, echo_us, held_us, items = decode_session(payload)
        except ValueError:
            out.drop = "malformed"
            return out
        self.last_rx_ms = now_ms
        if self.confirming_since is not None and session_id == self.current_id:
            self.confirming_since = None
            out.events.append(f"session established (we initiated): receive id {session_id}")
        now_us = clock_us()
        if echo_us:
            rtt_us = (now_us - echo_us - held_us) & 0xFFFFFFFF
            if rtt_us < 60_000_000:
                self.rtt_ms = rtt_us / 1000
        self.peer_time = (time_us, now_us)
        if ITEM_SITE in items:
            self.peer_site = printable(items[ITEM_SITE][0].decode("utf-8", "replace"))
        theirs = tuple(printable(v.decode("utf-8", "replace")) for v in items.get(ITEM_SEGMENT, ()))
        gen = self.gen_of_id.get(session_id)
        if gen is not None:
            # The segments a message names are its sender instance's: they map our send sessions
            # with that instance only (a late message of a restarted peer's old session names its
            # old layout), and they are the peer's for status unless the current session is with
            # a newer instance.
            current = self.gen_of_id.get(self.current_id)
            self._map_segments(theirs, gen, current is None or gen >= current, out)
        if flags & FLAG_MACS_ANSWER:
            out.macs += self._far_macs(items.get(ITEM_MACS, []), theirs, now_ms)
            self.want_macs = False
        if flags & FLAG_MACS and self.mac_answers.take(now_ms):
            out.replies += self.mac_messages(now_ms)
        elif flags & FLAG_ANSWER and self.answers.take(now_ms):
            out.replies += self.status_message(now_ms, answer=False)
        return out

    def _map_segments(self, theirs: tuple[str, ...], gen: int, shown: bool, out: Outcome) -> None:
        """Peer instance `gen` named its segments: our send sessions with it send each of ours to
        its segment of the same name; if `shown`, they are the peer's segments for status, and
        we say once which exist on one side only (their frames are dropped, unknown_segment)."""
        if (theirs, gen) != self.mapped:
            ids = {name: k for k, name in enumerate(theirs) if k < _fast.SEGMENTS_MAX}
            self.dp.set_segment_map(bytes(ids.get(name, _fast.SEGMENT_NONE) for name in self.segments), gen)
            self.mapped = (theirs, gen)
        if shown and theirs != self.peer_segments:
            self.peer_segments = theirs
            here, there = self.segments_only_here(), self.segments_only_there()
            if here or there:
                out.events.append("segments differ from the peer's: " + "; ".join(
                    f"{', '.join(names)} only {where}" for names, where in ((here, "here"), (there, "at the peer"))
                    if names) + " (their frames are dropped and counted as unknown_segment)")

    def segments_only_here(self) -> list[str]:
        if self.peer_segments is None:
            return []
        return [name for name in self.segments if name not in self.peer_segments]

    def segments_only_there(self) -> list[str]:
        if self.peer_segments is None:
            return []
        return [name for name in self.peer_segments if name not in self.segments]

    # -- handshake messages -------------------------------------------------------------------

    def receive_init(self, datagram: bytes, now_ms: int) -> Outcome:
        """An admitted INIT: answer it, unless it is stale, reflected, or loses a tie to ours."""
        out = Outcome()
        hs = _fast.Handshake(self.dp)
        try:
            seconds, nanos, instance, peer_id, peer_index = INIT_PAYLOAD.unpack(hs.respond(datagram))
        except _fast.Dropped as e:
            out.drop = e.reason
            return out
        if instance == self.instance:
            out.drop = "replay"                  # our own initiation, reflected back to us
            return out
        if (seconds, nanos) <= self.greatest_stamp:
            out.drop = "replay"                  # recorded, or overtaken by a newer one
            if instance != self.greatest_from:
                self._stale_from_new_instance(now_ms)
            return out
        self.greatest_stamp, self.greatest_from = (seconds, nanos), instance
        if self.pending is not None and self.instance < instance and self.ties_won < TIES_WON_MAX:
            # Both sides initiated at once: the smaller instance's initiation wins, so exactly
            # one handshake completes. Ours may have been lost (the peer was not running yet):
            # send the same one again. A peer that took it drops the
            # copy as a replay, and its answer to the first is on the way. A win that leads
            # nowhere (our initiations are refused, say as stale) is not repeated forever: after
            # TIES_WON_MAX we answer the peer's instead.
            self.ties_won += 1
            out.replies.append(self.pending_init)
            return out
        local_id = self._new_id()
        reply = hs.reply(RESP_PAYLOAD.pack(self.instance, local_id, self.send_index))
        self.gen_of_id[local_id] = self._gen_of(instance)
        self.dp.install_session(hs, local_id, peer_id, self.send_index, peer_index, self.gen_of_id[local_id])
        if self.answered is not None:
            # The peer may have confirmed that one already: the next tick finds it current.
            self.answered_earlier[self.answered[0]] = self.answered[1]
        self.answered_earlier.pop(local_id, None)
        self.answered = (local_id, instance, now_ms)
        if self.pending is not None:
            self.pending = None                  # the peer's initiation won the tie
        out.replies.append(reply)
        return out

    def _stale_from_new_instance(self, now_ms: int) -> None:
        """An authentic initiation older than the newest we took, from another instance: a
        recording of a past run replayed, or a peer that restarted with its clock behind its
        previous run's (no real-time clock, or NTP stepped it back), whose initiations look
        recorded until its clock passes that one. Ours are new to it. Without a session, initiate
        now; with one, ask the peer to answer under it: a live peer does (replays change
        nothing), a restarted one cannot, and we initiate ALIVE_WAIT_MS later."""
        if self.current_id is None:
            self._hurry(now_ms)
        elif self.alive_check_ms is None:
            self.alive_check_ms = now_ms
            self.next_keepalive_ms = now_ms
            self.ask_answer = True

    def _check_alive(self, now_ms: int) -> None:
        if self.alive_check_ms is None:
            return
        if self.last_rx_ms is not None and self.last_rx_ms >= self.alive_check_ms:
            self.alive_check_ms = None                 # the peer holds the session: replays
        elif now_ms - self.alive_check_ms >= ALIVE_WAIT_MS:
            self.alive_check_ms = None
            log.info("the peer sends initiations older than its earlier ones and no longer answers under "
                     "our session: it restarted with its clock behind (no real-time clock, or NTP stepped "
                     "it back); initiating ourselves")
            self._hurry(now_ms)

    def _hurry(self, now_ms: int) -> None:
        """Initiate at the next tick, and retry every RETRY_MS for HURRY_MS."""
        self.prompt = True
        self.hurry_until_ms = now_ms + HURRY_MS

    def _answer_to_pending(self, opener) -> tuple[Outcome, bytes | None]:
        """An answer to our pending initiation, opened by opener(pending): its bytes, or None and
        the reason it was dropped ("replay" when no initiation of ours is pending)."""
        out = Outcome()
        if self.pending is None:
            out.drop = "replay"
            return out, None
        try:
            return out, opener(self.pending)
        except _fast.Dropped as e:
            out.drop = e.reason
            return out, None

    def receive_resp(self, datagram: bytes, now_ms: int) -> Outcome:
        """The RESP to our initiation: the session is ours at once; confirm it to the peer."""
        out, payload = self._answer_to_pending(lambda pending: pending.finish(datagram))
        if payload is None:
            return out                           # not the answer: ours still waits for it
        instance, peer_id, peer_index = RESP_PAYLOAD.unpack(payload)
        if instance == self.instance:
            out.drop = "replay"                  # our own answer, reflected back to us
            self.pending = None
            return out
        self.gen_of_id[self.pending_id] = self._gen_of(instance)
        self.dp.install_session(self.pending, self.pending_id, peer_id, self.send_index, peer_index,
                                self.gen_of_id[self.pending_id])
        restarted = self.peer_instance is not None and self.peer_instance != instance
        self.pending = None
        self.answered = None
        self.ties_won = self.hurry_until_ms = 0
        self.current_id, self.peer_instance, self.role = self.pending_id, instance, "initiator"
        self.born_ms = now_ms
        self.handshakes += 1
        self.cookie = None
        self.confirming_since = self.confirm_sent_ms = now_ms
        if restarted:
            out.events.append("peer restarted; new session")
        out.replies += self.status_message(now_ms, answer=True)
        return out

    def receive_cookie(self, datagram: bytes, now_ms: int) -> Outcome:
        """The peer is under load and wants a cookie in our initiation: initiate again with it."""
        out, cookie = self._answer_to_pending(lambda pending: pending.open_cookie(datagram))
        if cookie is None:
            return out
        self.cookie = (cookie, now_ms)
        out.replies.append(self.initiate(now_ms))
        return out
