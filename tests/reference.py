"""Independent pure-Python reference of etun's data packets (docs/PROTOCOL.md §1-§4, version 2)."""

# This module must never import `etun`: it is the second, independent reading of
# docs/PROTOCOL.md that the Cython datapath is held to. It favours being obviously
# correct over being fast; section numbers (§) refer to PROTOCOL.md. It covers the
# packets sealed under session keys (FRAME, FRAME_VNET, SESSION); handshake and
# verify-peer packets (§5, §7) belong to other code and are handed up whole.
#
# Outbound flow (Sender.seal):
#   1. plan the balanced fragments of the frame (§2.1),
#   2. take counters base .. base+n-1 from the session's 48-bit counter,
#   3. at encrypt, ChaCha20 the whole frame once under
#      nonce = key_index || session || segment || base (§3.1),
#   4. cut the (cipher)text exactly as planned,
#   5. prepend each fragment's header and append HMAC-SHA-256-128 over header || payload.
#
# Inbound flow (Receiver.open), checks in the order of §3.2:
#   1. version -> version; structure (level 3, type, length, fragment fields) -> malformed
#   2. level -> level_mismatch;  3. a session with the header's id -> no_session
#   4. FRAME/FRAME_VNET: key index among c - 1, c, c + 1 of that session -> key_index
#   5. tag under the data keys of that index, or the control keys (SESSION) -> auth
#      (steps 4 and 5 are skipped at level none, which has no keys)
#   6. replay window of (session, key index), or of the session (SESSION; all at none) -> replay;
#      the window moves here, for every authenticated packet
#   7. agreement with the fragments held for the same (session, base) -> frag_inconsistent
#   Only then does the packet change anything else: its fragment enters reassembly (at
#   encrypt, the complete frame is decrypted in one pass), it confirms a session waiting in
#   `next`, and it moves c: a data packet at c + 1, or a SESSION message naming an index above
#   c, makes that index current.

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import lru_cache
from hmac import compare_digest

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

# --- constants (§1, §2, §4, §5.4) -------------------------------------------

VERSION = 2

LEVEL_NONE = 0
LEVEL_AUTH = 1
LEVEL_ENCRYPT = 2
LEVEL_INVALID = 3  # the one value the 2-bit field can hold that is no level
LEVELS = (LEVEL_NONE, LEVEL_AUTH, LEVEL_ENCRYPT)

TYPE_FRAME = 1
TYPE_FRAME_VNET = 2
TYPE_SESSION = 3
TYPE_INIT = 4
TYPE_RESP = 5
TYPE_COOKIE = 6
TYPE_PROBE = 7
TYPE_PROBE_REPLY = 8
DATA_TYPES = (TYPE_FRAME, TYPE_FRAME_VNET)  # sealed under the data keys of a key index
SEALED_TYPES = (TYPE_FRAME, TYPE_FRAME_VNET, TYPE_SESSION)  # the §2 header, sealed per §3
HANDED_UP_TYPES = (TYPE_INIT, TYPE_RESP, TYPE_COOKIE, TYPE_PROBE, TYPE_PROBE_REPLY)  # §5, §7: not ours

HEADER_LEN = 16  # bytes before the payload
TAG_LEN = 16  # HMAC-SHA-256 truncated to 128 bits (RFC 4868); absent at level none
UDP_HEADER_LEN = 8  # counted against max_packet
KEY_LEN = 32  # every secret and key of §4

