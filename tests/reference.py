"""Independent pure-Python reference of the etun wire protocol (docs/PROTOCOL.md) for differential tests."""

# This module must never import `etun`: it is the second, independent reading
# of docs/PROTOCOL.md that the Cython datapath is held to. It favours being
# obviously correct over being fast; section numbers (§) refer to PROTOCOL.md.
#
# Outbound flow (Sender.seal):
#   1. plan the balanced fragments of the frame (§2),
#   2. take counters base .. base+n-1 from the per-process counter,
#   3. at encrypt, ChaCha20 the whole frame once under nonce = key_index || base (§3.1),
#   4. cut the (cipher)text exactly as planned,
#   5. prepend each fragment's header and append HMAC-SHA-256-128 over header || payload.
#
# Inbound flow (Receiver.open), checks in the order of §3.2:
#   1. structure (length, version, level 3, type, fragment fields, frame limits) -> malformed
#   2. level -> level_mismatch;  3. any session -> no_session
#   4. key index held, or ahead and the token bucket allows a derivation -> key_index
#   5. tag -> auth;  steps 4 and 5 are skipped at level none, and a packet failing them
#      is tried once more against the old session if that has the packet's key index
#   6. replay window of that session and key index (moves only now, after the tag) -> replay
#   7. agreement with the fragments held for the same frame -> frag_inconsistent
#   then reassemble, and at encrypt decrypt the complete frame in one pass.

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from hmac import compare_digest

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

# --- constants (§1, §2, §4, §5) ---------------------------------------------

VERSION = 1

LEVEL_NONE = 0
LEVEL_AUTH = 1
LEVEL_ENCRYPT = 2
LEVEL_INVALID = 3  # the one value the 2-bit field can hold that is no level
LEVELS = (LEVEL_NONE, LEVEL_AUTH, LEVEL_ENCRYPT)
LEVEL_NAMES = {LEVEL_NONE: "none", LEVEL_AUTH: "auth", LEVEL_ENCRYPT: "encrypt"}

TYPE_FRAME = 1
TYPE_FRAME_VNET = 2
TYPE_HELLO = 4
TYPE_PROBE = 5
TYPE_PROBE_REPLY = 6
DATA_TYPES = (TYPE_FRAME, TYPE_FRAME_VNET)
CONTROL_TYPES = (TYPE_HELLO, TYPE_PROBE, TYPE_PROBE_REPLY)

HEADER_LEN = 16  # bytes before the payload
TAG_LEN = 16  # HMAC-SHA-256 truncated to 128 bits (RFC 4868); absent at level none
UDP_HEADER_LEN = 8  # counted against max_packet

VNET_HDR_LEN = 10  # struct virtio_net_hdr in front of a FRAME_VNET frame (§3.3)
FRAME_MIN_LEN = 14  # an Ethernet header alone
FRAME_MAX_LEN = 65557  # largest IP packet (65535) + Ethernet header (14) + two VLAN tags (8)
FRAME_VNET_MIN_LEN = VNET_HDR_LEN + FRAME_MIN_LEN
FRAME_VNET_MAX_LEN = VNET_HDR_LEN + FRAME_MAX_LEN
FRAME_LIMITS = {  # frame type -> (shortest, longest) frame in bytes
    TYPE_FRAME: (FRAME_MIN_LEN, FRAME_MAX_LEN),
    TYPE_FRAME_VNET: (FRAME_VNET_MIN_LEN, FRAME_VNET_MAX_LEN),
}

MAX_PACKET_MIN = 320  # bytes of UDP datagram, header included
MAX_PACKET_MAX = 9000
MAX_PACKET_DEFAULT = 800
MAX_FRAGMENTS = 255  # frag_count is one byte

KEY_INDEX_LIMIT = 1 << 32  # key_index is 32 bits
COUNTER_LIMIT = 1 << 64  # counter is 64 bits
KEY_INDEX_AHEAD_MAX = 64  # a receiver derives keys on demand for c + 2 .. c + 64 (c: its current index)
KEY_BUCKET_CAPACITY = 8  # on-demand derivations a receiver may make at once (§4.3)
KEY_BUCKET_REFILL_PER_S = 8  # ... and the rate, continuous, at which that budget comes back
REPLAY_WINDOW = 4032  # a counter is accepted at most this far below the highest seen (RFC 6479: 4096 - 64)

