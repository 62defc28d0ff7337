# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False, embedsignature=True
"""The etun datapath: balanced fragmentation, ChaCha20 + HMAC-SHA256, anti-replay, reassembly.

Wire layout of one tunnel packet (docs/PROTOCOL.md is the full description):

     0       1       2       3       4               8                      16
    +-------+-------+-------+-------+---------------+----------------------+
    |v|l|typ|  big  | index | count |   key_index   |   counter (64 bit)   |  header, 16 bytes
    +-------+-------+-------+-------+---------------+----------------------+
    |  payload: fragment `index` of `count` of a frame (ciphertext at encrypt)|
    +-----------------------------------------------------------------------+
    |  tag: HMAC-SHA256(mac_key, header || payload)[0:16]   (not at none)  |
    +-----------------------------------------------------------------------+

    v: version 1 (2 bits)   l: level 0 none, 1 auth, 2 encrypt   typ: packet type
    big: how many leading fragments hold one byte more than the others
    The MAC covers every byte before it. Fragments of one frame carry consecutive counters;
    base = counter - index names the frame.

Outbound flow (seal.pxi): check -> plan n fragments -> ChaCha20 the whole frame in place with
nonce key_index || base -> per fragment: header, slice, tag -> scattered datagrams.

Inbound flow (open.pxi): header and fragment fields -> level -> session -> key index -> tag
(constant time) -> replay window -> deliver, or copy into reassembly and, with the last
fragment, decrypt the frame in one pass.

Invariants:
- A (key, nonce) pair never repeats: keys are per (sender nonce, challenge, key index), the
  sender nonce is fresh per process, and base counters only grow within a process
  (docs/SECURITY.md).
- The replay window moves only after a packet authenticated; no fragment enters reassembly
  before it authenticated.
- Per-packet functions are noexcept nogil: they never raise and never allocate; every drop
  is counted under a DROP_* reason.
"""

cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from libc.errno cimport errno, EAGAIN, EINTR, EIO, EINVAL, EMSGSIZE, ENOPROTOOPT
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcmp, memcpy, memmove, memset

from etun._openssl cimport (
    EVP_CIPHER_CTX_new, EVP_CIPHER_CTX_free, EVP_chacha20, EVP_EncryptInit_ex,
    EVP_EncryptUpdate, SHA256_Init, SHA256_Update, SHA256_Final, SHA256,
    CRYPTO_memcmp, OPENSSL_cleanse, OpenSSL_version, OPENSSL_VERSION,
    ERR_get_error, ERR_error_string_n,
)
from etun._linux cimport (
    pthread_mutex_init, pthread_mutex_destroy, pthread_mutex_lock, pthread_mutex_unlock,
    pthread_mutex_trylock,
    clock_gettime, timespec, CLOCK_MONOTONIC, CLOCK_MONOTONIC_COARSE,
    iovec, writev, msghdr, mmsghdr, cmsghdr, CMSG_FIRSTHDR, CMSG_NXTHDR, CMSG_DATA, CMSG_SPACE,
    CMSG_LEN, recvmmsg, sendmmsg, getsockopt, socklen_t, SOL_SOCKET, SOL_PACKET, SO_RXQ_OVFL,
    MSG_DONTWAIT, MSG_TRUNC, IPPROTO_UDP, UDP_SEGMENT, UDP_GRO, tpacket_auxdata, tpacket_stats,
    PACKET_AUXDATA, PACKET_STATISTICS, TP_STATUS_VLAN_VALID, TP_STATUS_VLAN_TPID_VALID,
    pollfd, poll, POLLIN, read, write, close, eventfd, EFD_NONBLOCK, EFD_CLOEXEC,
    sched_yield, pthread_self, pthread_setname_np,
)

include "wire.pxi"
include "crypto.pxi"
include "replay.pxi"
include "frag.pxi"
include "reasm.pxi"
include "bucket.pxi"
include "rxkeys.pxi"
include "seal.pxi"
include "open.pxi"
include "filter.pxi"
include "lanio.pxi"
include "udpio.pxi"
include "gso.pxi"
include "gro.pxi"
include "ctlq.pxi"
include "pump.pxi"


LEVELS = {"none": LEVEL_NONE, "auth": LEVEL_AUTH, "encrypt": LEVEL_ENCRYPT}
LEVEL_NAMES = {v: k for k, v in LEVELS.items()}

# Same order as the C_* / DROP_* enum in _fast.pxd; `etun status` shows these names.
COUNTER_NAMES = (
    "frames", "bytes", "packets", "fragments", "reassembled", "control", "superframes",
    "malformed", "level_mismatch", "no_session", "key_index", "auth", "replay",
    "frag_inconsistent", "frag_timeout", "frag_evicted", "runt", "oversized", "filter",
    "send_error", "socket_overflow", "own_tunnel", "crypto_error", "control_queue",
)
FIRST_DROP = DROP_MALFORMED
DROP_REASONS = COUNTER_NAMES[DROP_MALFORMED:]
assert len(COUNTER_NAMES) == N_COUNTERS

HEADER_SIZE = HEADER_LEN
TAG_SIZE = TAG_LEN
VNET_HDR_SIZE = VNET_HDR_LEN
MIN_FRAME = MIN_FRAME_LEN
MAX_FRAME = MAX_FRAME_LEN
MAX_PACKET_RANGE = (MIN_MAX_PACKET, MAX_MAX_PACKET)
REPLAY_WINDOW_SIZE = REPLAY_WINDOW
KEY_AHEAD = KEY_LOOKAHEAD
FRAME = TYPE_FRAME
FRAME_VNET = TYPE_FRAME_VNET
HELLO = TYPE_HELLO
PROBE = TYPE_PROBE
PROBE_REPLY = TYPE_PROBE_REPLY
CONTROL_TYPES = (TYPE_HELLO, TYPE_PROBE, TYPE_PROBE_REPLY)
NIC_INGRESS = FILTER_NIC_INGRESS
TUNNEL_INGRESS = FILTER_TUNNEL_INGRESS