VNET_HDR_LEN = 10  # struct virtio_net_hdr in front of a FRAME_VNET frame (§3.3)
FRAME_MIN_LEN = 14  # an Ethernet header alone
FRAME_MAX_LEN = 65557  # largest IP packet (65535) + Ethernet header (14) + two VLAN tags (8)
FRAME_VNET_MIN_LEN = VNET_HDR_LEN + FRAME_MIN_LEN
FRAME_VNET_MAX_LEN = VNET_HDR_LEN + FRAME_MAX_LEN
SESSION_MIN_LEN = 4  # bytes of a SESSION message (§2.1)
SESSION_MAX_LEN = 8192
FRAME_LIMITS = {  # type -> (shortest, longest) frame or message in bytes
    TYPE_FRAME: (FRAME_MIN_LEN, FRAME_MAX_LEN),
    TYPE_FRAME_VNET: (FRAME_VNET_MIN_LEN, FRAME_VNET_MAX_LEN),
    TYPE_SESSION: (SESSION_MIN_LEN, SESSION_MAX_LEN),
}

MAX_PACKET_MIN = 320  # bytes of UDP datagram, header included
MAX_PACKET_MAX = 9000
MAX_PACKET_DEFAULT = 800
MAX_FRAGMENTS = 255  # frag_count is one byte

SESSION_IDS = 256  # a receive session id is one header byte
SEGMENT_IDS = 256  # ... and so is a segment
KEY_INDEX_LIMIT = 1 << 32  # key_index is 32 bits; indices never wrap (§4.2)
COUNTER_LIMIT = 1 << 48  # the counter is 48 bits, per session and sender
REPLAY_WINDOW = 4032  # a counter is accepted at most this far below the highest seen (RFC 6479: 4096 - 64)

REASSEMBLY_TIMEOUT_MS = 1000
MAX_FRAMES_IN_REASSEMBLY = 128  # incomplete frames held at once
PREVIOUS_SESSION_MS = 10_000  # a replaced session still opens packets in flight this long (§5.4)

# Drop reasons of arriving packets, in the order §3.2 checks them.
DROP_REASONS = (
    "version",
    "malformed",
    "level_mismatch",
    "no_session",
    "key_index",
    "auth",
    "replay",
    "frag_inconsistent",
)
# Frames lost from reassembly rather than packets dropped on arrival (§3.4).
REASSEMBLY_LOSSES = ("frag_timeout", "frag_evicted")

ZERO_KEY = bytes(KEY_LEN)  # every static secret at level none (§4.1)


# --- primitives -------------------------------------------------------------


def tag_len(level: int) -> int:
    """Bytes of tag a packet of this level carries."""
    return 0 if level == LEVEL_NONE else TAG_LEN


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """Full 32-byte HMAC-SHA-256 (RFC 2104, RFC 4231)."""
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    return mac.finalize()


def compute_tag(mac_key: bytes, data: bytes) -> bytes:
    """HMAC-SHA-256-128: the first 16 bytes of HMAC-SHA-256 (RFC 4868)."""
    return hmac_sha256(mac_key, data)[:TAG_LEN]


def chacha20(key: bytes, nonce: bytes, data: bytes, block_counter: int = 0) -> bytes:
    """ChaCha20 (RFC 8439) of data with a 96-bit nonce and a 32-bit initial block counter."""
    if len(key) != 32 or len(nonce) != 12:
        raise ValueError("chacha20 needs a 32-byte key and a 12-byte nonce")
    # cryptography takes RFC 7539's 128-bit input: block counter (little-endian) || nonce.
    full_nonce = struct.pack("<I", block_counter) + nonce
    return Cipher(algorithms.ChaCha20(key, full_nonce), mode=None).encryptor().update(data)


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract with SHA-256 (RFC 5869 §2.2): PRK = HMAC(salt, IKM)."""
    return hmac_sha256(salt, ikm)


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand with SHA-256 (RFC 5869 §2.3)."""
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=info).derive(prk)


# --- key schedule (§4) ------------------------------------------------------


def derive_prk(material: bytes) -> bytes:
    """PRK = HKDF-Extract(salt = "etun/v1", IKM = key material): unchanged since version 1."""
    return hkdf_extract(b"etun/v1", material)