HELLO_LEN = 132  # bytes of HELLO payload
HELLO_FLAG_ANSWER = 0x01  # flags bit 0: please answer
NONCE_LEN = 16  # sender nonces and challenges

REASSEMBLY_TIMEOUT_MS = 1000
MAX_FRAMES_IN_REASSEMBLY = 128  # incomplete frames held at once

# Drop reasons of arriving packets, in the order §3.2 checks them.
DROP_REASONS = (
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

_LABEL = b"etun/v1"  # HKDF salt and the prefix of every info string (§4.1)


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


def data_nonce(key_index: int, base: int) -> bytes:
    """The 96-bit ChaCha20 nonce of a frame: key_index (4 bytes) || base (8 bytes), §3.1."""
    return struct.pack(">IQ", key_index, base)


# --- key schedule (§4.1) ----------------------------------------------------


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract with SHA-256 (RFC 5869 §2.2): PRK = HMAC(salt, IKM)."""
    return hmac_sha256(salt, ikm)


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand with SHA-256 (RFC 5869 §2.3)."""
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=info).derive(prk)


def derive_prk(material: bytes) -> bytes:
    """PRK = HKDF-Extract(salt = "etun/v1", IKM = key material)."""
    return hkdf_extract(_LABEL, material)


def control_key(prk: bytes) -> bytes:
    """The 32-byte key that tags HELLO, PROBE and PROBE_REPLY packets."""
    return hkdf_expand(prk, _LABEL + b" control", 32)


def fingerprint(material: bytes) -> str:
    """The material's short hash both sites compare by phone: 'xxxx-xxxx-xxxx-xxxx' (lowercase hex)."""
    digest = hkdf_expand(derive_prk(material), _LABEL + b" fingerprint", 8).hex()
    return "-".join(digest[i : i + 4] for i in range(0, 16, 4))


def session_secret(prk: bytes, sender: bytes, challenge: bytes) -> bytes:
    """SK = HKDF-Expand(PRK, "etun/v1 session" || S || R, 32) for one direction (§4.2)."""
    if len(sender) != NONCE_LEN or len(challenge) != NONCE_LEN:
        raise ValueError("sender nonce and challenge are 16 bytes each")
    return hkdf_expand(prk, _LABEL + b" session" + sender + challenge, 32)


@lru_cache(maxsize=4096)
def index_keys(secret: bytes, index: int) -> tuple[bytes, bytes]:
    """(enc_key, mac_key) of a key index: HKDF-Expand(SK, "etun/v1 index" || be32(i), 64) split in halves."""
    if not 0 <= index < KEY_INDEX_LIMIT:
        raise ValueError(f"key index {index} is not a 32-bit unsigned integer")
    keys = hkdf_expand(secret, _LABEL + b" index" + struct.pack(">I", index), 64)
    return keys[:32], keys[32:]


# --- header (§1) ------------------------------------------------------------

_HEADER = struct.Struct(">BBBBIQ")  # byte 0, frag_big, frag_index, frag_count, key_index, counter
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
    counter: int

    @property
    def base(self) -> int:
        """Counter of the frame's first fragment: identifies the frame (§2)."""
        return self.counter - self.frag_index


def pack_header(
    level: int,
    ptype: int,
    frag_big: int,
    frag_index: int,
    frag_count: int,
    key_index: int,
    counter: int,
    version: int = VERSION,
) -> bytes:
    """The 16 header bytes; version is a parameter only so tests can forge bad ones."""
    byte0 = (version & 0x3) << 6 | (level & 0x3) << 4 | (ptype & 0xF)
    return _HEADER.pack(byte0, frag_big, frag_index, frag_count, key_index, counter)


def parse_header(datagram: bytes) -> Header:
    """Unpack the first 16 bytes; no validation beyond the length."""
    if len(datagram) < HEADER_LEN:
        raise ValueError("malformed")
    byte0, big, index, count, key_index, counter = _HEADER.unpack_from(datagram)
    return Header(byte0 >> 6, (byte0 >> 4) & 0x3, byte0 & 0xF, big, index, count, key_index, counter)


def build_packet(level: int, mac_key: bytes | None, header: bytes, payload: bytes) -> bytes:
    """header || payload || tag (no tag at level none): encrypt-then-MAC over every preceding byte."""
    body = header + payload
    if level == LEVEL_NONE:
        return body
    return body + compute_tag(mac_key, body)


# --- fragmentation (§2) -----------------------------------------------------


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


