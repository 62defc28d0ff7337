"""Fuzz target: the handshake and SESSION messages: admission, Handshake, Session.receive_init/resp/cookie/session."""

# Two sites share a key file: "a", the one under test, and its peer "b"; a third party holding
# the key file may impersonate b. Input: byte 0 picks the level and which instance is smaller
# (who wins crossing initiations); then up to 24 steps, each one of:
#   - a stranger's raw bytes, or a copy of any datagram seen so far (a recording replayed);
#   - the network between a and b: the next datagram in flight delivered, lost, delivered
#     twice, with one bit flipped, or reflected back to its sender; either site's tick;
#   - a key holder's INIT, RESP (to a's initiation in flight) or COOKIE (for it) whose every
#     payload field is picked from what a could meet (its own instance, b's, any bytes; any
#     receive id, send index and timestamp);
#   - a SESSION message with fuzzer-chosen fields and items, sealed under b's session;
#   - SESSION message bytes decoded on their own; the clocks moving (the wall clock also back).
# Every datagram for a site goes the daemon's way: the rx pump's open and admission gate
# (open_exact with a source), then Session.receive_*. Oracles: nothing raises; a refused
# message names a drop reason the daemon counts; a site sends only whole v2 messages of its
# level; a stranger's bytes (at auth and encrypt) and any INIT leave a's current session as it
# was; after a tick, a's idea of its session is the datapath's, and an established site has
# send keys.

import socket
import struct

import harness
from harness import Reader

harness.instrumented("etun.session")

from etun import _fast, session  # noqa: E402  (after the instrumented import)

LEVELS = (_fast.LEVEL_AUTH, _fast.LEVEL_ENCRYPT, _fast.LEVEL_NONE)
REASONS = set(_fast.DROP_REASONS)
SENT_LEN = {_fast.TYPE_INIT: _fast.INIT_LEN, _fast.TYPE_RESP: _fast.RESP_LEN}
FROM_B = struct.pack("=H", socket.AF_INET) + (5555).to_bytes(2, "big") + bytes([198, 19, 2, 1]) + bytes(8)
FROM_A = struct.pack("=H", socket.AF_INET) + (5555).to_bytes(2, "big") + bytes([198, 19, 1, 1]) + bytes(8)
START_NS = 1_800_000_000 * 10**9


class Draws:
    """Deterministic 'random' bytes for a Session (its instance, its first receive id)."""

    def __init__(self, first: int):
        self.n = first

    def __call__(self, size: int) -> bytes:
        self.n += 1
        return (self.n % (1 << 8 * size)).to_bytes(size, "big")


class Wall:
    """The sites' wall clock (initiation timestamps), moved by the input."""

    def __init__(self):
        self.ns = START_NS

    def __call__(self) -> int:
        return self.ns


class Site:
    def __init__(self, name: str, level: int, wall: Wall, first: int, now: int):
        self.dp = harness.datapath(level, role=f"site-{name}")
        self.s = session.Session(level, self.dp, f"site-{name}", now, keepalive_ms=2000, rekey_ms=1000,
                                 random=Draws(first), wall_ns=wall)
        self.source = FROM_B if name == "a" else FROM_A     # where its peer's packets come from

    def receive(self, datagram: bytes, now: int, source: bytes | None = None) -> list[bytes]:
        """One datagram as the daemon takes it; the datagrams it answers with."""
        replies = []
        for ptype, item in _fast.open_exact(self.dp, datagram, now, source or self.source):
            if ptype == _fast.TYPE_SESSION:
                out = self.s.receive_session(item, self.dp.last_session, now)
            elif ptype == _fast.TYPE_INIT:
                out = self.s.receive_init(item, now)
            elif ptype == _fast.TYPE_RESP:
                out = self.s.receive_resp(item, now)
            elif ptype == _fast.TYPE_COOKIE:
                out = self.s.receive_cookie(item, now)
            else:
                continue                           # frames, probes: other targets'
            assert out.drop is None or out.drop in REASONS, out.drop
            replies += out.replies
        return replies

    def check_sent(self, datagrams: list[bytes]) -> None:
        for d in datagrams:
            version, level, ptype = _fast.packet_type(d)
            assert (version, level) == (_fast.WIRE_VERSION, self.dp.level), (version, level)
            assert ptype in (_fast.TYPE_INIT, _fast.TYPE_RESP, _fast.TYPE_SESSION), ptype
            assert len(d) == SENT_LEN.get(ptype, len(d)), (ptype, len(d))

    def check_state(self) -> None:
        current = self.dp.sessions()["current"]
        if self.s.current_id is not None:
            assert current is not None and current[0] == self.s.current_id, (current, self.s.current_id)
        if self.s.established:
            assert self.dp.send_index is not None, "an established session without send keys"