def fingerprint(material: bytes) -> str:
    """The material's short hash both sites compare by phone: 'xxxx-xxxx-xxxx-xxxx' (lowercase hex)."""
    digest = hkdf_expand(derive_prk(material), b"etun/v1 fingerprint", 8).hex()
    return "-".join(digest[i : i + 4] for i in range(0, 16, 4))


@dataclass(frozen=True)
class StaticKeys:
    """The secrets §4.1 expands from the key file's PRK."""

    psk: bytes
    mac1_key: bytes
    cookie_key: bytes
    probe_key: bytes
    index_root: bytes


def static_keys(prk: bytes) -> StaticKeys:
    """psk, mac1_key, cookie_key, probe_key and index_root: HKDF-Expand(PRK, "etun/v2 <name>", 32)."""
    labels = (b"psk", b"mac1", b"cookie", b"probe", b"index root")
    return StaticKeys(*(hkdf_expand(prk, b"etun/v2 " + label, KEY_LEN) for label in labels))


def _check_index(index: int) -> None:
    if not 0 <= index < KEY_INDEX_LIMIT:
        raise ValueError(f"key index {index} is not a 32-bit unsigned integer")


@lru_cache(maxsize=4096)
def index_secret(index_root: bytes, index: int) -> bytes:
    """index_secret(i) = HKDF-Expand(index_root, "etun/v2 index" || be32(i), 32)."""
    _check_index(index)
    return hkdf_expand(index_root, b"etun/v2 index" + struct.pack(">I", index), KEY_LEN)


@lru_cache(maxsize=4096)
def data_keys(secret: bytes, index_root: bytes, index: int) -> tuple[bytes, bytes]:
    """(enc_key, mac_key) of a session direction's key index: the halves of
    HKDF-Expand(HKDF-Extract(salt = S, IKM = index_secret(i)), "etun/v2 data", 64)."""
    keys = hkdf_expand(hkdf_extract(secret, index_secret(index_root, index)), b"etun/v2 data", 64)
    return keys[:32], keys[32:]


@lru_cache(maxsize=1024)
def control_keys(secret: bytes) -> tuple[bytes, bytes]:
    """(enc_key, mac_key) of a session direction's SESSION messages: HKDF-Expand(S, "etun/v2 session", 64)."""
    keys = hkdf_expand(secret, b"etun/v2 session", 64)
    return keys[:32], keys[32:]


# --- header (§2) ------------------------------------------------------------

_HEADER = struct.Struct(">BBBBIBB6s")  # byte 0, frag_big, frag_index, frag_count, key_index, session, segment, counter
assert _HEADER.size == HEADER_LEN


@dataclass(frozen=True)
class Header:
    """The 16 header bytes, unpacked."""

    version: int
    level: int
    ptype: int
    frag_big: int
    frag_index: int
    frag_count: int
    key_index: int
    session: int
    segment: int
    counter: int

    @property
    def base(self) -> int:
        """Counter of the frame's first fragment: with the session, identifies the frame (§2.1)."""
        return self.counter - self.frag_index


def first_byte(level: int, ptype: int, version: int = VERSION) -> int:
    """ver (2 bits) | lvl (2 bits) | type (4 bits), §1."""
    return (version & 0x3) << 6 | (level & 0x3) << 4 | (ptype & 0xF)


def pack_header(
    level: int,
    ptype: int,
    *,
    big: int = 0,
    index: int = 0,
    count: int = 1,
    key_index: int = 0,
    session: int = 0,
    segment: int = 0,
    counter: int = 0,
    version: int = VERSION,
) -> bytes:
    """The 16 header bytes; version is a parameter only so tests can forge bad ones."""
    if not 0 <= counter < COUNTER_LIMIT:
        raise ValueError(f"counter {counter} does not fit 48 bits")
    counter_bytes = counter.to_bytes(6, "big")
    return _HEADER.pack(first_byte(level, ptype, version), big, index, count, key_index, session, segment,
                        counter_bytes)