def _structure_ok(hdr: Header, length: int) -> bool:
    """§3.2 step 1: everything a packet can be judged on before its level and keys."""
    if hdr.version != VERSION or hdr.level == LEVEL_INVALID:
        return False
    if hdr.ptype not in DATA_TYPES and hdr.ptype not in CONTROL_TYPES:
        return False
    size = length - HEADER_LEN - tag_len(hdr.level)  # the packet's own lvl says whether a tag is there
    if size < 0:
        return False
    if hdr.ptype in CONTROL_TYPES:
        # §5 fixes the header of a control packet: one unfragmented datagram under index 0.
        return (hdr.frag_big, hdr.frag_index, hdr.frag_count, hdr.key_index) == (0, 0, 1, 0)
    n, i, r = hdr.frag_count, hdr.frag_index, hdr.frag_big
    if not (n >= 1 and i < n and r < n and hdr.counter >= i):
        return False
    if size > max_payload(hdr.level, MAX_PACKET_MAX):
        return False                                  # larger than any sender's max_packet allows
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


# --- sender (§2, §3.1) ------------------------------------------------------


class Sender:
    """One direction's sending side: a per-process counter and the keys of the current session and index."""

    def __init__(self, level: int, max_packet: int = MAX_PACKET_DEFAULT) -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown level {level}")
        if not MAX_PACKET_MIN <= max_packet <= MAX_PACKET_MAX:
            raise ValueError(f"max_packet {max_packet} outside {MAX_PACKET_MIN}..{MAX_PACKET_MAX}")
        self.level = level
        self.max_packet = max_packet
        self.counter = 0  # never reset: a (key, nonce) pair must never repeat
        self.secret: bytes | None = None
        self.key_index = 0

    def set_session(self, secret: bytes, index: int = 0) -> None:
        """Send under session secret SK from key index `index` on; the counter keeps growing."""
        if self.level != LEVEL_NONE and len(secret) != 32:
            raise ValueError("a session secret is 32 bytes")
        self.secret = secret
        self.key_index = index if self.level != LEVEL_NONE else 0   # none keeps it at 0 (§3.2)

    def rotate(self) -> None:
        """Move to the next key index of the same session (§4.3); nothing to do at level none."""
        if self.secret is None:
            raise ValueError("no session to rotate")
        if self.level != LEVEL_NONE:
            self.key_index += 1

    @property
    def keys(self) -> tuple[bytes, bytes]:
        """(enc_key, mac_key) of the current index."""
        return index_keys(self.secret, self.key_index)

    def seal(self, frame: bytes, frame_type: int = TYPE_FRAME) -> list[bytes]:
        """The datagram payloads carrying one frame."""
        if self.secret is None:
            raise ValueError("no session to send under")
        if frame_type not in DATA_TYPES:
            raise ValueError(f"type {frame_type} is not a data type")
        low, high = FRAME_LIMITS[frame_type]
        if not low <= len(frame) <= high:
            raise ValueError(f"a type {frame_type} frame is {low}..{high} bytes, got {len(frame)}")
        plan = plan_fragments(len(frame), self.level, self.max_packet)
        count = len(plan)
        base = self.counter
        if base + count > COUNTER_LIMIT:
            raise ValueError("counter exhausted")
        self.counter += count
        mac_key = None
        text = frame
        if self.level != LEVEL_NONE:
            enc_key, mac_key = self.keys
            if self.level == LEVEL_ENCRYPT:
                # One pass over the whole frame, then cut: the receiver decrypts it the same way.
                text = chacha20(enc_key, data_nonce(self.key_index, base), frame)
        big = len(frame) % count
        packets = []
        for i, (offset, size) in enumerate(plan):
            header = pack_header(self.level, frame_type, big, i, count, self.key_index, base + i)
            packets.append(build_packet(self.level, mac_key, header, text[offset : offset + size]))
        return packets


# --- receiver (§3.2, §3.4, §4.2, §4.3) --------------------------------------


