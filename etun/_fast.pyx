# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False, embedsignature=True
"""The etun datapath: balanced fragmentation, ChaCha20 + HMAC-SHA256, anti-replay, reassembly.

This file is the Python-facing API only; the work is done in the .pxi fragments it includes,
each named after its job, and the declarations they share live in _fast.pxd.

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
  is counted under a DROP_* reason (drop.pxi).

Fragments, in the order they are included (each uses only what comes before it):
  clock     the millisecond and microsecond clocks
  pkt       byte order, the VLAN-tag walk, RFC 1071 checksums
  wire      the tunnel header
  crypto    ChaCha20, HMAC-SHA256, HKDF-Expand through libcrypto
  drop      counting drops, and the sampled drop trace
  bucket    token buckets
  replay    the RFC 6479 replay window
  frag      the balanced fragmentation plan
  reasm     the reassembly table
  rxkeys    receive key slots and their roles
  seal      outbound: frame -> datagrams
  open      inbound: datagram -> frame
  filter    MAC / OUI / EtherType filter tables
  udp       the UDP side: recvmmsg, sendmmsg with GSO
  gso       cutting super-frames from the LAN
  gro       merging TCP segments towards the LAN
  lan       the LAN side: capture and injection
  ctlq      the queue of control packets to Python
  pump      the two pump threads
  engine    the Engine: both pumps, their buffers, setup and teardown
  kat       known-answer primitives for the self-test and RFC vectors
  bench     `etun bench` loops
  testing   test-only entry points
"""

cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from libc.errno cimport errno, EAGAIN, EINTR, EIO, EINVAL, EMSGSIZE, ENOPROTOOPT
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcmp, memcpy, memmove, memset, strlen

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

include "clock.pxi"
include "pkt.pxi"
include "wire.pxi"
include "crypto.pxi"
include "drop.pxi"
include "bucket.pxi"
include "replay.pxi"
include "frag.pxi"
include "reasm.pxi"
include "rxkeys.pxi"
include "seal.pxi"
include "open.pxi"
include "filter.pxi"
include "udp.pxi"
include "gso.pxi"
include "gro.pxi"
include "lan.pxi"
include "ctlq.pxi"
include "pump.pxi"
include "engine.pxi"
include "kat.pxi"
include "bench.pxi"
include "testing.pxi"


LEVELS = {"none": LEVEL_NONE, "auth": LEVEL_AUTH, "encrypt": LEVEL_ENCRYPT}
LEVEL_NAMES = {v: k for k, v in LEVELS.items()}
CONTROL_TYPES = (TYPE_HELLO, TYPE_PROBE, TYPE_PROBE_REPLY)

# `etun status` shows these names: counters.h generates them with the C_* / DROP_* enums.
COUNTER_NAMES = tuple(etun_counter_names[i].decode() for i in range(N_COUNTERS))
DROP_REASONS = COUNTER_NAMES[FIRST_DROP_REASON:]
PUMP_STAT_NAMES = tuple(etun_pump_stat_names[i].decode() for i in range(N_PUMP_STATS))
DIRECTION_NAMES = {DIR_TX: "outbound", DIR_RX: "inbound"}


