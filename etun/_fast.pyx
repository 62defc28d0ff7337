# The etun datapath's Python-facing API; the work is in the .pxi fragments it includes, in order.
# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False, embedsignature=True
"""The etun datapath: balanced fragmentation, ChaCha20 + HMAC-SHA256, anti-replay, reassembly.

This file is the Python-facing API only; the work is done in the .pxi fragments it includes,
each named after its job, and the declarations they share live in _fast.pxd.

Wire layout of one tunnel packet (docs/PROTOCOL.md is the full description):

     0       1       2       3       4               8       9       10                     16
    +-------+-------+-------+-------+---------------+-------+-------+----------------------+
    |v|l|typ|  big  | index | count |   key_index   |session|segment|   counter (48 bit)   |
    +-------+-------+-------+-------+---------------+-------+-------+----------------------+
    |  payload: fragment `index` of `count` of a frame (ciphertext at encrypt)               |
    +----------------------------------------------------------------------------------------+
    |  tag: HMAC-SHA256(mac_key, header || payload)[0:16]   (not at none)                   |
    +----------------------------------------------------------------------------------------+

    v: version 2 (2 bits)   l: level 0 none, 1 auth, 2 encrypt   typ: packet type
    big: how many leading fragments hold one byte more than the others
    session: the receive session id the receiver chose in the handshake
    segment: PCP (3 bits) | the receiver's segment id (5 bits)
    The MAC covers every byte before it. Fragments of one frame carry consecutive counters;
    base = counter - index names the frame.

The outbound flow opens seal.pxi and the inbound one open.pxi, each in numbered steps.

Invariants:
- A (key, nonce) pair never repeats: keys are per (session, key index), a session's secret
  comes from a fresh Noise handshake, and base counters only grow within a session
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
  session   the keys of sessions and their key indices, by role
  seal      outbound: frame -> datagrams
  open      inbound: datagram -> frame
  udp       the UDP side: recvmmsg, sendmmsg with GSO
  noise     the Noise NNpsk0 handshake's cryptography
  srclimit  budgets per source address
  cookie    mac1, mac2 and cookie replies
  admit     which handshake and probe packets reach the control plane
  handshake handshake messages on the wire, and the Handshake object
  probe     verify-peer PROBE and PROBE_REPLY packets, sealed and read for the control plane
  guard     the [bridge] guard presets the nic_ingress filter checks first
  filter    MAC / OUI / EtherType filter tables
  segment   which segment a LAN frame belongs to; its VLAN tags off and on
  bridge    the MAC table, loop holds and storm limits: etun as a switch port
  datapath  a Datapath's state: allocated and set up once, torn down with its keys wiped
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
    EVP_CIPHER_CTX, EVP_CIPHER_CTX_new, EVP_CIPHER_CTX_free, EVP_CIPHER_CTX_ctrl, EVP_chacha20,
    EVP_chacha20_poly1305, EVP_EncryptInit_ex, EVP_EncryptUpdate, EVP_EncryptFinal_ex,
    EVP_DecryptInit_ex, EVP_DecryptUpdate, EVP_DecryptFinal_ex, EVP_CTRL_AEAD_GET_TAG,
    EVP_CTRL_AEAD_SET_TAG, EVP_PKEY, EVP_PKEY_CTX, EVP_PKEY_X25519, EVP_PKEY_new_raw_private_key,
    EVP_PKEY_new_raw_public_key, EVP_PKEY_get_raw_public_key, EVP_PKEY_free, EVP_PKEY_CTX_new,
    EVP_PKEY_CTX_new_id, EVP_PKEY_CTX_free, EVP_PKEY_keygen_init, EVP_PKEY_keygen,
    EVP_PKEY_derive_init, EVP_PKEY_derive_set_peer, EVP_PKEY_derive, RAND_bytes,
    SHA256_Init, SHA256_Update, SHA256_Final, SHA256,
    CRYPTO_memcmp, OPENSSL_cleanse, OpenSSL_version, OPENSSL_VERSION,
    ERR_get_error, ERR_error_string_n,
)
from etun._linux cimport (
    pthread_mutex_init, pthread_mutex_destroy, pthread_mutex_lock, pthread_mutex_unlock,
    pthread_mutex_trylock,
    clock_gettime, timespec, CLOCK_MONOTONIC, CLOCK_MONOTONIC_COARSE, CLOCK_REALTIME_COARSE,
    iovec, writev, msghdr, mmsghdr, cmsghdr, CMSG_FIRSTHDR, CMSG_NXTHDR, CMSG_DATA, CMSG_SPACE,
    CMSG_LEN, recvmmsg, sendmmsg, getsockopt, AF_INET, AF_INET6, socklen_t, SOL_SOCKET, SOL_PACKET, SO_RXQ_OVFL,
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
include "session.pxi"
include "seal.pxi"
include "open.pxi"
include "udp.pxi"
include "noise.pxi"
include "srclimit.pxi"
include "cookie.pxi"
include "admit.pxi"
include "handshake.pxi"
include "probe.pxi"
include "guard.pxi"
include "filter.pxi"
include "segment.pxi"
include "bridge.pxi"
include "datapath.pxi"
include "gso.pxi"
include "gro.pxi"
include "lan.pxi"
include "ctlq.pxi"
include "pump.pxi"
include "engine.pxi"
include "kat.pxi"
include "bench.pxi"
include "testing.pxi"


def openssl_version():
    """The libcrypto this module runs against, e.g. "OpenSSL 3.0.19 27 Jan 2026"."""
    return OpenSSL_version(OPENSSL_VERSION).decode()


def trim_heap():
    """Give the C heap's free pages back to the kernel (resident.h). The daemon's control loop
    calls this every minute, so that its RSS does not keep the high-water mark of every burst
    of control-plane work."""
    with nogil:
        heap_trim()


def now_ms():
    """The datapath's clock (clock_ms(): CLOCK_MONOTONIC_COARSE) in milliseconds, for comparing
    with the timestamps it reports."""
    return clock_ms()


cdef check_direction(int direction):
    if direction not in (FILTER_NIC_INGRESS, FILTER_TUNNEL_INGRESS):
        raise ValueError("direction must be FILTER_NIC_INGRESS or FILTER_TUNNEL_INGRESS")


cdef check_segment(dp_state *d, int segment):
    if not 0 <= segment < d.nsegs:
        raise ValueError(f"no segment {segment} (this datapath has {d.nsegs})")


cdef class Datapath:
    """One site's datapath: the send side (seal) and the receive side (open) with their keys.

    Datapath(level, max_packet=MAX_PACKET_DEFAULT, reassembly_kib=4096, reassembly_timeout_ms=1000)
    """

    def __cinit__(self, int level, int max_packet=MAX_PACKET_DEFAULT, int reassembly_kib=4096,
                  int reassembly_timeout_ms=1000):
        if level not in (LEVEL_NONE, LEVEL_AUTH, LEVEL_ENCRYPT):
            raise ValueError(f"level must be 0, 1 or 2, got {level}")
        if not MAX_PACKET_MIN <= max_packet <= MAX_PACKET_MAX:
            raise ValueError(f"max_packet must be {MAX_PACKET_MIN}..{MAX_PACKET_MAX}, got {max_packet}")
        if not REASM_KIB_MIN <= reassembly_kib <= REASM_KIB_MAX:
            raise ValueError(f"reassembly_kib must be {REASM_KIB_MIN}..{REASM_KIB_MAX}, got {reassembly_kib}")
        if not REASM_TIMEOUT_MIN_MS <= reassembly_timeout_ms <= REASM_TIMEOUT_MAX_MS:
            raise ValueError(f"reassembly_timeout_ms must be {REASM_TIMEOUT_MIN_MS}..{REASM_TIMEOUT_MAX_MS}, "
                             f"got {reassembly_timeout_ms}")
        datapath_init(self, level, max_packet, <uint64_t>reassembly_kib * 1024, reassembly_timeout_ms)

    def __dealloc__(self):
        datapath_free(self)

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
        return self.d.tx.index if self.d.tx.live else None

    @property
    def recv_index(self):
        """Current key index of the current receive session, or None without one."""
        cdef dp_state *d = self.d
        if d.rx_cur < 0:
            return None
        return d.rx[d.rx_cur].cur if d.level != LEVEL_NONE else 0

    @property
    def last_session(self):
        """The receive session id of the latest packet opened (a SESSION message's), or None."""
        return self.d.last_rx_session if self.d.last_rx_session >= 0 else None

    @property
    def last_drop(self):
        """Reason of the drop caused by the latest open() call, or None."""
        return COUNTER_NAMES[self.d.last_drop] if self.d.last_drop else None

    # -- sessions ------------------------------------------------------------------------

    def set_static_keys(self, psk, mac1_key, cookie_key, probe_key, index_root):
        """The long-term secrets derived from the key file (keys.Secrets); at level none, zeros.
        Set before the Engine runs; again on a reload, for the handshakes that follow."""
        session_set_static(self.d, crypto_secret(psk, "psk"), crypto_secret(mac1_key, "mac1 key"),
                           crypto_secret(cookie_key, "cookie key"), crypto_secret(probe_key, "probe key"),
                           crypto_secret(index_root, "index root"))

    def install_session(self, Handshake hs, unsigned int local_id, unsigned int peer_id,
                        unsigned int send_index, unsigned int recv_index, unsigned int peer_gen=0):
        """Put a finished handshake's keys into the datapath and wipe them from the handshake.

        We receive under session id `local_id` (our choice, in the header byte 8 the peer
        writes) from key index `recv_index`, and send with the peer's `peer_id` from
        `send_index`. The initiator's session carries traffic at once (the peer's answer proved
        it holds the keys); the responder's waits in `next` until a packet under it
        authenticates (install_session returns; the switch is the rx pump's). `peer_gen`
        numbers the peer's instance (a restart is a new one): a session with the instance we
        already send to keeps its segment map; another starts without one (set_segment_map).
        """
        cdef const uint8_t *send_secret
        cdef const uint8_t *recv_secret
        cdef int rc
        if hs.stage != HS_DONE:
            raise ValueError("the handshake is not done")
        if local_id >= SESSION_IDS or peer_id >= SESSION_IDS:
            raise ValueError("session ids are one byte")
        if hs.initiator:
            send_secret, recv_secret = hs.k1, hs.k2
        else:
            send_secret, recv_secret = hs.k2, hs.k1
        rc = session_install(self.d, send_secret, recv_secret, hs.initiator, <uint8_t>local_id, <uint8_t>peer_id,
                             send_index, recv_index, peer_gen)
        hs.forget()
        hs.stage = HS_NEW
        if rc != 0:
            raise RuntimeError(crypto_error("installing session keys"))

    def set_send_session(self, secret=b"", unsigned int peer_id=0, unsigned int index=0):
        """Seal under a raw session secret (32 bytes; ignored at none) from key index `index`,
        to the peer's receive session `peer_id`: for `etun bench` and tests, which have no
        peer to shake hands with. The daemon installs sessions with install_session()."""
        cdef bytes key = crypto_secret(secret, "send secret") if self.d.level != LEVEL_NONE else bytes(SECRET_LEN)
        session_set_send(self.d, key, <uint8_t>peer_id, index)

    def set_recv_session(self, secret=b"", unsigned int session_id=0, unsigned int index=0,
                         bint confirmed=True):
        """Receive under a raw session secret as session `session_id` from key index `index`
        (bench and tests; the daemon uses install_session()). `confirmed=False` puts it in
        `next`, as a responder's session waits for key confirmation."""
        cdef bytes key = crypto_secret(secret, "receive secret") if self.d.level != LEVEL_NONE else bytes(SECRET_LEN)
        session_set_recv(self.d, key, <uint8_t>session_id, index, confirmed)

    def rotate_send(self):
        """Move the send side to the next key index of its session (hitless: the receiver
        holds c + 1); nothing to do at level none, which has no keys."""
        session_rotate(self.d)

    def drop_sessions(self, bint keep_next=False):
        """Forget every session, both ways (their keys are wiped): the peer is gone for good, or
        the sessions outlived their time. `keep_next` spares what is under way: a session we
        answered that waits for the peer's confirmation, and the initiation we wait on."""
        session_drop_all(self.d, keep_next)

    def sessions(self):
        """What the datapath holds, for the control plane: {"current": (id, born_ms, confirmed)
        or None, "previous": ..., "next": ..., "sending": (peer id, index, born_ms) or None,
        "confirmed_ms": when a session was last confirmed}."""
        return session_roles(self.d)

    def refused(self):
        """The latest packet refused because it is of another protocol version, level or key
        material: (reason, its first byte, the raw source sockaddr), or None; read once."""
        return open_refused_pop(self.d)

    # -- filters -------------------------------------------------------------------------

    def set_filter(self, int direction, bint default_allow, rules, int segment=0, guards=()):
        """Install a compiled filter for one direction of `segment`: rules are (allow, kind,
        value) with kind "mac" (6 bytes), "oui" (3 bytes) or "ethertype" (int), in configuration
        order; `guards` names presets of GUARD_NAMES denied before any rule. Safe while pumps
        run: the swap takes the locks their rounds hold (filter.pxi). Rules also in the table
        replaced, the default if its action stayed, the guards and the EtherType counts keep
        counting on."""
        cdef uint32_t guard_set
        check_direction(direction)
        check_segment(self.d, segment)
        guard_set = guard_bits(guards)
        rules = [(bool(allowed), kind, value) for allowed, kind, value in rules]
        if len(rules) > FILTER_MAX_RULES:
            raise ValueError(f"at most {FILTER_MAX_RULES} rules")
        filter_install(self, direction, default_allow, rules, segment, guard_set)

    def filter_stats(self, int direction, int segment=0):
        """{"rules": [hits per rule], "default": hits, "ethertypes": {EtherType: frames},
        "guards": {guard name: hits} for the guard presets installed}."""
        check_direction(direction)
        check_segment(self.d, segment)
        return filter_report(self.d, direction, segment)

    # -- the bridge (bridge.pxi) ---------------------------------------------------------

    def set_bridge(self, bint learning=True, unsigned int mac_age_s=MAC_AGE_DEFAULT_S, str loop_protection="block",
                   unsigned int storm_limit=5000):
        """[bridge]: safe while pumps run (each setting is one word the pumps read per frame)."""
        if loop_protection not in LOOP_MODES:
            raise ValueError(f"loop_protection must be one of {', '.join(LOOP_MODES)}")
        if not 1 <= mac_age_s <= MAC_AGE_MAX_S:
            raise ValueError(f"mac_age_s must be 1..{MAC_AGE_MAX_S}")
        bridge_configure(self.d, learning, <uint64_t>mac_age_s * 1000, LOOP_MODES[loop_protection], storm_limit)

    def bridge_stats(self, unsigned int segment=0, now_ms=None):
        """One segment's bridge: live MACs by side, the table slots it holds (`entries`, aged ones
        until swept) against its `share`, and per direction ("tx", "rx") what was learnt, moved,
        flipped, not learnt (full: no room; over_share: the segment held its share), the loops
        and storm state. Lock-free reads."""
        if segment >= SEGMENTS_MAX:
            raise ValueError(f"segment must be below {SEGMENTS_MAX}")
        return bridge_report(self.d, segment, clock_ms() if now_ms is None else <uint64_t>now_ms)

    def bridge_sweep(self, now_ms=None):
        """Empty the MAC table's aged slots (bridge_sweep): the control loop's chore every few
        seconds. Returns how many."""
        cdef uint64_t now = clock_ms() if now_ms is None else <uint64_t>now_ms
        cdef uint32_t freed
        with nogil:
            freed = bridge_sweep(self.d, now)
        return freed

    def bridge_macs(self, now_ms=None):
        """The live MAC table: [(MAC "aa:bb:..", segment, "local" or "remote", age in ms)]."""
        return bridge_list_macs(self.d, clock_ms() if now_ms is None else <uint64_t>now_ms)

    # -- packets -------------------------------------------------------------------------

    def seal(self, frame, int frame_type=TYPE_FRAME, unsigned int segment=0):
        """Seal one frame (or, with TYPE_SESSION, a SESSION message) of `segment`; returns its
        datagrams (UDP payloads) in order."""
        if frame_type not in (TYPE_FRAME, TYPE_FRAME_VNET, TYPE_SESSION):
            raise ValueError(f"frame_type must be TYPE_FRAME, TYPE_FRAME_VNET or TYPE_SESSION, got {frame_type}")
        if segment >= SEGMENT_IDS:
            raise ValueError("segment ids are one byte")
        return seal_datagrams(self, frame, <uint8_t>frame_type, <uint8_t>segment)

    def open(self, datagram, now_ms=None):
        """Open one datagram; returns the frames it completed as [(frame_type, frame)].

        A SESSION message comes back as [(TYPE_SESSION, its payload)], a handshake or probe
        packet as [(its type, the whole datagram)], unchecked (the rx pump's admission gate is
        not on this path). A drop returns [] and sets last_drop.
        """
        return open_datagram(self, datagram, now_ms)

    # -- segments ------------------------------------------------------------------------

    def segment_tags(self, unsigned int segment, unsigned int pcp=0):
        """The tags the datapath pushes on a frame it writes into `segment` with priority `pcp`,
        outer first, as bytes (empty for an untagged segment): announcements use them too."""
        cdef uint8_t tags[VLAN_PATH_MAX * VLAN_TAG_LEN]
        cdef uint32_t n
        if segment >= <unsigned int>self.d.nsegs or pcp > VLAN_PCP_MAX:
            raise ValueError(f"segment {segment}, pcp {pcp}: no such segment or priority")
        n = segment_tags(&self.d.seg[segment], <uint8_t>pcp, tags)
        return PyBytes_FromStringAndSize(<char *>tags, n)

    def set_segments(self, segments):
        """This site's segments, before any Engine exists: (port, vlan ids outer first, carry_all)
        each, in id order; port is the Engine's LAN port index (0 for the first). Each segment
        starts with allow-all filters. A datapath starts with one segment carrying all of port 0."""
        segments = list(segments)
        if self.engines:
            raise RuntimeError("segments are fixed once an Engine runs")
        if not 1 <= len(segments) <= SEGMENTS_MAX:
            raise ValueError(f"1 to {SEGMENTS_MAX} segments")
        for port, vids, carry_all in segments:
            if not 0 <= port < PORTS_MAX or len(vids) > VLAN_PATH_MAX or any(not 1 <= v <= VLAN_ID_MAX for v in vids):
                raise ValueError(f"bad segment {(port, vids, carry_all)!r}")
            if carry_all and vids:
                raise ValueError("a segment carrying all frames selects no VLAN")
        segment_install(self, segments)

    @property
    def segments(self):
        return self.d.nsegs

    def set_segment_map(self, peer_ids, unsigned int peer_gen):
        """Where each of our segments goes at the peer: its id there, or SEGMENT_NONE for a
        segment it does not have; for the send sessions made with peer instance `peer_gen`."""
        cdef dp_state *d = self.d
        peer_ids = bytes(peer_ids)
        if len(peer_ids) != d.nsegs or any(v != SEGMENT_NONE and v >= SEGMENTS_MAX for v in peer_ids):
            raise ValueError(f"one peer id per segment ({d.nsegs}), each below {SEGMENTS_MAX} or SEGMENT_NONE")
        segment_set_map(d, <const uint8_t *>PyBytes_AS_STRING(peer_ids), peer_gen)

    def segment_counters(self, int segment):
        """{"tx": {name: count}, "rx": {name: count}}: the counters kept per segment (frames,
        bytes, and the drops of frames known to be this segment's)."""
        check_segment(self.d, segment)
        return segment_report(self.d, segment)

    def counters(self):
        """{"tx": {name: count}, "rx": {name: count}} for every counter and drop reason."""
        return drop_counters(self.d)

    def count_rx_drop(self, str reason):
        """Count a drop decided by the control plane (e.g. a stale initiation).

        Kept apart from the rx pump's own counters, which only the pump thread writes.
        """
        drop_count_ctl(self.d, reason)

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
        return drop_trace_pop(self.d)


# -- verify-peer packets (PROTOCOL.md §7; the control plane's, not per data packet) -------

def seal_probe(Datapath dp, int ptype, payload):
    """A PROBE or PROBE_REPLY datagram: a header of its first byte and 15 zeros, the payload,
    and at auth and encrypt a tag under the probe key."""
    if ptype not in PROBE_TYPES:
        raise ValueError(f"not a probe type: {ptype}")
    return probe_seal(dp.d, ptype, payload)


def read_probe(Datapath dp, datagram):
    """A verify-peer datagram's (level, ptype, payload, authenticated): its payload as it claims
    to be laid out, and whether its tag verifies under our probe key (at whatever level it
    claims but none). Raises Dropped("malformed") for a broken header."""
    return probe_read(dp.d, datagram)


def packet_type(datagram):
    """(version, level, type) of a datagram's first byte; (None, None, None) for an empty one."""
    if not datagram:
        return None, None, None
    b0 = datagram[0]
    return wire_version(b0), wire_level(b0), wire_type(b0)