class TokenBucket:
    """§4.3's budget for on-demand key derivations: 8 tokens, refilled continuously at 8 per second.

    A fresh bucket is full. Fractions keep the refill exact: a token is back 125 ms after it went.
    """

    def __init__(self) -> None:
        self.tokens = Fraction(KEY_BUCKET_CAPACITY)
        self.last_ms: int | None = None

    def take(self, now_ms: int) -> bool:
        """Spend one token if there is one, after refilling for the time since the last call."""
        if self.last_ms is not None:
            refill = Fraction((now_ms - self.last_ms) * KEY_BUCKET_REFILL_PER_S, 1000)
            self.tokens = min(Fraction(KEY_BUCKET_CAPACITY), self.tokens + refill)
        self.last_ms = now_ms
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass(eq=False)
class _Session:
    """One receive session: its secret, current key index c, its on-demand keys, a replay window per index."""

    secret: bytes
    current: int = 0
    trial: int | None = None  # the index whose keys were last derived on demand; kept for its next packets
    windows: dict[int, ReplayWindow] = field(default_factory=dict)

    def holds(self, index: int) -> bool:
        """c - 1, c and c + 1: the keys a receiver keeps ready (§4.3); deriving them costs no tokens."""
        return index >= 0 and self.current - 1 <= index <= self.current + 1

    def ahead(self, index: int) -> bool:
        """c + 2 .. c + 64: indices whose keys are derived on demand (§4.3)."""
        return self.current + 2 <= index <= self.current + KEY_INDEX_AHEAD_MAX

    def promote(self, index: int) -> None:
        """An index above c authenticated: it becomes current, and c - 1, c + 1 follow it (§4.3)."""
        self.current = index
        if self.trial is not None and not self.ahead(self.trial):
            self.trial = None  # now current, next or behind: held, or out of reach for good


@dataclass(eq=False)
class _Partial:
    """A frame being reassembled: what its first fragment said, and the fragments so far."""

    session: _Session
    ptype: int
    frag_count: int
    frag_big: int
    q: int
    key_index: int
    first_ms: int
    parts: dict[int, bytes] = field(default_factory=dict)