def parse_header(datagram: bytes) -> Header:
    """Unpack the first 16 bytes; no validation beyond the length."""
    if len(datagram) < HEADER_LEN:
        raise ValueError("malformed")
    byte0, big, index, count, key_index, session, segment, counter = _HEADER.unpack_from(datagram)
    return Header(byte0 >> 6, (byte0 >> 4) & 0x3, byte0 & 0xF, big, index, count, key_index, session, segment,
                  int.from_bytes(counter, "big"))


def frame_nonce(key_index: int, session: int, segment: int, base: int) -> bytes:
    """The 96-bit ChaCha20 nonce of a frame: key_index (4) || session (1) || segment (1) || base (6),
    which are header bytes 4..15 of the frame's first fragment (§3.1)."""
    return struct.pack(">IBB", key_index, session, segment) + base.to_bytes(6, "big")


def build_packet(level: int, mac_key: bytes | None, header: bytes, payload: bytes) -> bytes:
    """header || payload || tag (no tag at level none): encrypt-then-MAC over every preceding byte."""
    body = header + payload
    if level == LEVEL_NONE:
        return body
    return body + compute_tag(mac_key, body)


# --- fragmentation (§2.1) ---------------------------------------------------


def max_payload(level: int, max_packet: int) -> int:
    """P: the largest payload per packet that keeps the datagram below max_packet."""
    return max_packet - 1 - UDP_HEADER_LEN - HEADER_LEN - tag_len(level)