class Dropped(Exception):
    """A control packet failed its checks; `reason` is a COUNTER_NAMES drop reason."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


cdef uint64_t monotonic_ms() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000 + <uint64_t>ts.tv_nsec // 1000000


cdef double monotonic_s() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


def openssl_error(call):
    """The pending libcrypto error as one line naming the call that failed."""
    cdef char buf[256]
    cdef unsigned long e = ERR_get_error()
    if e == 0:
        return f"{call} failed"
    ERR_error_string_n(e, buf, sizeof(buf))
    return f"{call} failed: {buf.decode(errors='replace')}"


def openssl_version():
    """The libcrypto this module runs against, e.g. "OpenSSL 3.0.19 27 Jan 2026"."""
    return OpenSSL_version(OPENSSL_VERSION).decode()


def payload_max(level, max_packet):
    """Largest payload per packet (P in PROTOCOL.md §2)."""
    return frag_payload_max(level, max_packet)


cdef void advance_clock(dp_state *d, object now_ms):
    """Move the datapath clock to now (or to a test's now_ms); it never goes back."""
    cdef uint64_t t = monotonic_ms() if now_ms is None else <uint64_t>now_ms
    if t > d.now_ms:
        d.now_ms = t


cdef bytes check_key(object key, str what):
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_LEN:
        raise ValueError(f"{what} must be {KEY_LEN} bytes")
    return bytes(key)


cdef check_direction(int direction):
    if direction not in (FILTER_NIC_INGRESS, FILTER_TUNNEL_INGRESS):
        raise ValueError("direction must be FILTER_NIC_INGRESS or FILTER_TUNNEL_INGRESS")


cdef class Datapath:
    """One site's datapath: the send side (seal) and the receive side (open) with their keys.

    Datapath(level, max_packet=800, reassembly_kib=4096, reassembly_timeout_ms=1000)
    """

    def __cinit__(self, int level, int max_packet=800, int reassembly_kib=4096,
                  int reassembly_timeout_ms=1000):
        cdef int k
        if level not in (LEVEL_NONE, LEVEL_AUTH, LEVEL_ENCRYPT):
            raise ValueError(f"level must be 0, 1 or 2, got {level}")
        if not MIN_MAX_PACKET <= max_packet <= MAX_MAX_PACKET:
            raise ValueError(f"max_packet must be {MIN_MAX_PACKET}..{MAX_MAX_PACKET}, got {max_packet}")
        if not 64 <= reassembly_kib <= 1048576:
            raise ValueError(f"reassembly_kib must be 64..1048576, got {reassembly_kib}")
        if not 10 <= reassembly_timeout_ms <= 60000:
            raise ValueError(f"reassembly_timeout_ms must be 10..60000, got {reassembly_timeout_ms}")
        self.d = <dp_state *>calloc(1, sizeof(dp_state))
        self.work_tx = <uint8_t *>calloc(1, MAX_PAYLOAD_LEN + TAILROOM)
        self.work_rx = <uint8_t *>calloc(1, 65536 + TAILROOM)
        self.scratch = <uint8_t *>calloc(1, MAX_MAX_PACKET + TAILROOM)
        if self.d == NULL or self.work_tx == NULL or self.work_rx == NULL or self.scratch == NULL:
            raise MemoryError("datapath state")
        cdef dp_state *d = self.d
        d.level = level
        d.max_packet = max_packet
        d.tag_len = TAG_LEN if level != LEVEL_NONE else 0
        d.payload_max = frag_payload_max(level, max_packet)
        d.rx_cur = d.rx_prev = d.rx_next = d.rx_trial = d.rx_old = -1
        d.now_ms = monotonic_ms()
        bucket_fill(&d.derive, DERIVE_PER_SEC, DERIVE_BURST, d.now_ms)
        bucket_fill(&d.ctl_foreign, CONTROL_PER_SEC, CONTROL_BURST, d.now_ms)
        bucket_fill(&d.ctl_other, HELLO_PER_SEC, HELLO_BURST, d.now_ms)
        if pthread_mutex_init(&d.send_lock, NULL) != 0 or pthread_mutex_init(&d.recv_lock, NULL) != 0:
            raise OSError("pthread_mutex_init failed")
        d.send_keys.cipher = EVP_CIPHER_CTX_new()
        if d.send_keys.cipher == NULL:
            raise MemoryError(openssl_error("EVP_CIPHER_CTX_new"))
        for k in range(5):
            d.rxk[k].keys.cipher = EVP_CIPHER_CTX_new()
            if d.rxk[k].keys.cipher == NULL:
                raise MemoryError(openssl_error("EVP_CIPHER_CTX_new"))
        if reasm_init(&d.reasm, <uint64_t>reassembly_kib * 1024, reassembly_timeout_ms) != 0:
            raise MemoryError("reassembly table")
        self.set_filter(FILTER_NIC_INGRESS, True, ())
        self.set_filter(FILTER_TUNNEL_INGRESS, True, ())

    def __dealloc__(self):
        cdef int k
        cdef dp_state *d = self.d
        if d != NULL:
            crypto_keys_wipe(&d.send_keys)
            EVP_CIPHER_CTX_free(d.send_keys.cipher)
            for k in range(5):
                crypto_keys_wipe(&d.rxk[k].keys)
                EVP_CIPHER_CTX_free(d.rxk[k].keys.cipher)
            reasm_free(&d.reasm)
            filter_free(<filter_table *>d.filt[0])
            filter_free(<filter_table *>d.filt[1])
            pthread_mutex_destroy(&d.send_lock)
            pthread_mutex_destroy(&d.recv_lock)
            OPENSSL_cleanse(d, sizeof(dp_state))
            free(d)
            self.d = NULL
        free(self.work_tx)
        free(self.work_rx)
        free(self.scratch)

    # -- properties ----------------------------------------------------------------------

    @property
    def level(self):
        return self.d.level

    @property
    def max_packet(self):
        return self.d.max_packet

    @property
    def payload_max(self):
        return self.d.payload_max

    @property
    def send_index(self):
        """Key index the next frame is sealed under, or None without a send session."""
        return self.d.send_keys.index if self.d.send_ready else None

    @property
    def send_counter(self):
        """Counter of the next packet sealed."""
        return self.d.send_counter

    @property
    def recv_index(self):
        """Current key index of the receive session, or None without one."""
        cdef dp_state *d = self.d
        if not d.recv_ready or d.rx_cur < 0:
            return None
        return d.rxk[d.rx_cur].keys.index if d.level != LEVEL_NONE else 0

    @property
    def last_drop(self):
        """Reason of the drop caused by the latest open() call, or None."""
        return COUNTER_NAMES[self.d.last_drop] if self.d.last_drop else None

    # -- sessions ------------------------------------------------------------------------

    def set_send_session(self, secret=b"", unsigned int index=0):
        """Seal under session secret `secret` (32 bytes; ignored at none) from key index `index`.

        The counter is not reset: it belongs to this process, whatever the session.
        """
        cdef dp_state *d = self.d
        cdef bytes key = check_key(secret, "send secret") if d.level != LEVEL_NONE else bytes(KEY_LEN)
        cdef int rc = 0
        pthread_mutex_lock(&d.send_lock)
        memcpy(d.send_secret, PyBytes_AS_STRING(key), KEY_LEN)
        if d.level != LEVEL_NONE:
            rc = crypto_keys_derive(&d.send_keys, d.send_secret, index)
        else:
            d.send_keys.index = 0             # no keys at none: key_index stays 0 (PROTOCOL §3.2)
        d.send_ready = rc == 0
        pthread_mutex_unlock(&d.send_lock)
        if rc != 0:
            raise RuntimeError(openssl_error("deriving send keys"))

    def rotate_send(self):
        """Move the send side to the next key index (hitless: the receiver holds `next`);
        nothing to do at level none, which has no keys."""
        cdef dp_state *d = self.d
        cdef int rc = 0
        if not d.send_ready:
            raise RuntimeError("no send session to rotate")
        if d.send_keys.index == 0xFFFFFFFF:
            # 2**32 rotations (16,000 years at the default rekey): the session needs renewing.
            raise OverflowError("key index space of this session exhausted")
        pthread_mutex_lock(&d.send_lock)
        if d.level != LEVEL_NONE:
            rc = crypto_keys_derive(&d.send_keys, d.send_secret, d.send_keys.index + 1)
            d.send_ready = rc == 0
        pthread_mutex_unlock(&d.send_lock)
        if rc != 0:
            raise RuntimeError(openssl_error("deriving send keys"))

    def set_recv_session(self, secret=b""):
        """Accept data under session secret `secret` from key index 0 on; the previous
        session stays acceptable at its current index until the next switch."""
        cdef dp_state *d = self.d
        cdef bytes key = check_key(secret, "receive secret") if d.level != LEVEL_NONE else bytes(KEY_LEN)
        cdef int rc
        pthread_mutex_lock(&d.recv_lock)
        rc = rxkeys_new_session(d, <const uint8_t *>PyBytes_AS_STRING(key))
        pthread_mutex_unlock(&d.recv_lock)
        if rc != 0:
            raise RuntimeError(openssl_error("deriving receive keys"))

    def set_control_key(self, control_key):
        """Let HELLOs that authenticate under this key past the control-queue rate limit."""
        cdef dp_state *d = self.d
        key = check_key(control_key, "control key")
        pthread_mutex_lock(&d.recv_lock)
        d.ctl_ready = crypto_mac_init(&d.ctl_mac, <const uint8_t *>PyBytes_AS_STRING(key), KEY_LEN) == 0
        pthread_mutex_unlock(&d.recv_lock)
        if not d.ctl_ready:
            raise RuntimeError(openssl_error("HMAC key setup"))

    def set_peer_hello_sender(self, sender):
        """The peer's current sender nonce (that of our receive session): its fresh HELLOs
        reach the control queue without the rate limit other senders' HELLOs get."""
        cdef dp_state *d = self.d
        if not isinstance(sender, bytes) or len(sender) != 16:
            raise ValueError("a sender nonce is 16 bytes")
        pthread_mutex_lock(&d.recv_lock)
        memcpy(d.ctl_peer, <const char *>sender, 16)
        d.ctl_peer_set = True
        pthread_mutex_unlock(&d.recv_lock)

    def catch_up_recv(self, unsigned int index):
        """The peer sends under key index `index` of our receive session (from a fresh,
        authenticated HELLO): make it current if it lies beyond next. True if it did."""
        cdef dp_state *d = self.d
        cdef int rc
        pthread_mutex_lock(&d.recv_lock)
        rc = rxkeys_jump(d, index)
        pthread_mutex_unlock(&d.recv_lock)
        if rc < 0:
            raise RuntimeError(openssl_error("deriving receive keys"))
        return rc == 1

    # -- filters -------------------------------------------------------------------------

    def set_filter(self, int direction, bint default_allow, rules):
        """Install a compiled filter: rules are (allow, kind, value) with kind "mac" (6 bytes),
        "oui" (3 bytes) or "ethertype" (int), in configuration order."""
        cdef dp_state *d = self.d
        cdef filter_table *t
        cdef filter_table *old
        cdef uint32_t i, nmac = 0, noui = 0
        cdef pthread_mutex_t *lock
        check_direction(direction)
        if self.engines:
            # The capture side reads the nic_ingress table outside any lock: swapping it
            # under running pumps could free it mid-read.
            raise RuntimeError("filters are installed before an Engine is built on this datapath")
        rules = list(rules)
        if len(rules) > FILTER_MAX_RULES:
            raise ValueError(f"at most {FILTER_MAX_RULES} rules")
        for _, kind, _ in rules:
            nmac += kind == "mac"
            noui += kind == "oui"
        t = <filter_table *>calloc(1, sizeof(filter_table))
        if t == NULL:
            raise MemoryError("filter table")
        t.default_allow = default_allow
        t.nrules = len(rules)
        t.allow = <uint8_t *>calloc(len(rules) + 1, 1)
        t.hits = <uint64_t *>calloc(len(rules) + 1, sizeof(uint64_t))
        t.seen = <uint64_t *>calloc(65536, sizeof(uint64_t))
        if (t.allow == NULL or t.hits == NULL or t.seen == NULL
                or (nmac and filter_hash_init(&t.mac, nmac) != 0)
                or (noui and filter_hash_init(&t.oui, noui) != 0)):
            filter_free(t)
            raise MemoryError("filter table")
        for i, (allow, kind, value) in enumerate(rules):
            t.allow[i] = bool(allow)
            if kind == "mac" and len(value) == 6:
                filter_hash_put(&t.mac, int.from_bytes(value, "big"), i)
            elif kind == "oui" and len(value) == 3:
                filter_hash_put(&t.oui, int.from_bytes(value, "big"), i)
            elif kind == "ethertype" and 0x600 <= value <= 0xFFFF:
                if t.ethertype == NULL:
                    t.ethertype = <uint16_t *>malloc(65536 * sizeof(uint16_t))
                    if t.ethertype == NULL:
                        filter_free(t)
                        raise MemoryError("filter table")
                    memset(t.ethertype, 0xFF, 65536 * sizeof(uint16_t))
                if t.ethertype[value] == FILTER_NONE:
                    t.ethertype[value] = <uint16_t>i
            else:
                filter_free(t)
                raise ValueError(f"rule {i + 1}: bad {kind} {value!r}")
        lock = &d.send_lock if direction == FILTER_NIC_INGRESS else &d.recv_lock
        pthread_mutex_lock(lock)
        old = <filter_table *>d.filt[direction]
        d.filt[direction] = t
        pthread_mutex_unlock(lock)
        filter_free(old)

    def filter_check(self, int direction, frame):
        """Decide one frame as the pump would (and count it); (allowed, rule index or None)."""
        cdef const uint8_t[:] f = frame
        cdef int verdict
        check_direction(direction)
        t = <filter_table *>self.d.filt[direction]
        verdict = filter_frame(t, &f[0] if f.shape[0] else NULL, f.shape[0])
        if verdict >= 0:
            return bool(verdict & 1), verdict >> 1
        return verdict == -1, None

    def filter_stats(self, int direction):
        """{"rules": [hits per rule], "default": hits, "ethertypes": {EtherType: frames}}."""
        cdef filter_table *t
        cdef uint32_t i
        check_direction(direction)
        t = <filter_table *>self.d.filt[direction]
        seen = {i: t.seen[i] for i in range(65536) if t.seen[i]}
        return {"rules": [t.hits[i] for i in range(t.nrules)], "default": t.default_hits,
                "ethertypes": seen}

    # -- packets -------------------------------------------------------------------------

    def seal(self, frame, int frame_type=TYPE_FRAME):
        """Seal one frame; returns its datagrams (UDP payloads) in order."""
        cdef dp_state *d = self.d
        cdef const uint8_t[:] view = frame
        cdef Py_ssize_t length = view.shape[0]
        cdef pkt_ref pkts[MAX_FRAGS]
        cdef int n, i
        if frame_type not in (TYPE_FRAME, TYPE_FRAME_VNET):
            raise ValueError(f"frame_type must be FRAME or FRAME_VNET, got {frame_type}")
        if length > MAX_PAYLOAD_LEN:
            d.ctr_tx[DROP_OVERSIZED] += 1
            return []
        if length:
            memcpy(self.work_tx, &view[0], length)
        pthread_mutex_lock(&d.send_lock)
        n = seal_frame(d, self.work_tx, <uint32_t>length, <uint8_t>frame_type, pkts)
        pthread_mutex_unlock(&d.send_lock)
        out = []
        for i in range(n):
            out.append(PyBytes_FromStringAndSize(<char *>pkts[i].meta, HEADER_LEN)
                       + PyBytes_FromStringAndSize(<char *>pkts[i].body, pkts[i].body_len)
                       + PyBytes_FromStringAndSize(<char *>pkts[i].meta + HEADER_LEN, d.tag_len))
        return out

    def open(self, datagram, now_ms=None):
        """Open one datagram; returns the frames it completed as [(frame_type, frame)].

        A control packet comes back as [(its type, the whole datagram)]. A drop returns []
        and sets last_drop.
        """
        cdef dp_state *d = self.d
        cdef const uint8_t[:] view = datagram
        cdef Py_ssize_t length = view.shape[0]
        cdef frame_ref f
        cdef int rc
        if length > 65535:
            raise ValueError("a UDP datagram holds at most 65535 bytes")
        if length:
            memcpy(self.work_rx, &view[0], length)
        pthread_mutex_lock(&d.recv_lock)
        advance_clock(d, now_ms)
        reasm_expire(&d.reasm, d.now_ms, d.ctr_rx)
        rc = open_packet(d, self.work_rx, <uint32_t>length, &f, self.scratch)
        result = []
        if rc == OPEN_FRAME:
            result.append((f.ftype, PyBytes_FromStringAndSize(<char *>f.data, f.length)))
            open_release(d, &f)
        elif rc == OPEN_CONTROL:
            result.append((self.work_rx[0] & 15, bytes(datagram)))
        pthread_mutex_unlock(&d.recv_lock)
        return result

    def expire(self, now_ms=None):
        """Discard incomplete frames older than the reassembly timeout."""
        cdef dp_state *d = self.d
        pthread_mutex_lock(&d.recv_lock)
        advance_clock(d, now_ms)
        reasm_expire(&d.reasm, d.now_ms, d.ctr_rx)
        pthread_mutex_unlock(&d.recv_lock)

    def reassembly_in_use(self):
        """Reassembly slots holding a frame in progress (or in delivery)."""
        return reasm_in_use(&self.d.reasm)

    def reassembly_capacity(self):
        """(small slots, large slots, bytes of buffers) fixed at construction."""
        t = &self.d.reasm
        return (t.cls[0].count, t.cls[1].count,
                t.cls[0].count * SMALL_BUF_LEN + t.cls[1].count * LARGE_BUF_LEN)

    def counters(self):
        """{"tx": {name: count}, "rx": {name: count}} for every counter and drop reason."""
        cdef dp_state *d = self.d
        return {
            "tx": {COUNTER_NAMES[i]: d.ctr_tx[i] for i in range(N_COUNTERS)},
            "rx": {COUNTER_NAMES[i]: d.ctr_rx[i] + d.ctr_ctl[i] for i in range(N_COUNTERS)},
        }

    def count_rx_drop(self, str reason):
        """Count a drop decided by the control plane (e.g. a HELLO that failed its checks).

        Kept apart from the rx pump's own counters, which only the pump thread writes.
        """
        i = COUNTER_NAMES.index(reason)
        if i < DROP_MALFORMED:
            raise ValueError(f"{reason} is not a drop reason")
        self.d.ctr_ctl[i] += 1

    # -- benchmarks (in-process, GIL released, no I/O) -----------------------------------

    def bench_seal(self, int frame_len, double seconds, bint filtered=False):
        """Seal frames of `frame_len` bytes for about `seconds`; returns (frames, elapsed).
        `filtered`: pass each frame through the nic_ingress filter first, as the pump does."""
        cdef dp_state *d = self.d
        cdef filter_table *filt = <filter_table *>d.filt[FILTER_NIC_INGRESS]
        cdef pkt_ref pkts[MAX_FRAGS]
        cdef uint64_t frames = 0
        cdef int i, n = 0
        cdef double t0, t1 = 0.0
        if not MIN_FRAME_LEN <= frame_len <= MAX_FRAME_LEN:
            raise ValueError("frame_len out of range")
        if not d.send_ready:
            raise RuntimeError("no send session")
        for i in range(frame_len):
            self.work_tx[i] = <uint8_t>(i * 7)
            self.work_rx[i] = <uint8_t>(i * 7)
        with nogil:
            pthread_mutex_lock(&d.send_lock)
            t0 = monotonic_s()
            while True:
                for _ in range(256):
                    # The filter reads a pristine copy: seal_frame encrypts work_tx in place.
                    if filtered and not filter_allows(filt, self.work_rx, frame_len):
                        continue
                    n = seal_frame(d, self.work_tx, frame_len, TYPE_FRAME, pkts)
                frames += 256
                t1 = monotonic_s()
                if n < 0 or t1 - t0 >= seconds:
                    break
            pthread_mutex_unlock(&d.send_lock)
        if n < 0:
            raise RuntimeError(f"seal failed: {COUNTER_NAMES[-n]}")
        return frames, t1 - t0

    def bench_crypto_bound(self, int frame_len, double seconds):
        """libcrypto's own cost for one frame at this level, with nothing of etun around it:
        one ChaCha20 pass over the frame and one HMAC per fragment. Returns (frames, elapsed)."""
        d = self.d
        cdef keyset *k = &d.send_keys
        cdef uint8_t head[HEADER_LEN]
        cdef uint8_t tag[32]
        cdef uint32_t n, q, r, i, off
        cdef uint64_t frames = 0
        cdef double t0, t1 = 0.0
        cdef int j
        if not MIN_FRAME_LEN <= frame_len <= MAX_FRAME_LEN or not d.send_ready:
            raise ValueError("frame_len out of range, or no send session")
        memset(head, 0, HEADER_LEN)
        n = frag_count(frame_len, d.payload_max)
        q = frame_len // n
        r = frame_len % n
        with nogil:
            t0 = monotonic_s()
            while True:
                for j in range(256):
                    if d.level == LEVEL_ENCRYPT:
                        crypto_xor(k, frames + j, self.work_tx, self.work_tx, frame_len)
                    if d.level != LEVEL_NONE:
                        off = 0
                        for i in range(n):
                            crypto_mac(&k.mac, head, HEADER_LEN, self.work_tx + off, q + (i < r), tag)
                            off += q + (i < r)
                frames += 256
                t1 = monotonic_s()
                if t1 - t0 >= seconds:
                    break
        return frames, t1 - t0

    def bench_open(self, datagrams, double seconds, bint filtered=False):
        """Open the given datagrams over and over for about `seconds`; returns (frames, elapsed).

        The replay windows are reset between rounds, which is the only thing the real
        datapath would not do. `filtered`: pass each frame through the tunnel_ingress filter.
        """
        cdef dp_state *d = self.d
        cdef filter_table *filt = <filter_table *>d.filt[FILTER_TUNNEL_INGRESS]
        cdef Py_ssize_t count = len(datagrams), total = 0, j
        cdef uint8_t *arena
        cdef uint32_t *offs
        cdef uint32_t *lens
        cdef frame_ref f
        cdef uint64_t frames = 0
        cdef int rc = 0, k, bad = 0
        cdef double t0, t1 = 0.0
        for dg in datagrams:
            total += len(dg) + TAILROOM
        arena = <uint8_t *>calloc(total + TAILROOM, 1)
        offs = <uint32_t *>malloc(count * sizeof(uint32_t))
        lens = <uint32_t *>malloc(count * sizeof(uint32_t))
        if arena == NULL or offs == NULL or lens == NULL:
            free(arena)
            free(offs)
            free(lens)
            raise MemoryError("bench arena")
        total = 0
        for j, dg in enumerate(datagrams):
            memcpy(arena + total, <const char *>dg, len(dg))
            offs[j] = <uint32_t>total
            lens[j] = <uint32_t>len(dg)
            total += len(dg) + TAILROOM
        with nogil:
            pthread_mutex_lock(&d.recv_lock)
            t0 = monotonic_s()
            while True:
                for k in range(5):
                    replay_reset(&d.rxk[k].window)
                for j in range(count):
                    rc = open_packet(d, arena + offs[j], lens[j], &f, self.scratch)
                    if rc == OPEN_FRAME:
                        if not filtered or filter_allows(filt, f.data, f.length):
                            frames += 1
                        open_release(d, &f)
                    elif rc < 0:
                        bad = -rc
                t1 = monotonic_s()
                if bad or t1 - t0 >= seconds:
                    break
            pthread_mutex_unlock(&d.recv_lock)
        free(arena)
        free(offs)
        free(lens)
        if bad:
            raise RuntimeError(f"open failed: {COUNTER_NAMES[bad]}")
        return frames, t1 - t0


# -- control packets (Python control plane; not per data packet) -------------------------

def seal_control(int level, control_key, int ptype, unsigned long long counter, payload):
    """A HELLO/PROBE/PROBE_REPLY datagram: header, payload, tag under the control key."""
    cdef mac_state m
    cdef uint8_t head[HEADER_LEN]
    cdef uint8_t tag[32]
    cdef const uint8_t[:] body = payload
    cdef Py_ssize_t blen = body.shape[0]
    if ptype not in CONTROL_TYPES:
        raise ValueError(f"not a control type: {ptype}")
    wire_put_header(head, level, ptype, 0, 0, 1, 0, counter)
    out = PyBytes_FromStringAndSize(<char *>head, HEADER_LEN) + bytes(payload)
    if level == LEVEL_NONE:
        return out
    key = check_key(control_key, "control key")
    if crypto_mac_init(&m, <const uint8_t *>PyBytes_AS_STRING(key), KEY_LEN) != 0:
        raise RuntimeError(openssl_error("HMAC key setup"))
    crypto_mac(&m, head, HEADER_LEN, &body[0] if blen else NULL, blen, tag)
    OPENSSL_cleanse(&m, sizeof(mac_state))
    return out + PyBytes_FromStringAndSize(<char *>tag, TAG_LEN)


def open_control(int level, control_key, datagram):
    """Check a control datagram; returns (ptype, counter, payload) or raises Dropped(reason)."""
    cdef mac_state m
    cdef const uint8_t[:] dg = datagram
    cdef Py_ssize_t length = dg.shape[0]
    cdef uint8_t b0
    cdef int lvl, ptype
    cdef Py_ssize_t tag_len
    cdef bint ok
    if length < HEADER_LEN:
        raise Dropped("malformed")
    b0 = dg[0]
    lvl = (b0 >> 4) & 3
    ptype = b0 & 15
    if (b0 >> 6) != WIRE_VERSION or lvl == 3 or ptype not in CONTROL_TYPES:
        raise Dropped("malformed")
    tag_len = TAG_LEN if lvl != LEVEL_NONE else 0
    if length < HEADER_LEN + tag_len or dg[1] != 0 or dg[2] != 0 or dg[3] != 1:
        raise Dropped("malformed")
    if wire_be32(&dg[4]) != 0:
        raise Dropped("malformed")
    if lvl != level:
        raise Dropped("level_mismatch")
    if level != LEVEL_NONE:
        key = check_key(control_key, "control key")
        if crypto_mac_init(&m, <const uint8_t *>PyBytes_AS_STRING(key), KEY_LEN) != 0:
            raise RuntimeError(openssl_error("HMAC key setup"))
        ok = crypto_tag_ok(&m, &dg[0], &dg[HEADER_LEN], length - HEADER_LEN - tag_len,
                           &dg[length - tag_len])
        OPENSSL_cleanse(&m, sizeof(mac_state))
        if not ok:
            raise Dropped("auth")
    return ptype, wire_be64(&dg[8]), bytes(dg[HEADER_LEN:length - tag_len])


# -- primitives, exposed for the RFC test vectors ----------------------------------------

def chacha20(key, nonce, data, unsigned int counter=0):
    """RFC 8439 ChaCha20 of `data` under a 32-byte key, 12-byte nonce and block counter."""
    cdef EVP_CIPHER_CTX *ctx
    cdef uint8_t iv[16]
    cdef int outl = 0
    cdef const uint8_t[:] inp = data
    cdef Py_ssize_t n = inp.shape[0]
    key = check_key(key, "key")
    if len(nonce) != 12:
        raise ValueError("nonce must be 12 bytes")
    iv[0] = counter & 0xff
    iv[1] = (counter >> 8) & 0xff
    iv[2] = (counter >> 16) & 0xff
    iv[3] = (counter >> 24) & 0xff
    nonce_bytes = bytes(nonce)
    memcpy(iv + 4, <const char *>nonce_bytes, 12)
    out = PyBytes_FromStringAndSize(NULL, n)
    ctx = EVP_CIPHER_CTX_new()
    if ctx == NULL:
        raise MemoryError(openssl_error("EVP_CIPHER_CTX_new"))
    try:
        if EVP_EncryptInit_ex(ctx, EVP_chacha20(), NULL, <const uint8_t *>PyBytes_AS_STRING(key), iv) != 1:
            raise RuntimeError(openssl_error("EVP_EncryptInit_ex"))
        if n and EVP_EncryptUpdate(ctx, <uint8_t *>PyBytes_AS_STRING(out), &outl, &inp[0], <int>n) != 1:
            raise RuntimeError(openssl_error("EVP_EncryptUpdate"))
    finally:
        EVP_CIPHER_CTX_free(ctx)
    return out


def hmac_sha256(key, data):
    """HMAC-SHA256 (RFC 2104) through the datapath's precomputed-pad path; 32 bytes."""
    cdef mac_state m
    cdef uint8_t out[32]
    cdef const uint8_t[:] k = bytes(key)
    cdef const uint8_t[:] msg = bytes(data)
    if crypto_mac_init(&m, &k[0] if k.shape[0] else NULL, k.shape[0]) != 0:
        raise RuntimeError(openssl_error("HMAC key setup"))
    if crypto_mac(&m, &msg[0] if msg.shape[0] else NULL, msg.shape[0], NULL, 0, out) != 0:
        raise RuntimeError(openssl_error("HMAC"))
    return PyBytes_FromStringAndSize(<char *>out, 32)


def hkdf_expand(prk, info, int length):
    """HKDF-Expand with SHA-256 (RFC 5869 §2.3), as the datapath derives per-index keys."""
    cdef const uint8_t[:] p = bytes(prk)
    cdef const uint8_t[:] i = bytes(info)
    if not 0 < length <= 255 * 32 or i.shape[0] > 128 or p.shape[0] == 0:
        raise ValueError("hkdf_expand: length 1..8160, info up to 128 bytes, non-empty prk")
    out = PyBytes_FromStringAndSize(NULL, length)
    if crypto_hkdf_expand(&p[0], p.shape[0], &i[0] if i.shape[0] else NULL, i.shape[0],
                          <uint8_t *>PyBytes_AS_STRING(out), length) != 0:
        raise RuntimeError(openssl_error("HKDF-Expand"))
    return out


cdef class ReplayWindow:
    """The datapath's RFC 6479 window on its own, for the replay table test."""

    cdef replay_window w

    def __cinit__(self):
        replay_reset(&self.w)

    def accept(self, unsigned long long counter):
        """Whether `counter` is accepted (and now remembered)."""
        return replay_accept(&self.w, counter)

    def reset(self):
        replay_reset(&self.w)


# -- the engine: both pumps over real sockets ---------------------------------------------

def clock_ms():
    """The pumps' clock (CLOCK_MONOTONIC_COARSE) in milliseconds, for comparing timestamps."""
    return pump_clock_ms()


@cython.no_gc_clear    # __dealloc__ must still see self.datapath to release its filters
cdef class Engine:
    """Both pumps of one site over its LAN fd and UDP fd, and what Python shares with them.

    Engine(datapath, lan_fd, lan_kind, udp_fd, listen_port, gso, gro); run_tx() and run_rx()
    each block their calling thread, GIL released, until stop(). Run both: while the tx pump
    is parked (light traffic, and at the start) the rx pump reads the LAN for it.
    """

    cdef engine_state *e
    cdef Datapath datapath

    def __cinit__(self, Datapath datapath, int lan_fd, int lan_kind, int udp_fd, int listen_port,
                  bint gso, bint gro):
        cdef engine_state *e
        cdef int i
        cdef uint8_t *slot
        if lan_kind not in (LAN_PACKET, LAN_TAP):
            raise ValueError(f"lan_kind must be LAN_PACKET or LAN_TAP, got {lan_kind}")
        self.datapath = datapath
        datapath.engines += 1
        self.e = e = <engine_state *>calloc(1, sizeof(engine_state))
        if e == NULL:
            raise MemoryError("engine state")
        e.wake_fd = e.ctl_fd = e.kick_fd[PUMP_TX] = e.kick_fd[PUMP_RX] = -1
        e.dp = datapath.d
        e.lan_fd = lan_fd
        e.lan_kind = lan_kind
        e.udp_fd = udp_fd
        e.listen_port = <uint16_t>listen_port
        e.gso = gso
        e.gro = gro
        e.tx_parked = 1                # until the LAN brings a burst (pump.pxi)
        if (pthread_mutex_init(&e.peer_lock, NULL) != 0 or pthread_mutex_init(&e.ctl_lock, NULL) != 0
                or pthread_mutex_init(&e.tx_lock, NULL) != 0):
            raise OSError("pthread_mutex_init failed")
        e.frames = <uint8_t *>malloc(<size_t>TX_BATCH * FRAME_SLOT)
        e.pkts = <pkt_ref *>calloc(TX_PKTS, sizeof(pkt_ref))
        e.udp_out = <mmsghdr *>calloc(TX_PKTS, sizeof(mmsghdr))
        e.udp_out_iov = <iovec *>calloc(3 * TX_PKTS, sizeof(iovec))
        e.udp_out_cmsg = <uint8_t *>calloc(TX_PKTS, CMSG_ROOM)
        e.dgrams = <uint8_t *>malloc(<size_t>RX_BATCH * RX_SLOT)
        e.scratch = <uint8_t *>malloc(<size_t>OUT_BATCH * (MAX_MAX_PACKET + TAILROOM))
        e.ctl_buf = <uint8_t *>malloc(<size_t>CTL_SLOTS * CTL_MAX)
        e.seg_arena = <uint8_t *>malloc(SEG_ARENA_LEN)
        if (e.seg_arena == NULL or e.frames == NULL or e.pkts == NULL or e.udp_out == NULL or e.udp_out_iov == NULL
                or e.udp_out_cmsg == NULL or e.dgrams == NULL or e.scratch == NULL
                or e.ctl_buf == NULL):
            raise MemoryError("engine buffers")
        e.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        e.ctl_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        e.kick_fd[PUMP_TX] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        e.kick_fd[PUMP_RX] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if e.wake_fd < 0 or e.ctl_fd < 0 or e.kick_fd[PUMP_TX] < 0 or e.kick_fd[PUMP_RX] < 0:
            raise OSError(errno, "eventfd failed")
        for i in range(TX_BATCH):
            slot = e.frames + <size_t>i * FRAME_SLOT
            e.lan_in_iov[2 * i].iov_base = slot + 4
            e.lan_in_iov[2 * i].iov_len = VNET_HDR_LEN
            e.lan_in_iov[2 * i + 1].iov_base = slot + FRAME_AT
            e.lan_in_iov[2 * i + 1].iov_len = FRAME_SLOT - FRAME_AT - TAILROOM
            e.lan_in[i].msg_hdr.msg_iov = &e.lan_in_iov[2 * i]
            e.lan_in[i].msg_hdr.msg_iovlen = 2
            e.lan_in[i].msg_hdr.msg_control = &e.lan_in_cmsg[i * CMSG_ROOM]
        for i in range(RX_BATCH):
            e.udp_in_iov[i].iov_base = e.dgrams + <size_t>i * RX_SLOT
            e.udp_in_iov[i].iov_len = RX_SLOT - TAILROOM
            e.udp_in[i].msg_hdr.msg_iov = &e.udp_in_iov[i]
            e.udp_in[i].msg_hdr.msg_iovlen = 1
            e.udp_in[i].msg_hdr.msg_name = &e.udp_in_name[i * SOCKADDR_LEN]
            e.udp_in[i].msg_hdr.msg_control = &e.udp_in_cmsg[i * CMSG_ROOM]

    def __dealloc__(self):
        e = self.e
        if self.datapath is not None:
            self.datapath.engines -= 1
        if e == NULL:
            return
        if e.wake_fd >= 0:
            close(e.wake_fd)
        if e.ctl_fd >= 0:
            close(e.ctl_fd)
        if e.kick_fd[PUMP_TX] >= 0:
            close(e.kick_fd[PUMP_TX])
        if e.kick_fd[PUMP_RX] >= 0:
            close(e.kick_fd[PUMP_RX])
        free(e.frames)
        free(e.pkts)
        free(e.udp_out)
        free(e.udp_out_iov)
        free(e.udp_out_cmsg)
        free(e.dgrams)
        free(e.scratch)
        free(e.ctl_buf)
        free(e.seg_arena)
        pthread_mutex_destroy(&e.peer_lock)
        pthread_mutex_destroy(&e.ctl_lock)
        pthread_mutex_destroy(&e.tx_lock)
        free(e)
        self.e = NULL

    @property
    def control_fd(self):
        """An eventfd that becomes readable when control packets wait in pop_control()."""
        return self.e.ctl_fd

    def set_peer(self, sockaddr, bint roam=False):
        """Send to this raw sockaddr (struct sockaddr_in or sockaddr_in6 bytes) from now on;
        `roam`: the peer was seen there (counted), rather than configured or resolved."""
        cdef const uint8_t[:] sa = sockaddr
        if not 16 <= sa.shape[0] <= SOCKADDR_LEN:
            raise ValueError("sockaddr must be a struct sockaddr_in or sockaddr_in6")
        pthread_mutex_lock(&self.e.peer_lock)
        if not udp_addr_equal(&sa[0], sa.shape[0], self.e.peer, self.e.peer_len):
            memcpy(self.e.peer, &sa[0], sa.shape[0])
            self.e.peer_len = <socklen_t>sa.shape[0]
            self.e.peer_gen += 1
            if roam:
                self.e.peer_roams += 1
        pthread_mutex_unlock(&self.e.peer_lock)

    def peer(self):
        """(raw sockaddr or None, generation, roams): where we send, and how often it moved."""
        pthread_mutex_lock(&self.e.peer_lock)
        addr = PyBytes_FromStringAndSize(<char *>self.e.peer, self.e.peer_len) if self.e.peer_len else None
        gen, roams = self.e.peer_gen, self.e.peer_roams
        pthread_mutex_unlock(&self.e.peer_lock)
        return addr, gen, roams

    def run_tx(self):
        """Pump LAN -> tunnel in this thread until stop(); returns 0 or the LAN errno."""
        cdef int rc
        pthread_setname_np(pthread_self(), b"etun-tx")     # as top -H and perf show it
        with nogil:
            rc = pump_tx(self.e)
        return rc

    def run_rx(self):
        """Pump tunnel -> LAN in this thread until stop(); returns 0 or the UDP errno."""
        cdef int rc
        pthread_setname_np(pthread_self(), b"etun-rx")
        with nogil:
            rc = pump_rx(self.e)
        return rc

    @property
    def spin_us(self):
        return self.e.spin_us

    @spin_us.setter
    def spin_us(self, unsigned int value):
        self.e.spin_us = value

    def stop(self):
        cdef uint64_t one = 1
        self.e.stop = 1
        write(self.e.wake_fd, &one, sizeof(one))

    def pop_control(self):
        """Queued control packets as [(datagram, raw sockaddr)], oldest first."""
        cdef uint64_t junk
        cdef int slot
        e = self.e
        read(e.ctl_fd, &junk, sizeof(junk))
        out = []
        pthread_mutex_lock(&e.ctl_lock)
        while e.ctl_count:
            slot = e.ctl_head
            out.append((PyBytes_FromStringAndSize(<char *>e.ctl_buf + <size_t>slot * CTL_MAX, e.ctl_len[slot]),
                        PyBytes_FromStringAndSize(<char *>e.ctl_from + slot * SOCKADDR_LEN, e.ctl_fromlen[slot])))
            e.ctl_head = (e.ctl_head + 1) % CTL_SLOTS
            e.ctl_count -= 1
        pthread_mutex_unlock(&e.ctl_lock)
        return out

    def snapshot(self):
        """What the pumps know that counters do not: offloads in use and last activity."""
        e = self.e
        return {
            "gso": bool(e.gso),
            "gro": bool(e.gro),
            "gso_errno": e.gso_errno,
            "tx_parked": bool(e.tx_parked),
            "last_auth_ms": e.last_auth_ms,
            "last_send_ms": e.last_send_ms,
            "pumps": {name: e.pump_stats[i] for i, name in enumerate(PUMP_STAT_NAMES)},
        }


PUMP_STAT_NAMES = ("tx_wakeups", "tx_sleeps", "udp_sends", "udp_messages",
                   "rx_wakeups", "rx_sleeps", "rx_datagrams", "lan_sends", "tx_served_by_rx")

LAN_KIND_PACKET = LAN_PACKET
LAN_KIND_TAP = LAN_TAP


# -- software GRO and GSO on their own, for tests -----------------------------------------

def gro_merge(frames):
    """Run the LAN-side merging over plain frames as one batch; returns the LAN messages as
    bytes (a merged run starts with its 10-byte virtio_net_hdr; a plain frame gets a zero one)."""
    cdef Datapath holder = Datapath(LEVEL_NONE)
    cdef engine_state *e = <engine_state *>calloc(1, sizeof(engine_state))
    cdef int i, m, k
    cdef msghdr *h
    if e == NULL:
        raise MemoryError("engine state")
    keep = [bytes(f) for f in frames]
    try:
        if len(keep) > OUT_BATCH:
            raise ValueError(f"at most {OUT_BATCH} frames")
        e.dp = holder.d
        for i, f in enumerate(keep):
            e.out[i].data = <uint8_t *><const char *>f
            e.out[i].length = len(f)
            e.out[i].ftype = TYPE_FRAME
            e.out[i].slot = -1
        e.nout = len(keep)
        m = gro_plan(e)
        out = []
        for i in range(m):
            h = &e.lan_out[i].msg_hdr
            out.append(b"".join(PyBytes_FromStringAndSize(<char *>h.msg_iov[k].iov_base, h.msg_iov[k].iov_len)
                                for k in range(h.msg_iovlen)))
        return out
    finally:
        free(e)


def gso_split(packet):
    """Cut a virtio_net_hdr + super-frame into the frames etun's software GSO would seal."""
    cdef engine_state *e = <engine_state *>calloc(1, sizeof(engine_state))
    cdef const uint8_t[:] p = packet
    cdef uint32_t n, hdr, mss, payload, k, nseg, seglen
    cdef bytearray seg
    if e == NULL:
        raise MemoryError("engine state")
    try:
        if p.shape[0] <= VNET_HDR_LEN:
            raise ValueError("too short")
        n = p.shape[0] - VNET_HDR_LEN
        if gso_parse(e, 0, &p[VNET_HDR_LEN], n, &p[0], 0) != 0:
            raise ValueError("not a super-frame etun cuts")
        hdr, mss = e.gso_hdr[0], e.gso_mss[0]
        payload = n - hdr
        nseg = (payload + mss - 1) // mss
        out = []
        for k in range(nseg):
            seglen = mss if (k + 1) * mss <= payload else payload - k * mss
            seg = bytearray(hdr + seglen)
            memcpy(<uint8_t *>seg, &p[VNET_HDR_LEN], hdr)
            memcpy(<uint8_t *>seg + hdr, &p[VNET_HDR_LEN + hdr + k * mss], seglen)
            gso_fill(<uint8_t *>seg, &p[VNET_HDR_LEN], e.gso_l3[0], e.gso_l4[0], hdr, seglen, k, nseg,
                     mss, e.gso_tcp[0])
            out.append(bytes(seg))
        return out
    finally:
        free(e)