class Receiver:
    """One direction's receiving side: sessions, key indices, replay windows, reassembly."""

    def __init__(
        self,
        level: int,
        reassembly_timeout_ms: int = REASSEMBLY_TIMEOUT_MS,
        max_frames_in_reassembly: int = MAX_FRAMES_IN_REASSEMBLY,
        ctl_key: bytes | None = None,
    ) -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown level {level}")
        self.level = level
        self.reassembly_timeout_ms = reassembly_timeout_ms
        self.max_frames_in_reassembly = max_frames_in_reassembly
        self.ctl_key = ctl_key  # control packets reaching open() are checked with it
        self.session: _Session | None = None  # the current receive session
        self.old_session: _Session | None = None  # §4.2: the one before, usable at the index it had
        self.reassembly: dict[tuple[_Session, int], _Partial] = {}  # (session, base) -> frame
        self.bucket = TokenBucket()
        self.now_ms = 0  # the receiver's clock only moves forward: an earlier now_ms means no time passed
        self.last_drop: str | None = None
        self.counters: dict[str, int] = dict.fromkeys(DROP_REASONS + REASSEMBLY_LOSSES, 0)

    def set_session(self, secret: bytes) -> None:
        """Start a new receive session at key index 0; the current one becomes the old one."""
        if self.level != LEVEL_NONE and len(secret) != 32:
            raise ValueError("a session secret is 32 bytes")
        self.session, self.old_session = _Session(secret), self.session

    @property
    def current_index(self) -> int | None:
        """The current key index of the current session (stays 0 at level none, which ignores key indices)."""
        return self.session.current if self.session else None

    def open(self, datagram: bytes, now_ms: int = 0) -> list[tuple[int, bytes]]:
        """Check one datagram; return the (type, frame) it completes, if any. Sets last_drop."""
        self.expire(now_ms)
        reason, done = self._open(bytes(datagram))
        self.last_drop = reason
        if reason is not None:
            self.counters[reason] += 1
            return []
        return done

    def _open(self, datagram: bytes) -> tuple[str | None, list[tuple[int, bytes]]]:
        # 1. structure
        if len(datagram) < HEADER_LEN:
            return "malformed", []
        hdr = parse_header(datagram)
        if not _structure_ok(hdr, len(datagram)):
            return "malformed", []
        # 2. level
        if hdr.level != self.level:
            return "level_mismatch", []
        if hdr.ptype in CONTROL_TYPES:
            # Not data: verified with the control key and handed up whole; HELLO
            # freshness (§5 step 1) belongs to the session logic above this layer.
            try:
                ptype, _, payload = open_control(self.level, self.ctl_key, datagram)
            except ValueError as drop:
                return str(drop), []
            return None, [(ptype, payload)]
        # 3. session
        if self.session is None:
            return "no_session", []
        session = self.session
        # 4. and 5. key index and tag; skipped at level none, which has no keys.
        old = self.old_session
        if (self.level != LEVEL_NONE and not session.holds(hdr.key_index)
                and session.trial != hdr.key_index and old is not None
                and hdr.key_index == old.current and _tag_ok(old.secret, hdr.key_index, datagram)):
            # The old session holds this index and its tag verifies: no derivation token is
            # spent on the current session for the old one's traffic (§4.3).
            session = old
        elif self.level != LEVEL_NONE:
            reason = self._check_index_and_tag(hdr, datagram)
            if reason is None:
                if hdr.key_index > session.current:
                    session.promote(hdr.key_index)
            else:
                # Tried once more against the old session if it has this key index: it
                # holds only the index that was current when it was replaced (§3.2, §4.2).
                if old is None or hdr.key_index != old.current:
                    return reason, []
                if not _tag_ok(old.secret, hdr.key_index, datagram):
                    return "auth", []
                session = old
        # 6. replay; the window moves only here, after the tag was checked.
        # At level none key_index means nothing: one window per session (§3.2).
        window = session.windows.setdefault(self._index(hdr), ReplayWindow())
        if not window.is_fresh(hdr.counter):
            return "replay", []
        window.mark(hdr.counter)
        # 7. and reassembly
        payload = datagram[HEADER_LEN : len(datagram) - tag_len(self.level)]
        return self._reassemble(session, hdr, payload)

    def _index(self, hdr: Header) -> int:
        """The key index that matters: none at level none, where a receiver ignores it."""
        return 0 if self.level == LEVEL_NONE else hdr.key_index

    def _check_index_and_tag(self, hdr: Header, datagram: bytes) -> str | None:
        """§3.2 steps 4 and 5 against the current session: None, "key_index" or "auth"."""
        session, index = self.session, hdr.key_index
        if not session.holds(index):
            if not session.ahead(index):
                return "key_index"
            if session.trial != index:
                # The budget is asked before any work, so forged indices cannot burn CPU.
                if not self.bucket.take(self.now_ms):
                    return "key_index"
                session.trial = index  # these keys replace the previous on-demand ones
        return None if _tag_ok(session.secret, index, datagram) else "auth"

    def _reassemble(self, session: _Session, hdr: Header, payload: bytes) -> tuple[str | None, list[tuple[int, bytes]]]:
        q, _, _ = fragment_geometry(hdr.frag_index, hdr.frag_count, hdr.frag_big, len(payload))
        key = (session, hdr.base)
        partial = self.reassembly.get(key)
        if partial is not None:
            # 7. every packet naming a frame held (by its base) must tell the same story as
            # its first fragment, a single-packet frame (n = 1) included.
            said = (partial.frag_count, partial.frag_big, partial.q, partial.ptype, partial.key_index)
            if said != (hdr.frag_count, hdr.frag_big, q, hdr.ptype, self._index(hdr)):
                return "frag_inconsistent", []
            if hdr.frag_index in partial.parts:  # unreachable: same base and index means same counter
                return "replay", []
        if hdr.frag_count == 1:
            return None, [(hdr.ptype, self._decrypt(session, hdr, payload))]
        if partial is None:
            if len(self.reassembly) >= self.max_frames_in_reassembly:
                oldest = min(self.reassembly, key=lambda k: self.reassembly[k].first_ms)
                del self.reassembly[oldest]
                self.counters["frag_evicted"] += 1
            partial = _Partial(session, hdr.ptype, hdr.frag_count, hdr.frag_big, q, self._index(hdr), self.now_ms)
            self.reassembly[key] = partial
        partial.parts[hdr.frag_index] = payload
        if len(partial.parts) < partial.frag_count:
            return None, []
        del self.reassembly[key]
        text = b"".join(partial.parts[i] for i in range(partial.frag_count))
        return None, [(hdr.ptype, self._decrypt(session, hdr, text))]

    def _decrypt(self, session: _Session, hdr: Header, text: bytes) -> bytes:
        """At encrypt, one ChaCha20 pass over the whole frame under its fragments' key index (§3.1)."""
        if self.level != LEVEL_ENCRYPT:
            return text
        enc_key, _ = index_keys(session.secret, hdr.key_index)
        return chacha20(enc_key, data_nonce(hdr.key_index, hdr.base), text)

    def expire(self, now_ms: int) -> None:
        """Discard frames whose first fragment arrived more than the timeout ago (§3.4)."""
        self.now_ms = max(self.now_ms, now_ms)
        for key in [k for k, p in self.reassembly.items() if self.now_ms - p.first_ms > self.reassembly_timeout_ms]:
            del self.reassembly[key]
            self.counters["frag_timeout"] += 1