def payload_fields(r: Reader, a: Site, b: Site, wall: Wall) -> tuple[bytes, int, int]:
    """(instance, receive id, send index) as a key holder might write them."""
    instance = (b.s.instance, a.s.instance, r.bytes(16).ljust(16, b"\0"))[r.byte() % 3]
    return instance, r.byte(), r.byte() % 4 if r.byte() < 200 else r.int(4)


def test_one_input(data: bytes) -> None:
    r = Reader(data)
    mode = r.byte()
    level = LEVELS[mode % 3]
    wall, now = Wall(), 10_000
    a = Site("a", level, wall, 0x100 if mode & 4 else 0x200, now)
    b = Site("b", level, wall, 0x200 if mode & 4 else 0x100, now)
    holder = harness.datapath(level, role="holder")          # the key file, in a third hand
    flight: list[tuple[Site, bytes]] = []                     # datagrams on the wire, in order
    seen: list[bytes] = []                                    # ... and every one that was
    keyed = level != _fast.LEVEL_NONE
    for _ in range(24):
        if r.left() < 2:
            break
        op = r.byte()
        now += r.byte() * 16
        to_a: bytes | None = None
        stranger = False
        if op < 24:
            to_a, stranger = r.chunk(1500), True
        elif op < 40:
            if seen:
                to_a = seen[r.byte() % len(seen)]
        elif op < 120:
            if flight:
                to, datagram = flight.pop(0)
                fate = r.byte()
                other = b if to is a else a
                if fate >= 240:
                    bit = r.int(2) % (len(datagram) * 8)
                    datagram = bytes(datagram[:bit // 8]) + bytes([datagram[bit // 8] ^ (1 << bit % 8)]) \
                        + datagram[bit // 8 + 1:]
                elif fate >= 224:
                    to, other = other, to               # reflected back to its sender
                if fate < 200 or fate >= 224:
                    for site in (to, *((to,) if 200 <= fate < 212 else ())):
                        before = a.dp.sessions()["current"]
                        answers = site.receive(datagram, now)
                        if site is a and _fast.packet_type(datagram)[2] == _fast.TYPE_INIT:
                            assert a.dp.sessions()["current"] == before, "an INIT moved the current session"
                        site.check_sent(answers)
                        flight += [(other, d) for d in answers]
                        seen += answers
                elif fate < 212:
                    pass                                # lost
        elif op < 150:
            site = (a, b)[op & 1]
            out = site.s.tick(now)
            site.check_sent(out)
            site.check_state()
            flight += [(b if site is a else a, d) for d in out]
            seen += out
        elif op < 175:
            # A key holder's INIT with fields of its choosing.
            instance, rx_id, send_index = payload_fields(r, a, b, wall)
            stamp = divmod(wall.ns + (r.byte() - 128) * 10**9 if r.byte() < 230 else r.int(8), 10**9)
            payload = session.INIT_PAYLOAD.pack(stamp[0] % (1 << 64), stamp[1], instance, rx_id, send_index)
            to_a = _fast.Handshake(holder).initiate(payload)
        elif op < 200:
            # A key holder's RESP to a's initiation in flight, or a COOKIE for it.
            if a.s.pending is not None:
                if op & 1:
                    to_a = _fast.cookie_reply_for(holder, a.s.pending_init, FROM_A)
                else:
                    hs = _fast.Handshake(holder)
                    hs.respond(a.s.pending_init)
                    instance, rx_id, send_index = payload_fields(r, a, b, wall)
                    to_a = hs.reply(session.RESP_PAYLOAD.pack(instance, rx_id, send_index))
        elif op < 230:
            # A SESSION message from b with fields and items of the fuzzer's choosing.
            if b.dp.send_index is not None:
                if op & 1:
                    payload = r.chunk(600).ljust(4, b"\0")
                else:
                    payload = session.encode_session(r.byte(), r.int(4), r.int(4), r.int(4),
                                                     r.bytes(r.byte() % 40).decode("utf-8", "replace"))
                    payload += r.chunk(200)
                datagrams = b.dp.seal(payload, _fast.TYPE_SESSION)
                seen += datagrams
                for d in datagrams:
                    a.check_sent(a.receive(d, now))
        elif op < 240:
            try:
                flags, *_, items = session.decode_session(r.chunk(300))
                assert 0 <= flags <= 255 and isinstance(items, dict)
            except ValueError:
                pass
        elif op < 250:
            wall.ns += (r.byte() - 100) * 10**8            # the wall clock steps, also back
        else:
            now += session.REKEY_AFTER_MS if op & 1 else session.REJECT_AFTER_MS
        if to_a is not None:
            before = a.dp.sessions()["current"]
            answers = a.receive(to_a, now)
            a.check_sent(answers)
            if (stranger and keyed) or _fast.packet_type(to_a)[2] == _fast.TYPE_INIT:
                assert a.dp.sessions()["current"] == before, "a stranger's datagram or an INIT moved the session"
            flight += [(b, d) for d in answers]
            seen += answers


if __name__ == "__main__":
    harness.main(test_one_input)