class Dropped(Exception):
    """A control packet failed its checks; `reason` is a COUNTER_NAMES drop reason."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def openssl_error(call):
    """The pending libcrypto error as one line naming the call that failed."""
    cdef char buf[256]
    cdef unsigned long e = ERR_get_error()
    if e == 0:
        return f"{call} failed"
    ERR_error_string_n(e, buf, sizeof(buf))
    return f"{call} failed: {buf.decode(errors='replace')}"


cdef str crypto_error(str what):
    """An error line for a crypto.pxi function that failed: `what`, and the libcrypto call."""
    return f"{what}: " + openssl_error(crypto_failed.decode())


def openssl_version():
    """The libcrypto this module runs against, e.g. "OpenSSL 3.0.19 27 Jan 2026"."""
    return OpenSSL_version(OPENSSL_VERSION).decode()


def now_ms():
    """The datapath's clock (clock_ms(): CLOCK_MONOTONIC_COARSE) in milliseconds, for comparing
    with the timestamps it reports."""
    return clock_ms()


cdef void advance_clock(dp_state *d, object now_ms):
    """Move the datapath clock to now (or to a test's now_ms); it never goes back."""
    cdef uint64_t t = clock_ms() if now_ms is None else <uint64_t>now_ms
    if t > d.now_ms:
        d.now_ms = t


cdef bytes check_secret(object secret, str what):
    if not isinstance(secret, (bytes, bytearray)) or len(secret) != SECRET_LEN:
        raise ValueError(f"{what} must be {SECRET_LEN} bytes")
    return bytes(secret)


cdef check_direction(int direction):
    if direction not in (FILTER_NIC_INGRESS, FILTER_TUNNEL_INGRESS):
        raise ValueError("direction must be FILTER_NIC_INGRESS or FILTER_TUNNEL_INGRESS")


FILTER_KINDS = {"mac": FILTER_KIND_MAC, "oui": FILTER_KIND_OUI, "ethertype": FILTER_KIND_ETHERTYPE}


cdef class Datapath:
    """One site's datapath: the send side (seal) and the receive side (open) with their keys.

    Datapath(level, max_packet=MAX_PACKET_DEFAULT, reassembly_kib=4096, reassembly_timeout_ms=1000)
    """

    def __cinit__(self, int level, int max_packet=MAX_PACKET_DEFAULT, int reassembly_kib=4096,
                  int reassembly_timeout_ms=1000):
        cdef int k
        cdef dp_state *d
        if level not in (LEVEL_NONE, LEVEL_AUTH, LEVEL_ENCRYPT):
            raise ValueError(f"level must be 0, 1 or 2, got {level}")
        if not MAX_PACKET_MIN <= max_packet <= MAX_PACKET_MAX:
            raise ValueError(f"max_packet must be {MAX_PACKET_MIN}..{MAX_PACKET_MAX}, got {max_packet}")
        if not 64 <= reassembly_kib <= 1048576:
            raise ValueError(f"reassembly_kib must be 64..1048576, got {reassembly_kib}")
        if not 10 <= reassembly_timeout_ms <= 60000:
            raise ValueError(f"reassembly_timeout_ms must be 10..60000, got {reassembly_timeout_ms}")
        self.d = d = <dp_state *>calloc(1, sizeof(dp_state))
        self.work_tx = <uint8_t *>calloc(1, MAX_PAYLOAD_LEN + TAILROOM)
        self.work_rx = <uint8_t *>calloc(1, UDP_DATAGRAM_MAX + TAILROOM)
        self.scratch = <uint8_t *>calloc(1, SCRATCH_LEN)
        if d == NULL or self.work_tx == NULL or self.work_rx == NULL or self.scratch == NULL:
            raise MemoryError("datapath state")
        d.level = level
        d.max_packet = max_packet
        d.tag_len = TAG_LEN if level != LEVEL_NONE else 0
        d.payload_max = frag_payload_max(level, max_packet)
        d.rx_cur = d.rx_prev = d.rx_next = d.rx_trial = d.rx_old = -1
        d.now_ms = clock_ms()
        bucket_fill(&d.derive, DERIVE_PER_SEC, DERIVE_BURST, d.now_ms)
        bucket_fill(&d.ctl_foreign, CONTROL_PER_SEC, CONTROL_BURST, d.now_ms)
        bucket_fill(&d.ctl_other, HELLO_PER_SEC, HELLO_BURST, d.now_ms)
        if (pthread_mutex_init(&d.send_lock, NULL) != 0 or pthread_mutex_init(&d.recv_lock, NULL) != 0
                or pthread_mutex_init(&d.trace_lock, NULL) != 0):
            raise OSError("pthread_mutex_init failed")
        d.send_keys.cipher = EVP_CIPHER_CTX_new()
        if d.send_keys.cipher == NULL:
            raise MemoryError(openssl_error("EVP_CIPHER_CTX_new"))
        for k in range(RX_SLOTS):
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
            for k in range(RX_SLOTS):
                crypto_keys_wipe(&d.rxk[k].keys)
                EVP_CIPHER_CTX_free(d.rxk[k].keys.cipher)
            reasm_free(&d.reasm)
            filter_free(d.filt[FILTER_NIC_INGRESS])
            filter_free(d.filt[FILTER_TUNNEL_INGRESS])
            pthread_mutex_destroy(&d.send_lock)
            pthread_mutex_destroy(&d.recv_lock)
            pthread_mutex_destroy(&d.trace_lock)
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
        """P: the largest payload per packet at this level and max_packet (PROTOCOL.md §2)."""
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
        cdef bytes key = check_secret(secret, "send secret") if d.level != LEVEL_NONE else bytes(SECRET_LEN)
        cdef int rc = 0
        pthread_mutex_lock(&d.send_lock)
        memcpy(d.send_secret, PyBytes_AS_STRING(key), SECRET_LEN)
        if d.level != LEVEL_NONE:
            rc = crypto_keys_derive(&d.send_keys, d.send_secret, index)
        else:
            d.send_keys.index = 0             # no keys at none: key_index stays 0 (PROTOCOL §3.2)
        d.send_ready = rc == 0
        pthread_mutex_unlock(&d.send_lock)
        if rc != 0:
            raise RuntimeError(crypto_error("deriving send keys"))

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
            raise RuntimeError(crypto_error("deriving send keys"))

    def set_recv_session(self, secret=b""):
        """Accept data under session secret `secret` from key index 0 on; the previous
        session stays acceptable at its current index until the next switch."""
        cdef dp_state *d = self.d
        cdef bytes key = check_secret(secret, "receive secret") if d.level != LEVEL_NONE else bytes(SECRET_LEN)
        cdef int rc
        pthread_mutex_lock(&d.recv_lock)
        rc = rxkeys_new_session(d, <const uint8_t *>PyBytes_AS_STRING(key))
        pthread_mutex_unlock(&d.recv_lock)
        if rc != 0:
            raise RuntimeError(crypto_error("deriving receive keys"))

    def set_control_key(self, control_key):
        """Let HELLOs that authenticate under this key past the control-queue rate limit."""
        cdef dp_state *d = self.d
        cdef int rc
        key = check_secret(control_key, "control key")
        pthread_mutex_lock(&d.recv_lock)
        rc = crypto_mac_init(&d.ctl_mac, <const uint8_t *>PyBytes_AS_STRING(key), SECRET_LEN)
        d.ctl_ready = rc == 0
        pthread_mutex_unlock(&d.recv_lock)
        if rc != 0:
            raise RuntimeError(crypto_error("HMAC key setup"))

    def set_peer_hello_sender(self, sender):
        """The peer's current sender nonce (that of our receive session): its fresh HELLOs
        reach the control queue without the rate limit other senders' HELLOs get."""
        cdef dp_state *d = self.d
        if not isinstance(sender, bytes) or len(sender) != NONCE_LEN:
            raise ValueError(f"a sender nonce is {NONCE_LEN} bytes")
        pthread_mutex_lock(&d.recv_lock)
        memcpy(d.ctl_peer, <const char *>sender, NONCE_LEN)
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
            raise RuntimeError(crypto_error("deriving receive keys"))
        return rc == 1

    # -- filters -------------------------------------------------------------------------

    def set_filter(self, int direction, bint default_allow, rules):
        """Install a compiled filter: rules are (allow, kind, value) with kind "mac" (6 bytes),
        "oui" (3 bytes) or "ethertype" (int), in configuration order."""
        cdef dp_state *d = self.d
        cdef filter_table *t
        cdef filter_table *old
        cdef pthread_mutex_t *lock
        cdef uint64_t *values
        cdef uint32_t i
        check_direction(direction)
        if self.engines:
            # The capture side reads the nic_ingress table outside any lock: swapping it
            # under running pumps could free it mid-read.
            raise RuntimeError("filters are installed before an Engine is built on this datapath")
        rules = list(rules)
        if len(rules) > FILTER_MAX_RULES:
            raise ValueError(f"at most {FILTER_MAX_RULES} rules")
        allow = bytearray(len(rules) + 1)
        kinds = bytearray(len(rules) + 1)
        values = <uint64_t *>calloc(len(rules) + 1, sizeof(uint64_t))
        if values == NULL:
            raise MemoryError("filter table")
        try:
            for i, (allowed, kind, value) in enumerate(rules):
                if kind == "mac" and isinstance(value, bytes) and len(value) == 6:
                    values[i] = int.from_bytes(value, "big")
                elif kind == "oui" and isinstance(value, bytes) and len(value) == 3:
                    values[i] = int.from_bytes(value, "big")
                elif kind == "ethertype" and isinstance(value, int) and ETHERTYPE_MIN <= value <= 0xFFFF:
                    values[i] = value
                else:
                    raise ValueError(f"rule {i + 1}: bad {kind} {value!r}")
                allow[i] = 1 if allowed else 0
                kinds[i] = FILTER_KINDS[kind]
            t = filter_build(default_allow, len(rules), <uint8_t *>allow, <uint8_t *>kinds, values)
        finally:
            free(values)
        if t == NULL:
            raise MemoryError("filter table")
        lock = &d.send_lock if direction == FILTER_NIC_INGRESS else &d.recv_lock
        pthread_mutex_lock(lock)
        old = d.filt[direction]
        d.filt[direction] = t
        pthread_mutex_unlock(lock)
        filter_free(old)

    def filter_stats(self, int direction):
        """{"rules": [hits per rule], "default": hits, "ethertypes": {EtherType: frames}}."""
        cdef filter_table *t
        cdef uint32_t i
        check_direction(direction)
        t = self.d.filt[direction]
        seen = {i: t.seen[i] for i in range(FILTER_ETHERTYPES) if t.seen[i]}
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
            raise ValueError(f"frame_type must be TYPE_FRAME or TYPE_FRAME_VNET, got {frame_type}")
        if length > MAX_PAYLOAD_LEN:
            drop_frame(d, DIR_TX, DROP_OVERSIZED, NULL, 0)
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
        if length > UDP_DATAGRAM_MAX:
            raise ValueError(f"a UDP datagram holds at most {UDP_DATAGRAM_MAX} bytes")
        if length:
            memcpy(self.work_rx, &view[0], length)
        pthread_mutex_lock(&d.recv_lock)
        advance_clock(d, now_ms)
        open_expire(d)
        rc = open_packet(d, self.work_rx, <uint32_t>length, &f, self.scratch, NULL, 0)
        result = []
        if rc == OPEN_FRAME:
            result.append((f.ftype, PyBytes_FromStringAndSize(<char *>f.data, f.length)))
            open_release(d, &f)
        elif rc == OPEN_CONTROL:
            result.append((wire_type(self.work_rx[0]), bytes(datagram)))
        pthread_mutex_unlock(&d.recv_lock)
        return result

    def counters(self):
        """{"tx": {name: count}, "rx": {name: count}} for every counter and drop reason."""
        cdef dp_state *d = self.d
        return {
            "tx": {COUNTER_NAMES[i]: d.ctr[DIR_TX][i] for i in range(N_COUNTERS)},
            "rx": {COUNTER_NAMES[i]: d.ctr[DIR_RX][i] + d.ctr_ctl[i] for i in range(N_COUNTERS)},
        }

    def count_rx_drop(self, str reason):
        """Count a drop decided by the control plane (e.g. a HELLO that failed its checks).

        Kept apart from the rx pump's own counters, which only the pump thread writes.
        """
        i = COUNTER_NAMES.index(reason)
        if i < FIRST_DROP_REASON:
            raise ValueError(f"{reason} is not a drop reason")
        self.d.ctr_ctl[i] += 1

    # -- the drop trace ------------------------------------------------------------------

    @property
    def trace(self):
        """Whether drops are sampled for the debug log (pop_trace)."""
        return bool(self.d.trace_on)

    @trace.setter
    def trace(self, bint on):
        self.d.trace_on = on

    def pop_trace(self):
        """Sampled drops since the last call, oldest first: (direction name, reason, address
        kind TRACE_*, address bytes, drops of that reason and direction not sampled before)."""
        cdef dp_state *d = self.d
        cdef trace_sample *s
        out = []
        pthread_mutex_lock(&d.trace_lock)
        while d.trace_count:
            s = &d.trace_ring[d.trace_head]
            out.append((DIRECTION_NAMES[s.direction], COUNTER_NAMES[s.reason], s.addr_kind,
                        PyBytes_FromStringAndSize(<char *>s.addr, s.addr_len), s.more))
            d.trace_head = (d.trace_head + 1) % TRACE_SLOTS
            d.trace_count -= 1
        pthread_mutex_unlock(&d.trace_lock)
        return out


# -- control packets (Python control plane; not per data packet) -------------------------

def seal_control(int level, control_key, int ptype, unsigned long long counter, payload):
    """A HELLO/PROBE/PROBE_REPLY datagram: header, payload, tag under the control key."""
    cdef mac_state m
    cdef uint8_t head[HEADER_LEN]
    cdef uint8_t tag[SHA256_LEN]
    cdef const uint8_t[:] body = payload
    cdef Py_ssize_t blen = body.shape[0]
    cdef int rc
    if ptype not in CONTROL_TYPES:
        raise ValueError(f"not a control type: {ptype}")
    wire_put_header(head, level, ptype, 0, 0, 1, 0, counter)
    out = PyBytes_FromStringAndSize(<char *>head, HEADER_LEN) + bytes(payload)
    if level == LEVEL_NONE:
        return out
    key = check_secret(control_key, "control key")
    rc = crypto_mac_init(&m, <const uint8_t *>PyBytes_AS_STRING(key), SECRET_LEN)
    if rc == 0:
        rc = crypto_mac(&m, head, HEADER_LEN, &body[0] if blen else NULL, blen, tag)
    OPENSSL_cleanse(&m, sizeof(mac_state))
    if rc != 0:
        raise RuntimeError(crypto_error("sealing a control packet"))
    return out + PyBytes_FromStringAndSize(<char *>tag, TAG_LEN)


cdef int control_parse(const uint8_t *dg, Py_ssize_t length, int *level, int *ptype) noexcept nogil:
    """Check a control datagram's header against its own claimed level (PROTOCOL.md §5):
    0, or -DROP_MALFORMED."""
    cdef int tag_len
    if length < HEADER_LEN:
        return -DROP_MALFORMED
    level[0] = wire_level(dg[0])
    ptype[0] = wire_type(dg[0])
    if wire_version(dg[0]) != WIRE_VERSION or level[0] == 3 or not wire_is_control(ptype[0]):
        return -DROP_MALFORMED
    tag_len = TAG_LEN if level[0] != LEVEL_NONE else 0
    if length < HEADER_LEN + tag_len or dg[1] != 0 or dg[2] != 0 or dg[3] != 1:
        return -DROP_MALFORMED
    if pkt_be32(&dg[4]) != 0:
        return -DROP_MALFORMED
    return 0


def read_control(datagram):
    """A control datagram's fields WITHOUT checking its tag, for answering or reporting on
    packets that cannot be authenticated (verify-peer): (level, ptype, counter, payload).
    Raises Dropped("malformed") for a broken header."""
    cdef const uint8_t[:] dg = datagram
    cdef Py_ssize_t length = dg.shape[0]
    cdef int lvl = 0, ptype = 0
    if control_parse(&dg[0] if length else NULL, length, &lvl, &ptype) != 0:
        raise Dropped("malformed")
    tag_len = TAG_LEN if lvl != LEVEL_NONE else 0
    return lvl, ptype, pkt_be64(&dg[8]), bytes(dg[HEADER_LEN:length - tag_len])


def open_control(int level, control_key, datagram):
    """Check a control datagram at our level; returns (ptype, counter, payload) or raises
    Dropped(reason)."""
    cdef mac_state m
    cdef const uint8_t[:] dg = datagram
    cdef Py_ssize_t length = dg.shape[0]
    cdef int lvl = 0, ptype = 0, rc
    cdef Py_ssize_t tag_len
    cdef bint ok
    if control_parse(&dg[0] if length else NULL, length, &lvl, &ptype) != 0:
        raise Dropped("malformed")
    if lvl != level:
        raise Dropped("level_mismatch")
    tag_len = TAG_LEN if lvl != LEVEL_NONE else 0
    if level != LEVEL_NONE:
        key = check_secret(control_key, "control key")
        rc = crypto_mac_init(&m, <const uint8_t *>PyBytes_AS_STRING(key), SECRET_LEN)
        if rc != 0:
            OPENSSL_cleanse(&m, sizeof(mac_state))
            raise RuntimeError(crypto_error("HMAC key setup"))
        ok = crypto_tag_ok(&m, &dg[0], &dg[HEADER_LEN], length - HEADER_LEN - tag_len,
                           &dg[length - tag_len])
        OPENSSL_cleanse(&m, sizeof(mac_state))
        if not ok:
            raise Dropped("auth")
    return ptype, pkt_be64(&dg[8]), bytes(dg[HEADER_LEN:length - tag_len])