def _tag_ok(secret: bytes, index: int, datagram: bytes) -> bool:
    """Step 5: the datagram's last 16 bytes are the tag under the index's mac_key (constant-time compare)."""
    _, mac_key = index_keys(secret, index)
    body = datagram[: len(datagram) - TAG_LEN]
    return compare_digest(compute_tag(mac_key, body), datagram[-TAG_LEN:])


# --- control packets (§5, §6) -----------------------------------------------


def seal_control(level: int, ctl_key: bytes | None, ptype: int, counter: int, payload: bytes) -> bytes:
    """A HELLO / PROBE / PROBE_REPLY datagram: fixed header, plaintext payload, tag under the control key."""
    if ptype not in CONTROL_TYPES:
        raise ValueError(f"type {ptype} is not a control type")
    header = pack_header(level, ptype, 0, 0, 1, 0, counter)
    return build_packet(level, ctl_key, header, payload)


def open_control(level: int, ctl_key: bytes | None, datagram: bytes) -> tuple[int, int, bytes]:
    """(type, counter, payload) of a control datagram; raises ValueError(reason) per §3.2 steps 1, 2 and 5."""
    datagram = bytes(datagram)
    if len(datagram) < HEADER_LEN:
        raise ValueError("malformed")
    hdr = parse_header(datagram)
    if not _structure_ok(hdr, len(datagram)) or hdr.ptype not in CONTROL_TYPES:
        raise ValueError("malformed")
    if hdr.level != level:
        raise ValueError("level_mismatch")
    end = len(datagram) - tag_len(level)
    if level != LEVEL_NONE:
        if ctl_key is None or not compare_digest(compute_tag(ctl_key, datagram[:end]), datagram[end:]):
            raise ValueError("auth")
    return hdr.ptype, hdr.counter, datagram[HEADER_LEN:end]


_HELLO = struct.Struct(">16s16s16s16s16sIIIB3sI32s")
assert _HELLO.size == HELLO_LEN
_HELLO_NONCES = ("sender", "challenge", "propose", "acc_sender", "acc_chal")
_HELLO_NUMBERS = ("time_us", "echo_us", "held_us", "send_index")


def encode_hello(
    *,
    sender: bytes = bytes(16),
    challenge: bytes = bytes(16),
    propose: bytes = bytes(16),
    acc_sender: bytes = bytes(16),
    acc_chal: bytes = bytes(16),
    time_us: int = 0,
    echo_us: int = 0,
    held_us: int = 0,
    flags: int = 0,
    send_index: int = 0,
    site: str = "",
) -> bytes:
    """The 132-byte HELLO payload of §5; omitted nonces are zeros ("none")."""
    nonces = (sender, challenge, propose, acc_sender, acc_chal)
    for name, value in zip(_HELLO_NONCES, nonces, strict=True):
        if len(value) != NONCE_LEN:
            raise ValueError(f"HELLO {name} is 16 bytes, got {len(value)}")
    for name, value in zip(_HELLO_NUMBERS, (time_us, echo_us, held_us, send_index), strict=True):
        if not 0 <= value < 1 << 32:
            raise ValueError(f"HELLO {name} is a 32-bit unsigned integer, got {value}")
    if not 0 <= flags < 256:
        raise ValueError(f"HELLO flags is one byte, got {flags}")
    name = site.encode("utf-8")
    if len(name) > 32 or b"\0" in name:
        raise ValueError(f"HELLO site is at most 32 bytes of UTF-8 without NUL, got {site!r}")
    return _HELLO.pack(*nonces, time_us, echo_us, held_us, flags, bytes(3), send_index, name)


def decode_hello(payload: bytes) -> dict:
    """The fields of a HELLO payload as encode_hello takes them; raises ValueError("malformed")."""
    if len(payload) != HELLO_LEN:
        raise ValueError("malformed")
    *nonces, time_us, echo_us, held_us, flags, _reserved, send_index, site = _HELLO.unpack(payload)
    try:
        name = site.rstrip(b"\0").decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("malformed") from None
    fields = dict(zip(_HELLO_NONCES, nonces, strict=True))
    fields.update(time_us=time_us, echo_us=echo_us, held_us=held_us, flags=flags, send_index=send_index,
                  site=name)
    return fields