def plan_fragments(length: int, level: int, max_packet: int) -> list[tuple[int, int]]:
    """(offset, size) of each fragment of a frame of `length` bytes: n = ceil(L / P), balanced sizes."""
    if not MAX_PACKET_MIN <= max_packet <= MAX_PACKET_MAX:
        raise ValueError(f"max_packet {max_packet} outside {MAX_PACKET_MIN}..{MAX_PACKET_MAX}")
    if length < 1:
        raise ValueError("a frame has at least one byte")
    largest = max_payload(level, max_packet)
    count = -(-length // largest)
    if count > MAX_FRAGMENTS:
        raise ValueError(f"{length} bytes need {count} fragments, more than {MAX_FRAGMENTS}")
    q, r = divmod(length, count)
    return [(i * q + min(i, r), q + 1 if i < r else q) for i in range(count)]


def fragment_geometry(frag_index: int, frag_count: int, frag_big: int, size: int) -> tuple[int, int, int]:
    """What a receiver derives from one fragment of `size` payload bytes: (q, offset, frame length)."""
    q = size - 1 if frag_index < frag_big else size
    return q, frag_index * q + min(frag_index, frag_big), frag_count * q + frag_big


def _fields_ok(hdr: Header, length: int) -> bool:
    """§2.1: the fragment fields of a FRAME, FRAME_VNET or SESSION packet describe a possible frame."""
    size = length - HEADER_LEN - tag_len(hdr.level)  # the packet's own lvl says whether a tag is there
    if size < 0:
        return False
    n, i, r = hdr.frag_count, hdr.frag_index, hdr.frag_big
    if not (n >= 1 and i < n and r < n and hdr.counter >= i):
        return False
    if size > max_payload(hdr.level, MAX_PACKET_MAX):
        return False  # larger than any sender's max_packet allows
    q, _, frame_len = fragment_geometry(i, n, r, size)
    low, high = FRAME_LIMITS[hdr.ptype]
    return q >= 1 and low <= frame_len <= high


# --- replay window (§3.2, RFC 6479) -----------------------------------------


class ReplayWindow:
    """RFC 6479 semantics the simple way: the highest counter seen plus the set of counters seen near it."""

    def __init__(self) -> None:
        self.highest: int | None = None
        self.seen: set[int] = set()

    def is_fresh(self, counter: int) -> bool:
        """True if counter is unseen and at most REPLAY_WINDOW below the highest (highest - counter <= 4032)."""
        if self.highest is None or counter > self.highest:
            return True
        if self.highest - counter > REPLAY_WINDOW:
            return False
        return counter not in self.seen

    def mark(self, counter: int) -> None:
        """Remember counter; call only for authenticated, fresh counters."""
        if not self.is_fresh(counter):
            raise ValueError(f"counter {counter} is not fresh")
        self.seen.add(counter)
        if self.highest is None or counter > self.highest:
            self.highest = counter
            self.seen = {c for c in self.seen if self.highest - c <= REPLAY_WINDOW}


# --- sender (§2, §3.1, §4.2) ------------------------------------------------


class Sender:
    """One direction's sending side: the session it seals under, its key index and 48-bit counter."""

    def __init__(self, level: int, max_packet: int = MAX_PACKET_DEFAULT, index_root: bytes = ZERO_KEY) -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown level {level}")
        if not MAX_PACKET_MIN <= max_packet <= MAX_PACKET_MAX:
            raise ValueError(f"max_packet {max_packet} outside {MAX_PACKET_MIN}..{MAX_PACKET_MAX}")
        if len(index_root) != KEY_LEN:
            raise ValueError("the index root is 32 bytes")
        self.level = level
        self.max_packet = max_packet
        self.index_root = index_root  # copied into each session as it is set
        self.secret: bytes | None = None
        self.session_root = ZERO_KEY
        self.peer_session = 0
        self.key_index = 0
        self.counter = 0

    def set_session(self, secret: bytes = b"", peer_session: int = 0, index: int = 0) -> None:
        """Send under session secret S to the peer's receive session `peer_session` from key
        index `index` on; the counter starts at 0 (§2: per session and sender)."""
        if self.level == LEVEL_NONE:
            secret = ZERO_KEY  # no keys at level none
        if len(secret) != KEY_LEN:
            raise ValueError("a session secret is 32 bytes")
        if not 0 <= peer_session < SESSION_IDS:
            raise ValueError(f"session id {peer_session} is not one byte")
        _check_index(index)
        self.secret = secret
        self.session_root = self.index_root
        self.peer_session = peer_session
        self.key_index = index
        self.counter = 0

    def rotate(self) -> None:
        """Move to the next key index of the same session; at 2^32 - 1 it stays (indices never wrap, §4.2)."""
        if self.secret is None:
            raise ValueError("no session to rotate")
        if self.key_index == KEY_INDEX_LIMIT - 1:
            raise OverflowError("key index space exhausted: a new session is needed")
        self.key_index += 1

    def seal(self, frame: bytes, frame_type: int = TYPE_FRAME, segment: int = 0) -> list[bytes]:
        """The datagrams (UDP payloads) of one frame or SESSION message, in order."""
        if self.secret is None:
            raise ValueError("no session to seal under")
        if frame_type not in SEALED_TYPES:
            raise ValueError(f"type {frame_type} is not sealed under session keys")
        if not 0 <= segment < SEGMENT_IDS:
            raise ValueError(f"segment {segment} is not one byte")
        low, high = FRAME_LIMITS[frame_type]
        if not low <= len(frame) <= high:
            raise ValueError(f"a type {frame_type} frame is {low}..{high} bytes, got {len(frame)}")
        plan = plan_fragments(len(frame), self.level, self.max_packet)
        count = len(plan)
        base = self.counter
        if base + count > COUNTER_LIMIT:
            raise ValueError("the session's 48-bit counter is exhausted")
        self.counter += count
        mac_key = None
        text = frame
        if self.level != LEVEL_NONE:
            if frame_type == TYPE_SESSION:
                enc_key, mac_key = control_keys(self.secret)
            else:
                enc_key, mac_key = data_keys(self.secret, self.session_root, self.key_index)
            if self.level == LEVEL_ENCRYPT:
                # One pass over the whole frame, then cut: the receiver decrypts it the same way.
                nonce = frame_nonce(self.key_index, self.peer_session, segment, base)
                text = chacha20(enc_key, nonce, frame)
        big = len(frame) % count
        packets = []
        for i, (offset, size) in enumerate(plan):
            header = pack_header(self.level, frame_type, big=big, index=i, count=count, key_index=self.key_index,
                                 session=self.peer_session, segment=segment, counter=base + i)
            packets.append(build_packet(self.level, mac_key, header, text[offset : offset + size]))
        return packets


# --- receiver (§3.2, §3.4, §4.2, §5.2) --------------------------------------


@dataclass(eq=False)
class Session:
    """One receive session: its id, secret, current key index c and replay windows.

    `windows` maps a key index to the window of its data packets; key None is the session's
    own window: its SESSION messages, and at level none every packet (§3.2).
    """

    session_id: int
    secret: bytes
    index_root: bytes
    current: int
    confirmed: bool
    windows: dict[int | None, ReplayWindow] = field(default_factory=dict)

    def holds(self, index: int) -> bool:
        """c - 1, c and c + 1 (§4.2); at 2^32 - 1 there is no c + 1, and a header cannot name it."""
        return self.current - 1 <= index <= self.current + 1

    def keys(self, hdr: Header) -> tuple[bytes, bytes]:
        """(enc_key, mac_key) a packet with this header is sealed under (§3.1, §4.2)."""
        if hdr.ptype == TYPE_SESSION:
            return control_keys(self.secret)
        return data_keys(self.secret, self.index_root, hdr.key_index)


@dataclass(eq=False)
class _Partial:
    """A frame being reassembled: what its first fragment to arrive said (Receiver._story), when
    it arrived, and the fragments so far by index."""

    story: tuple[int, ...]
    first_ms: int
    parts: dict[int, bytes] = field(default_factory=dict)


class Receiver:
    """One direction's receiving side: sessions by role, key indices, replay windows, reassembly.

    Sessions are held in three roles (§5.2): `current`, `previous` (the one it replaced, which
    still opens packets in flight for PREVIOUS_SESSION_MS) and `next` (installed by a responder,
    waiting for the first authenticated packet under it to confirm it).
    """

    def __init__(
        self,
        level: int,
        index_root: bytes = ZERO_KEY,
        reassembly_timeout_ms: int = REASSEMBLY_TIMEOUT_MS,
        max_frames_in_reassembly: int = MAX_FRAMES_IN_REASSEMBLY,
    ) -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown level {level}")
        if len(index_root) != KEY_LEN:
            raise ValueError("the index root is 32 bytes")
        self.level = level
        self.index_root = index_root  # copied into each session as it is installed
        self.reassembly_timeout_ms = reassembly_timeout_ms
        self.max_frames_in_reassembly = max_frames_in_reassembly
        self.current: Session | None = None
        self.previous: Session | None = None
        self.next: Session | None = None
        self.replaced_ms = 0  # when `previous` was replaced
        self.reassembly: dict[tuple[Session, int], _Partial] = {}  # (session, base) -> frame
        self.now_ms = 0  # the receiver's clock only moves forward: an earlier now_ms means no time passed
        self.last_drop: str | None = None
        self.counters: dict[str, int] = dict.fromkeys(DROP_REASONS + REASSEMBLY_LOSSES, 0)

    # -- sessions --------------------------------------------------------------

    def install(self, secret: bytes = b"", session_id: int = 0, index: int = 0, confirmed: bool = True,
                now_ms: int | None = None) -> None:
        """Receive under secret S as session `session_id`, its key index c starting at `index`.

        Confirmed (an initiator's session), it becomes current at once and the current one
        becomes previous; a session waiting in `next` is dropped, superseded. Not confirmed (a
        responder's), it waits in `next`, replacing any session waiting there. `now_ms` is the
        time of the install, from which a replaced session counts its PREVIOUS_SESSION_MS.
        """
        if self.level == LEVEL_NONE:
            secret = ZERO_KEY
        if len(secret) != KEY_LEN:
            raise ValueError("a session secret is 32 bytes")
        if not 0 <= session_id < SESSION_IDS:
            raise ValueError(f"session id {session_id} is not one byte")
        _check_index(index)
        session = Session(session_id, secret, self.index_root, index, confirmed)
        if confirmed:
            self.next = None
            self._make_current(session, self.now_ms if now_ms is None else now_ms)
        else:
            self.next = session

    def _make_current(self, session: Session, now_ms: int) -> None:
        self.previous, self.current = self.current, session
        self.replaced_ms = now_ms

    def drop_sessions(self) -> None:
        """Forget every session; frames they left in reassembly expire as usual."""
        self.current = self.previous = self.next = None

    def sessions(self) -> dict[str, tuple[int, bool] | None]:
        """{"current" | "previous" | "next": (session id, confirmed) or None}."""
        roles = {"current": self.current, "previous": self.previous, "next": self.next}
        return {role: (s.session_id, s.confirmed) if s else None for role, s in roles.items()}

    @property
    def current_index(self) -> int | None:
        """c of the current session, None without one; 0 at level none, which has no key indices."""
        if self.current is None:
            return None
        return 0 if self.level == LEVEL_NONE else self.current.current

    def _find(self, session_id: int) -> Session | None:
        """The session a header's id names. Current first: a replayed INIT's session, waiting in
        `next`, can never take the id away from the session in use."""
        for session in (self.current, self.next, self.previous):
            if session is not None and session.session_id == session_id:
                return session
        return None

    # -- packets ---------------------------------------------------------------

    def open(self, datagram: bytes, now_ms: int | None = None) -> list[tuple[int, bytes]]:
        """Check one datagram; return what it completes: [(type, frame)] for FRAME, FRAME_VNET
        and SESSION, [(type, datagram)] for handshake and probe packets. Sets last_drop."""
        self.expire(now_ms)
        reason, done = self._open(bytes(datagram))
        self.last_drop = reason
        if reason is not None:
            self.counters[reason] += 1
            return []
        return done

    def _open(self, datagram: bytes) -> tuple[str | None, list[tuple[int, bytes]]]:
        # 1. structure
        if not datagram:
            return "malformed", []
        if datagram[0] >> 6 != VERSION:
            return "version", []
        if (datagram[0] >> 4) & 0x3 == LEVEL_INVALID:
            return "malformed", []
        ptype = datagram[0] & 0xF
        if ptype in HANDED_UP_TYPES:
            return None, [(ptype, datagram)]  # laid out and checked by §5 and §7, not here
        if ptype not in SEALED_TYPES or len(datagram) < HEADER_LEN:
            return "malformed", []
        hdr = parse_header(datagram)
        if not _fields_ok(hdr, len(datagram)):
            return "malformed", []
        # 2. level
        if hdr.level != self.level:
            return "level_mismatch", []
        # 3. session
        session = self._find(hdr.session)
        if session is None:
            return "no_session", []
        end = len(datagram) - tag_len(self.level)
        if self.level != LEVEL_NONE:
            # 4. key index: held, never derived because a packet asks for it (§4.2)
            if hdr.ptype in DATA_TYPES and not session.holds(hdr.key_index):
                return "key_index", []
            # 5. tag
            _, mac_key = session.keys(hdr)
            if not compare_digest(compute_tag(mac_key, datagram[:end]), datagram[end:]):
                return "auth", []
        # 6. replay; "the replay window moves only for authenticated packets" (§3.2): it moves
        # here, before step 7, which judges the frame and not the counter.
        window = session.windows.setdefault(self._window_key(hdr), ReplayWindow())
        if not window.is_fresh(hdr.counter):
            return "replay", []
        window.mark(hdr.counter)
        # 7. agreement with the frame held
        payload = datagram[HEADER_LEN:end]
        if self._contradicts(session, hdr, payload):
            return "frag_inconsistent", []
        # Only now may the packet change anything else (§3.2).
        done = self._reassemble(session, hdr, payload)
        if session is self.next:
            session.confirmed = True  # key confirmation (§5.2): the next session becomes current
            self.next = None
            self._make_current(session, self.now_ms)
        if self.level != LEVEL_NONE:
            if hdr.ptype in DATA_TYPES and hdr.key_index == session.current + 1:
                session.current = hdr.key_index
            elif hdr.ptype == TYPE_SESSION and hdr.key_index > session.current:
                session.current = hdr.key_index  # a SESSION message names the sender's index (§4.2)
        return None, done

    def _window_key(self, hdr: Header) -> int | None:
        """Which of its session's replay windows a packet is checked against (§3.2)."""
        if self.level == LEVEL_NONE or hdr.ptype == TYPE_SESSION:
            return None
        return hdr.key_index

    @staticmethod
    def _story(hdr: Header, payload: bytes) -> tuple[int, ...]:
        """What a fragment says about its frame: type, n, r, q, key index, segment (§3.2 step 7)."""
        q, _, _ = fragment_geometry(hdr.frag_index, hdr.frag_count, hdr.frag_big, len(payload))
        return hdr.ptype, hdr.frag_count, hdr.frag_big, q, hdr.key_index, hdr.segment

    def _contradicts(self, session: Session, hdr: Header, payload: bytes) -> bool:
        """Step 7: a packet naming a frame held (by session and base) tells another story than
        the fragments held, a single-packet frame (n = 1) included."""
        partial = self.reassembly.get((session, hdr.base))
        return partial is not None and partial.story != self._story(hdr, payload)

    def _reassemble(self, session: Session, hdr: Header, payload: bytes) -> list[tuple[int, bytes]]:
        """Store a fragment that passed every check; the (type, frame) it completes, if any."""
        if hdr.frag_count == 1:
            return [(hdr.ptype, self._decrypt(session, hdr, payload))]
        key = (session, hdr.base)
        partial = self.reassembly.get(key)
        if partial is None:
            if len(self.reassembly) >= self.max_frames_in_reassembly:
                oldest = min(self.reassembly, key=lambda k: self.reassembly[k].first_ms)
                del self.reassembly[oldest]
                self.counters["frag_evicted"] += 1
            partial = _Partial(self._story(hdr, payload), self.now_ms)
            self.reassembly[key] = partial
        # A fragment index held already would be a counter seen already: step 6 dropped it.
        partial.parts[hdr.frag_index] = payload
        if len(partial.parts) < hdr.frag_count:
            return []
        del self.reassembly[key]
        text = b"".join(partial.parts[i] for i in range(hdr.frag_count))
        return [(hdr.ptype, self._decrypt(session, hdr, text))]

    def _decrypt(self, session: Session, hdr: Header, text: bytes) -> bytes:
        """At encrypt, one ChaCha20 pass over the whole frame under the nonce of §3.1."""
        if self.level != LEVEL_ENCRYPT:
            return text
        enc_key, _ = session.keys(hdr)
        return chacha20(enc_key, frame_nonce(hdr.key_index, hdr.session, hdr.segment, hdr.base), text)

    def expire(self, now_ms: int | None = None) -> None:
        """Move the clock to now_ms; discard frames whose first fragment arrived more than the
        timeout ago (§3.4), and the previous session once it was replaced PREVIOUS_SESSION_MS ago."""
        if now_ms is not None:
            self.now_ms = max(self.now_ms, now_ms)
        for key in [k for k, p in self.reassembly.items() if self.now_ms - p.first_ms > self.reassembly_timeout_ms]:
            del self.reassembly[key]
            self.counters["frag_timeout"] += 1
        if self.previous is not None and self.now_ms - self.replaced_ms >= PREVIOUS_SESSION_MS:
            self.previous = None
