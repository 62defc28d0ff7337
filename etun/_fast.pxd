# Shared datapath declarations: sizes, limits, packet types, counters and the state structs.
#
# Shared datapath declarations: sizes and limits, packet types, counters, and the state structs
# every fragment reads. `cpdef enum` members are exported to Python under these very names.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t
from etun._openssl cimport EVP_CIPHER_CTX, EVP_PKEY, SHA256_CTX
from etun._linux cimport pthread_mutex_t, mmsghdr, iovec, socklen_t


# -- the wire (docs/PROTOCOL.md) ----------------------------------------------------------
cpdef enum:
    WIRE_VERSION = 2
    HEADER_LEN = 16               # bytes of header before the payload
    TAG_LEN = 16                  # bytes of HMAC-SHA256-128 after the payload
    UDP_HEADER_LEN = 8
    SECRET_LEN = 32               # bytes of a ChaCha20 key, an HMAC key, a session secret
    NONCE_LEN = 16                # bytes of a sender nonce or a challenge (HELLO)
    VNET_HDR_LEN = 10             # sizeof(struct virtio_net_hdr)
    MIN_FRAME_LEN = 14            # an Ethernet header and nothing else
    MAX_FRAME_LEN = 65557         # 14 + two VLAN tags + the largest IP packet
    MAX_PAYLOAD_LEN = MAX_FRAME_LEN + VNET_HDR_LEN   # the largest thing fragmented (FRAME_VNET)
    MAX_FRAGS = 255               # frag_count is one byte
    MAX_PACKET_MIN = 320          # [tunnel] max_packet: keeps MAX_PAYLOAD_LEN within MAX_FRAGS
    MAX_PACKET_MAX = 9000
    MAX_PACKET_DEFAULT = 800
    UDP_DATAGRAM_MAX = 65535      # bytes a UDP length field can describe

    LEVEL_NONE = 0
    LEVEL_AUTH = 1
    LEVEL_ENCRYPT = 2
    LEVEL_RESERVED = 3            # the level field's fourth value: no etun sends it

    TYPE_FRAME = 1                # data: a fragment of an Ethernet frame
    TYPE_FRAME_VNET = 2           # data: ... with its virtio_net_hdr
    TYPE_SESSION = 3              # in-session control message, sealed like data (session.py)
    TYPE_INIT = 4                 # handshake message 1 (PROTOCOL.md §5)
    TYPE_RESP = 5                 # handshake message 2
    TYPE_COOKIE = 6               # cookie reply, under load
    TYPE_PROBE = 7                # verify-peer request (§7)
    TYPE_PROBE_REPLY = 8          # verify-peer answer

    SESSION_IDS = 256             # a receive session's id is one header byte
    SEGMENT_IDS = 256             # ... and so is a segment's
    SEGMENTS_MAX = 32             # segments per tunnel: header byte 9 = PCP (3 bits) | id (5 bits)
    SEGMENT_ID_BITS = 5
    SEGMENT_NONE = 0xFF           # a segment the peer does not have (or has not named yet)
    PORTS_MAX = 8                 # LAN sides (NICs, TAP devices) one Engine reads and writes
    VLAN_PATH_MAX = 2             # tags a segment selects: "10", or "100.20"
    VLAN_ID_MAX = 4094            # VLAN ids a segment selects are 1..4094 (0 and 4095 are reserved)
    VLAN_PCP_MAX = 7              # a tag's priority is 3 bits

    # Handshake messages (handshake.pxi, PROTOCOL.md §5): ver|lvl|type, 3 zero bytes, the
    # initiation's id (an INIT's own; a RESP or COOKIE echoes the INIT's), then:
    HS_HEAD_LEN = 8
    X25519_LEN = 32
    MAC16_LEN = 16                # HMAC-SHA256-128: mac1, mac2, cookies
    INIT_PAYLOAD_LEN = 36         # timestamp 12, instance 16, rx session 1, reserved 3, send index 4
    RESP_PAYLOAD_LEN = 24         # instance 16, rx session 1, reserved 3, send index 4
    INIT_LEN = HS_HEAD_LEN + X25519_LEN + INIT_PAYLOAD_LEN + 16 + 2 * MAC16_LEN   # 124: mac1, mac2
    RESP_LEN = HS_HEAD_LEN + X25519_LEN + RESP_PAYLOAD_LEN + 16 + MAC16_LEN       # 96: mac1
    COOKIE_NONCE_LEN = 12
    COOKIE_LEN = HS_HEAD_LEN + COOKIE_NONCE_LEN + MAC16_LEN + 16                  # 52
    PROBE_MIN_LEN = HEADER_LEN + 64   # the smallest probe etun sends is larger than this

    REPLAY_BLOCKS = 64                        # 64-bit words in the RFC 6479 bitmap
    REPLAY_WINDOW = (REPLAY_BLOCKS - 1) * 64  # how far behind the highest a counter may be: 4032

    FILTER_NIC_INGRESS = 0        # frames captured on the LAN NIC (tx pump)
    FILTER_TUNNEL_INGRESS = 1     # frames arriving from the tunnel (rx pump)
    FILTER_MAX_RULES = 65534

    LAN_PACKET = 0                # the LAN side is an AF_PACKET socket on a NIC
    LAN_TAP = 1                   # ... or a TAP device

    DIR_TX = 0                    # LAN -> tunnel, in drop traces and per-direction arrays
    DIR_RX = 1                    # tunnel -> LAN

    TRACE_NONE = 0                # what a drop trace's address is: nothing known,
    TRACE_SOCKADDR = 1            # ... the UDP source (struct sockaddr_in/in6),
    TRACE_MAC = 2                 # ... or the frame's source MAC

    # The bridge (bridge.pxi): a MAC table shared by all segments, 2-choice hashed into
    # buckets of one cache line; 16,384 MACs fit, 65,536 at most (what does not fit: counted).
    BRIDGE_WAYS = 4               # entries per bucket (16 bytes each: a 64-byte line)
    BRIDGE_BUCKETS = 16384        # 65,536 entries, 1 MiB
    BRIDGE_ENTRIES = BRIDGE_BUCKETS * BRIDGE_WAYS
    BRIDGE_LOOP_MACS = 4          # MACs remembered per loop, for the log line
    LOOP_OFF = 0                  # [bridge] loop_protection
    LOOP_LOG = 1
    LOOP_BLOCK = 2
    MAC_AGE_DEFAULT_S = 300       # [bridge] mac_age
    MAC_AGE_MAX_S = 1000000       # ... at most the Linux bridge's own ageing_time limit
    SIDE_LOCAL = 0                # a MAC learnt from the LAN
    SIDE_REMOTE = 1               # ... or from the tunnel
    GUARD_STP = 0                 # [bridge] guard presets, compiled into nic_ingress (filter.pxi)
    GUARD_LLDP = 1
    GUARD_DHCP_SERVER = 2
    GUARD_IPV6_RA = 3
    GUARDS = 4


# Offsets of the tunnel header's fields (wire.pxi draws the map; PROTOCOL.md §2).
cdef enum:
    WIRE_BIG = 1                  # frag_big
    WIRE_INDEX = 2                # frag_index
    WIRE_COUNT = 3                # frag_count
    WIRE_KEY_INDEX = 4            # 4 bytes
    WIRE_SESSION = 8
    WIRE_SEGMENT = 9
    WIRE_COUNTER = 10             # 6 bytes, to the end of the header
    NONCE_HEAD_LEN = WIRE_COUNTER - WIRE_KEY_INDEX   # header bytes a nonce starts with (§3.1)
    CHACHA_NONCE_LEN = NONCE_HEAD_LEN + 6            # ... then the frame's base counter, 48 bits
    HS_ID_AT = 4                  # a handshake message's initiation id: 4 bytes (HS_HEAD_LEN)


# -- counters: one X-macro table makes both the enums and the names (counters.h) ----------
cdef extern from "counters.h":
    cpdef enum:
        C_FRAMES
        C_BYTES
        C_PACKETS
        C_FRAGMENTS
        C_REASSEMBLED
        C_CONTROL
        C_SUPERFRAMES
        DROP_MALFORMED
        DROP_LEVEL_MISMATCH
        DROP_NO_SESSION
        DROP_KEY_INDEX
        DROP_AUTH
        DROP_REPLAY
        DROP_FRAG_INCONSISTENT
        DROP_FRAG_TIMEOUT
        DROP_FRAG_EVICTED
        DROP_RUNT
        DROP_OVERSIZED
        DROP_FILTER
        DROP_SEND_ERROR
        DROP_SOCKET_OVERFLOW
        DROP_OWN_TUNNEL
        DROP_CRYPTO_ERROR
        DROP_CONTROL_QUEUE
        DROP_INTERNAL
        DROP_VERSION
        DROP_UNDER_LOAD
        DROP_RATE_LIMIT
        DROP_BAD_OFFLOAD
        DROP_UNSELECTED_VLAN
        DROP_UNKNOWN_SEGMENT
        DROP_STANDBY
        DROP_LOCAL_DESTINATION
        DROP_LOOP
        DROP_STORM
        N_COUNTERS
        FIRST_DROP_REASON
    cpdef enum:
        PUMP_TX_WAKEUPS
        PUMP_TX_SLEEPS
        PUMP_UDP_SENDS
        PUMP_UDP_MESSAGES
        PUMP_RX_WAKEUPS
        PUMP_RX_SLEEPS
        PUMP_RX_DATAGRAMS
        PUMP_LAN_SENDS
        PUMP_TX_SERVED_BY_RX
        PUMP_TX_LOOPS
        PUMP_RX_LOOPS
        N_PUMP_STATS
    const char *const etun_counter_names[N_COUNTERS]
    const char *const etun_pump_stat_names[N_PUMP_STATS]


# -- sanitizer builds only (sanitizer.h): buffers inside one allocation made unreadable ----
cdef extern from "sanitizer.h":
    void etun_poison(const void *p, size_t n) nogil
    void etun_unpoison(const void *p, size_t n) nogil


# -- 64-bit words two threads share without a lock (atomic.h; the MAC table) ------------------
cdef extern from "atomic.h":
    uint64_t atomic_load64(const uint64_t *p) nogil
    void atomic_store64(uint64_t *p, uint64_t v) nogil
    bint atomic_cas64(uint64_t *p, uint64_t expected, uint64_t desired) nogil
    void prefetch_line(const void *p) nogil
    void *table_alloc(size_t n) nogil
    void table_free(void *p, size_t n) nogil


# -- a daemon's memory kept flat (resident.h; engine.pxi, trim_heap()) -------------------------
cdef extern from "resident.h":
    void touch_pages(void *p, size_t n) nogil
    void heap_trim "trim_heap"() nogil


# -- Ethernet, offloads, checksums (pkt.pxi, lan.pxi, gso.pxi, gro.pxi) ------------------
cdef enum:
    ETH_P_8021Q = 0x8100
    ETH_P_8021AD = 0x88a8
    ETH_P_IP = 0x0800
    ETH_P_IPV6 = 0x86dd
    ETHERTYPE_MIN = 0x0600        # values below are 802.3 length fields
    VLAN_TAG_LEN = 4
    VLAN_VID_MASK = 0xfff         # a tag's TCI: PCP (3 bits), DEI (1), VLAN id (12)
    VLAN_PCP_SHIFT = 13
    VLAN_MAX_TAGS = 8             # tags followed into a frame: deeper is not a frame anyone sends
    PROTO_TCP = 6                 # IP protocol numbers in IPv4 and IPv6 headers
    PROTO_UDP = 17
    VNET_F_NEEDS_CSUM = 1
    VNET_F_DATA_VALID = 2
    VNET_GSO_NONE = 0
    VNET_GSO_TCPV4 = 1
    VNET_GSO_UDP = 3              # UFO, which older kernels still make
    VNET_GSO_TCPV6 = 4
    VNET_GSO_UDP_L4 = 5
    VNET_GSO_ECN = 0x80


# -- buffers and batches -------------------------------------------------------------------
cdef enum:
    CHACHA_BLOCK = 64             # ChaCha20 runs on whole blocks; buffers keep this much spare room
    TAILROOM = CHACHA_BLOCK       # spare bytes after every buffer the cipher writes or reads
    SMALL_BUF_LEN = 2048          # reassembly buffer for the common frames: 1522 + vnet + tailroom fit
    LARGE_BUF_LEN = (MAX_PAYLOAD_LEN + TAILROOM + 63) & ~63
    SCRATCH_LEN = MAX_PACKET_MAX + TAILROOM   # a single-packet frame decrypted: any sender's payload fits
    RX_SESSIONS = 3               # receive sessions held: previous, current, next (session.pxi)
    RX_INDICES = 3                # key indices held per receive session: c - 1, c, c + 1
    TX_BATCH = 64                 # frames per LAN read
    TX_PKTS = 1024                # sealed datagrams held before a UDP flush (>= MAX_FRAGS)
    # A captured frame starts at FRAME_AT in its slot: first 4 bytes of room for a re-inserted
    # VLAN tag, then the vnet header the kernel writes.
    FRAME_AT = VLAN_TAG_LEN + VNET_HDR_LEN
    FRAME_SLOT = (FRAME_AT + MAX_FRAME_LEN + TAILROOM + 63) & ~63
    RX_BATCH = 32                 # datagram buffers per UDP read; each may hold a GRO train
    RX_SLOT = (UDP_DATAGRAM_MAX + TAILROOM + 63) & ~63
    OUT_BATCH = 64                # frames per LAN write
    # vnet + L2 (with its own two tags and the segment's two pushed) + IPv6 + TCP
    GRO_HEAD_ROOM = VNET_HDR_LEN + MIN_FRAME_LEN + 4 * VLAN_TAG_LEN + 40 + 60
    GRO_HDR_MAX = MIN_FRAME_LEN + 2 * VLAN_TAG_LEN + 40 + 60   # headers software GRO merges behind
    GSO_SEGMENTS = 64             # datagrams per UDP GSO send (the kernel's UDP_MAX_SEGMENTS floor)
    GSO_BYTES = 65000             # payload bytes per UDP GSO send (below the 64 KiB IP limit)
    SEG_ARENA_LEN = 1 << 20       # bytes of segments cut from super-frames, held until the flush
    SOCKADDR_LEN = 28             # sizeof(struct sockaddr_in6), the largest peer address
    CMSG_ROOM = 64                # control-message bytes per datagram (auxdata, GRO size, drops)
    CTL_SLOTS = 32                # control packets queued for Python
    CTL_MAX = MAX_PACKET_MAX      # the largest control packet kept: every one is below max_packet
    TRACE_SLOTS = 64              # drop-trace samples waiting for the control loop


# -- budgets for what a stranger can ask of the receive side (admit.pxi) -------------------
cdef enum:
    HS_PER_SEC = 20               # handshake messages a second before etun is "under load"
    HS_BURST = 20                 # ... and at once
    UNDER_LOAD_MS = 1000          # once under load, cookies are asked for at least this long
    SOURCE_PER_SEC = 5            # under load: handshakes with a valid cookie, per source address
    SOURCE_BURST = 5
    ANSWERS_PER_SEC = 10          # RESPs to our initiation queued a second; COOKIEs, as many
    INIT_SEEN_SLOTS = 1024        # mac1s of recent initiations: one arriving twice is a replay
    PROBE_PER_SEC = 20            # authentic verify-peer probes queued a second, in all ...
    PROBE_SOURCE_PER_SEC = 10     # ... and per source address (a verify-peer run sends 2 to 5)
    PROBE_REPLIES_PER_SEC = 20    # authentic replies to verify-peer queued a second
    PROBE_SEEN_SLOTS = 1024       # tags of authentic probes and replies admitted lately
    PROBE_AGE_MAX_MS = 300000     # a probe's wall-clock time may be this far from ours
    PROBE_TIME_AT = HEADER_LEN + 36   # where a PROBE carries its sender's wall clock (PROTOCOL.md §7)
    FOREIGN_PER_SEC = 10          # verify-peer packets that do not authenticate (another key)
    SRCLIMIT_SLOTS = 1024         # source addresses whose budgets are remembered (srclimit.pxi)
    SRCLIMIT_PROBE = 8            # slots looked at to find or replace an entry
    COOKIE_SECRET_MS = 120000     # the cookie secret is replaced this often
    TRACE_INTERVAL_MS = 1000      # at most one drop-trace sample per reason and direction this often


# -- the pumps ----------------------------------------------------------------------------------
cdef enum:
    PUMP_TX = 0                   # index of the LAN -> tunnel pump in per-pump arrays
    PUMP_RX = 1                   # ... and of the tunnel -> LAN pump
    KICK_SPIN_US = 300            # how long a kicked pump polls for the reply it was woken for
    KICK_RECENT_US = 100000       # kick only a pump that moved traffic this recently: a flow both ways
    PARK_AFTER_US = 50000         # the tx pump parks after this long without a burst (pump.pxi)
    TX_BURST_FRAMES = 8           # a tx round of this many frames (or a super-frame) unparks it
    POLL_TIMEOUT_MS = 100         # a sleeping pump looks at its clock-driven duties this often
    STALL_NAP_MS = 10             # a pump wedged on purpose (Engine.stall) looks for stop this often
    ENGINES_MAX = 4               # Engines one Datapath serves at once (etun runs one)
    EXPIRE_EVERY_MS = 50          # reassembly expiry while datagrams keep coming

    OPEN_HELD = 0                 # open_packet(): fragment stored, frame not complete yet
    OPEN_FRAME = 1                # open_packet(): a complete frame is in the frame_ref
    OPEN_CONTROL = 2              # open_packet(): a control packet for the Python control plane

    CAP_FRAME = TYPE_FRAME        # cap_type of a captured frame: seal as it is,
    CAP_FRAME_VNET = TYPE_FRAME_VNET   # ... with its offload header,
    CAP_SUPERFRAME = 0xff         # ... or cut it into segments first (gso.pxi)


cdef struct mac_state:            # HMAC-SHA256 with the key's pads already absorbed
    SHA256_CTX inner
    SHA256_CTX outer

cdef struct keyset:               # the secrets of one key index of one direction
    EVP_CIPHER_CTX *cipher        # ChaCha20 with the key set; only the IV changes per frame
    mac_state mac
    uint32_t index
    bint live

cdef struct replay_window:        # RFC 6479 sliding window
    uint64_t top                  # highest counter accepted
    bint any                      # whether any counter was accepted yet
    uint64_t bits[REPLAY_BLOCKS]

cdef struct rx_index:             # one key index of a receive session with its replay window
    keyset keys
    replay_window window

cdef struct rx_session:           # what the peer sends under, by one handshake (session.pxi)
    bint live
    bint confirmed                # a packet under it authenticated (or we initiated it)
    uint8_t id                    # the id the peer writes into header byte 8
    uint32_t gen                  # names its frames in reassembly
    uint32_t cur                  # its current key index c; idx[] holds c - 1, c, c + 1
    uint64_t born_ms
    uint8_t secret[SECRET_LEN]    # this direction's Noise Split() output
    uint8_t index_root[SECRET_LEN]   # the key file's, as when the session began (a reload waits)
    keyset ctl                    # keys of SESSION messages (index-free)
    replay_window ctl_window
    rx_index idx[RX_INDICES]

cdef struct tx_session:           # what we send under, by one handshake (session.pxi)
    bint live
    uint32_t peer_gen             # the peer instance it was made with (Session counts them)
    uint8_t seg_peer[SEGMENTS_MAX]   # our segment -> the peer's id for it, or SEGMENT_NONE
    uint8_t peer_id               # the receive session id the peer chose: header byte 8
    uint32_t index                # key index of `data`
    uint64_t counter              # next counter of this session (48 bits)
    uint64_t born_ms
    uint8_t secret[SECRET_LEN]
    uint8_t index_root[SECRET_LEN]
    keyset ctl
    keyset data

cdef struct noise_state:          # one Noise handshake in progress (noise.pxi); wiped when done
    uint8_t ck[SECRET_LEN]        # chaining key
    uint8_t h[SECRET_LEN]         # handshake hash
    uint8_t k[SECRET_LEN]         # cipher key, once has_k
    uint64_t n
    bint has_k
    EVP_PKEY *e                   # our ephemeral key pair, or NULL
    uint8_t e_pub[X25519_LEN]
    uint8_t re[X25519_LEN]        # the other side's ephemeral public key

cdef struct srclimit_entry:       # one source address's budget (srclimit.pxi)
    uint8_t key[9]                # family (4 or 6), then IPv4 (4) or IPv6 /64 (8) bytes; 0: empty
    uint64_t credit_ms
    uint64_t last_ms

cdef struct pkt_ref:              # one sealed datagram, scattered: head, body, tag
    uint8_t meta[HEADER_LEN + TAG_LEN]
    const uint8_t *body
    uint32_t body_len

cdef struct frame_ref:            # one opened frame
    uint8_t *data
    uint32_t length
    uint8_t ftype                 # TYPE_FRAME or TYPE_FRAME_VNET
    uint8_t segment               # header byte 9: PCP << 5 | the receiver's segment id
    int32_t slot                  # reassembly slot to release once delivered, or -1

cdef struct vlan_walk:            # what pkt_walk_vlans() found in front of the network header
    uint32_t l3                   # offset of the network header (just after the EtherType)
    uint16_t ethertype            # the EtherType behind every tag walked
    uint8_t tags                  # tags walked (at most VLAN_MAX_TAGS)
    bint has_8021q                # an 802.1Q tag was among them
    bint has_8021ad               # an 802.1ad tag was among them


# -- reassembly (reasm.pxi) -----------------------------------------------------------------
cdef enum:
    REASM_SMALL = 0               # slot classes, by buffer: SMALL_BUF_LEN
    REASM_LARGE = 1               # ... or LARGE_BUF_LEN
    REASM_CLASSES = 2
    REASM_KIB_MIN = 64            # Datapath(reassembly_kib=...): buffers, half small, half large
    REASM_KIB_MAX = 1048576
    REASM_TIMEOUT_MIN_MS = 10     # Datapath(reassembly_timeout_ms=...)
    REASM_TIMEOUT_MAX_MS = 60000

cdef struct reasm_slot:
    uint64_t base                 # counter of fragment 0: identifies the frame with gen
    uint64_t t_first_ms           # arrival of the first fragment held
    uint64_t have[4]              # bitmap of fragment indices held
    uint8_t *buf
    uint32_t gen
    uint8_t nonce_head[NONCE_HEAD_LEN]   # header bytes 4..9 (key_index, session, segment): the nonce's
    uint32_t q                    # fragment size; the first r fragments hold q + 1
    uint16_t n
    uint16_t r
    uint16_t got
    uint8_t ftype
    uint8_t cls                   # REASM_SMALL or REASM_LARGE: the size of its buffer
    int32_t older                 # allocation-order list within the class (oldest at head)
    int32_t newer
    int32_t hpos                  # position in the hash index while filling

cdef struct reasm_class:
    int32_t first                 # slot ids [first, first + count)
    int32_t count
    int32_t *free_stack
    int32_t nfree
    int32_t head                  # oldest filling slot, or -1
    int32_t tail                  # newest filling slot, or -1

cdef struct reasm_table:
    reasm_slot *slots
    int32_t nslots
    reasm_class cls[REASM_CLASSES]
    int32_t *index                # open-addressing hash of filling slots by (gen, base)
    uint32_t index_mask
    uint32_t index_shift
    uint64_t timeout_ms
    uint8_t *arena
    size_t arena_len


# -- filters (filter.pxi) ---------------------------------------------------------------------
cdef struct filter_hash:          # key -> first rule index; key 0 marks an empty slot
    uint64_t *keys
    uint32_t *rule
    uint32_t mask

cdef struct filter_table:
    bint default_allow
    uint32_t nrules
    uint8_t *allow                # per rule: 1 allow, 0 deny
    uint64_t *hits                # per rule
    uint64_t default_hits
    filter_hash mac
    filter_hash oui
    uint16_t *ethertype           # 65536 entries, or NULL without EtherType rules
    uint64_t *seen                # frames per EtherType (65536; index 0: 802.3 length frames)
    uint32_t guards               # [bridge] guard presets checked before the rules: 1 << GUARD_*
    uint64_t guard_hits[GUARDS]   # frames each preset denied


cdef struct seg_state:            # one segment of this site (segment.pxi); fixed while pumps run
    uint8_t port                  # the Engine's LAN port it lives on
    uint8_t ntags                 # tags it selects (and strips, and pushes): 0, 1 or 2
    uint16_t vid[VLAN_PATH_MAX]   # their VLAN ids, outer first
    uint16_t tpid[VLAN_PATH_MAX]  # TPIDs pushed on injection: 802.1Q, a two-tag path's outer 802.1ad
    bint carry_all                # alone on its port without vlan: every frame, tags and all


cdef struct token_bucket:         # a token bucket, in milliseconds of credit (bucket.pxi)
    uint64_t credit_ms
    uint64_t last_ms


cdef struct bridge_entry:         # one learnt MAC (bridge.pxi); each word read and written whole
    uint64_t key                  # 1 << 63 | segment << 48 | MAC; 0: an empty slot
    uint64_t info                 # last seen (ms), side, fast flips, when it last flipped (s)


cdef struct bridge_dir:           # one direction of one segment: written only by its own pump
    uint64_t learnt               # MACs added to the table by frames this way
    uint64_t moves                # MACs that came over from the other side (not fast: a move)
    uint64_t flips                # ... within BRIDGE_FLIP_MS of being seen there (a loop's mark)
    uint64_t full                 # sources not learnt: both of their buckets were full
    uint64_t over_share           # ... the segment held its share of the table (bridge_share)
    uint64_t loops                # loops detected (a hold begun)
    uint64_t episodes             # loops after a quiet spell: the control loop logs each once
    uint64_t hold_until_ms        # frames this way are not carried until then (at "block")
    uint64_t hold_ms              # the latest hold: doubles while the loop persists
    uint64_t loop_macs[BRIDGE_LOOP_MACS]   # the latest MACs seen on both sides, a ring
    uint32_t loop_mac_next
    uint32_t storm_count          # flooded frames carried in the current second
    uint64_t storm_second_ms      # when that second began


cdef struct bridge_seg:           # the bridge's state of one segment
    bridge_dir dir[2]             # DIR_TX, DIR_RX
    uint32_t entries              # table slots holding its MACs, aged ones until swept (under bridge_lock)


cdef struct bridge_conf:          # [bridge], swapped word by word on a reload (set_bridge)
    bint learning
    uint64_t mac_age_ms
    int loop_mode                 # LOOP_*
    uint32_t storm_limit          # flooded frames a second per segment and direction; 0: none


cdef struct trace_sample:         # one sampled drop for the control loop to log (drop.pxi)
    uint32_t more                 # drops of this reason and direction not sampled before it
    uint8_t direction             # DIR_TX or DIR_RX
    uint8_t reason                # DROP_*
    uint8_t addr_kind             # TRACE_NONE, TRACE_SOCKADDR or TRACE_MAC
    uint8_t addr_len
    uint8_t addr[SOCKADDR_LEN]


cdef struct dp_state:             # everything one site's datapath holds, shared by both directions
    int level
    int max_packet
    int tag_len
    uint32_t payload_max          # P: payload bytes per packet at this level and max_packet
    uint64_t now_ms               # clock_ms(), moved forward by whoever holds recv_lock

    # long-term secrets from the key file (none at level none): set once, before the engine
    uint8_t psk[SECRET_LEN]       # Noise PSK
    uint8_t index_root[SECRET_LEN]   # the key file's per-index secrets derive from it
    uint8_t cookie_key[SECRET_LEN]   # seals cookie replies
    mac_state mac1                # mac1 of handshake messages
    mac_state probe_mac           # tags of verify-peer packets

    # send side: touched only under send_lock
    pthread_mutex_t send_lock
    tx_session tx                 # what we send under
    tx_session tx_next            # a session we answered, used once the peer confirms it

    # receive side: touched only under recv_lock
    pthread_mutex_t recv_lock
    rx_session rx[RX_SESSIONS]    # physical slots; the roles below name them (-1: none)
    int rx_cur
    int rx_prev
    int rx_next
    uint32_t rx_gen               # the last reassembly generation handed out
    reasm_table reasm
    int last_drop                 # reason of the latest drop open_packet() counted (0: none)
    int last_rx_session           # session id (header byte 8) of the latest packet opened, -1: none
    uint64_t confirmed_ms         # when the latest confirmation promoted a session (0: never)
    uint64_t prev_until_ms        # the previous session's grace period ends then

    # the admission gate for handshake and probe packets (admit.pxi), under recv_lock
    uint32_t hs_expect            # the id of our initiation awaiting an answer (RESP, COOKIE)
    bint hs_expecting
    uint8_t hs_expect_mac1[MAC16_LEN]   # its mac1: a COOKIE answering it opens under it
    token_bucket answers_in       # RESPs to it a second: at most a few reach the control plane
    token_bucket cookies_in       # COOKIEs likewise, so forged ones cannot crowd out the RESP
    token_bucket hs_load          # handshake initiations a second, before etun is under load
    uint64_t under_load_until_ms
    uint8_t init_seen[INIT_SEEN_SLOTS * MAC16_LEN]   # mac1s of initiations, by their first bytes
    token_bucket probe_in         # authentic probes to the control plane
    token_bucket replies_in       # authentic probe replies to the control plane
    uint8_t probe_seen[PROBE_SEEN_SLOTS * TAG_LEN]   # a ring of their tags
    uint32_t probe_seen_next
    token_bucket foreign_in       # probes that do not authenticate
    uint8_t cookie_secret[SECRET_LEN]
    uint64_t cookie_secret_ms     # when it was drawn
    srclimit_entry *hs_sources    # SRCLIMIT_SLOTS: per-source budgets under load
    srclimit_entry *probe_sources   # SRCLIMIT_SLOTS: per-source budgets for probes
    uint64_t srclimit_seed        # keys the tables' hash, so nobody can aim at one slot
    uint8_t refused_addr[SOCKADDR_LEN]   # the latest source refused for auth, level or version
    uint32_t refused_len
    int refused_reason
    uint8_t refused_byte0         # that packet's first byte (its version, level and type)

    # counters per direction (DIR_TX, DIR_RX): each written by one thread at a time, the owner
    # of that direction's lock or round (drop.pxi); ctr_ctl holds drops the Python control
    # plane decided, shown with rx
    uint64_t ctr[2][N_COUNTERS]
    uint64_t ctr_ctl[N_COUNTERS]
    uint64_t seg_ctr[SEGMENTS_MAX][2][N_COUNTERS]   # the frame-level ones again, per segment

    # segments (segment.pxi): set before the engine starts; seg_peer under send_lock
    int nsegs
    seg_state seg[SEGMENTS_MAX]

    # filters: nic_ingress is read by whoever runs a tx round (under its engine's tx_lock),
    # tunnel_ingress under recv_lock; a swap holds those and filter_lock (filter.pxi)
    filter_table *filt[SEGMENTS_MAX][2]   # per segment and direction
    pthread_mutex_t filter_lock   # swaps, and Python reading a table's counts; never a pump

    # the bridge (bridge.pxi): the MAC table is read and refreshed by both pumps without a lock;
    # bridge_lock serialises only adding a MAC (rare), so no MAC is ever in the table twice
    bridge_conf bridge
    bridge_entry *macs            # BRIDGE_BUCKETS * BRIDGE_WAYS
    uint64_t bridge_seed          # keys the table's hash, so nobody can aim at one bucket
    pthread_mutex_t bridge_lock
    bridge_seg brseg[SEGMENTS_MAX]

    # drop trace: sampled drops for the debug log (drop.pxi)
    bint trace_on
    uint64_t trace_last_ms[2][N_COUNTERS]
    uint32_t trace_more[2][N_COUNTERS]
    pthread_mutex_t trace_lock    # guards the ring below
    trace_sample trace_ring[TRACE_SLOTS]
    int trace_head
    int trace_count


cdef struct gro_seg:              # what software GRO learned about one opened frame (gro.pxi)
    uint16_t l3                   # network header offset (after VLAN tags); 0: not mergeable
    uint16_t l4                   # TCP header offset
    uint16_t hdr                  # payload offset
    uint16_t payload              # payload bytes
    uint32_t seq
    bint v6


cdef struct engine_state:         # the two pumps, their buffers and what they share with Python
    dp_state *dp
    int nports                    # LAN ports: NICs (AF_PACKET) and TAP devices
    int port_fd[PORTS_MAX]
    int port_kind[PORTS_MAX]      # LAN_PACKET or LAN_TAP
    int next_port                 # where the next tx round starts reading (fairness)
    int lan_err                   # a LAN error met while other ports had frames: reported next
    int err_port                  # the port the latest LAN error came from
    int udp_fd
    int wake_fd                   # eventfd: written to stop both pumps
    int kick_fd[2]                # eventfds: wake pump PUMP_TX / PUMP_RX ahead of a reply, or to unpark
    int sleeping[2]               # set while that pump sleeps in poll()
    uint64_t spin_until_us[2]     # a kicked pump polls until then before sleeping again
    uint64_t active_us[2]         # when each pump last moved traffic
    int ctl_fd                    # eventfd: written when control packets are queued
    int stop
    uint16_t listen_port          # our UDP port, to spot our own packets on the LAN
    bint gso                      # UDP GSO in use (switched off if the kernel refuses it)
    bint gro                      # UDP GRO enabled on the socket
    int gso_errno                 # why GSO was switched off at run time; 0: it was not
    uint32_t spin_us              # keep polling this long before sleeping (0: sleep at once)

    pthread_mutex_t peer_lock     # guards peer, peer_len, peer_gen
    uint8_t peer[SOCKADDR_LEN]
    socklen_t peer_len            # 0: no peer address known yet
    uint32_t peer_gen             # bumped whenever the address changes
    uint32_t peer_roams           # changes made by authenticated packets (roaming)
    uint64_t last_auth_ms         # the latest authenticated data packet (rx pump)
    uint64_t last_send_ms         # the latest tunnel packet sent (tx rounds)
    uint64_t pump_stats[N_PUMP_STATS]
    int stall[2]                  # test hook (Engine.stall): that pump stops turning until stop
    int standby                   # 1: the standby of a pair: frames from either side are dropped

    # tx side: LAN -> tunnel, run by the tx pump or, while it sleeps, by the rx pump
    pthread_mutex_t tx_lock       # held for a whole tx round: guards the buffers below
    int tx_errno                  # a LAN error the rx pump met serving this side
    int tx_parked                 # 1: the tx pump sleeps, the rx pump runs the tx rounds
    bint tx_burst                 # the latest tx round was a big one
    uint64_t tx_burst_us          # when the latest big one was read
    uint8_t *frames               # TX_BATCH slots of FRAME_SLOT bytes
    mmsghdr lan_in[TX_BATCH]
    iovec lan_in_iov[2 * TX_BATCH]
    uint8_t lan_in_cmsg[TX_BATCH * CMSG_ROOM]
    uint8_t *cap_data[TX_BATCH]   # captured frames ready to seal (NULL: dropped)
    uint32_t cap_len[TX_BATCH]
    uint8_t cap_type[TX_BATCH]    # CAP_*
    uint8_t cap_seg[TX_BATCH]     # its segment, and the PCP of the tag it was selected by
    uint16_t gso_l3[TX_BATCH]     # where a super-frame's network header starts
    uint16_t gso_l4[TX_BATCH]     # ... its transport header
    uint16_t gso_hdr[TX_BATCH]    # ... its payload
    uint16_t gso_mss[TX_BATCH]    # ... and the segment size its host asked for
    bint gso_tcp[TX_BATCH]        # TCP (else UDP) segmentation
    uint8_t *seg_arena            # segments cut from super-frames, until the next flush
    uint32_t seg_used
    pkt_ref *pkts                 # TX_PKTS sealed datagrams waiting for the flush
    int npkts
    mmsghdr *udp_out              # TX_PKTS
    iovec *udp_out_iov            # 3 * TX_PKTS
    uint8_t *udp_out_cmsg         # TX_PKTS * CMSG_ROOM
    uint64_t stats_next_ms        # next PACKET_STATISTICS read
    uint64_t tx_now_ms            # clock_ms() when the current tx round began (the bridge's clock)

    # rx pump: tunnel -> LAN
    uint8_t *dgrams               # RX_BATCH slots of RX_SLOT bytes
    mmsghdr udp_in[RX_BATCH]
    iovec udp_in_iov[RX_BATCH]
    uint8_t udp_in_name[RX_BATCH * SOCKADDR_LEN]
    uint8_t udp_in_cmsg[RX_BATCH * CMSG_ROOM]
    uint32_t rxq_drops            # the socket's cumulative overflow count last seen
    frame_ref out[OUT_BATCH]
    int nout
    mmsghdr lan_out[OUT_BATCH]
    iovec lan_out_iov[3 * OUT_BATCH]   # a message: 2 iovecs, or a merged run: 1 + its frames
    int msg_frames[OUT_BATCH]     # frames each LAN message carries
    int msg_port[OUT_BATCH]       # ... and the port it goes to
    uint8_t gro_heads[OUT_BATCH * GRO_HEAD_ROOM]   # vnet + merged headers per merged run
    gro_seg segs[OUT_BATCH]       # what software GRO learned about each frame in out
    uint8_t *scratch              # OUT_BATCH decrypt targets of SCRATCH_LEN, for single-packet frames
    uint64_t expire_next_ms

    # control packets: rx pump -> Python
    pthread_mutex_t ctl_lock
    uint8_t *ctl_buf              # CTL_SLOTS of CTL_MAX bytes
    uint32_t ctl_len[CTL_SLOTS]
    uint8_t ctl_type[CTL_SLOTS]   # the packet's type; a SESSION message is queued opened
    uint8_t ctl_session[CTL_SLOTS]   # ... with the id of the receive session it came under
    uint8_t ctl_from[CTL_SLOTS * SOCKADDR_LEN]
    uint32_t ctl_fromlen[CTL_SLOTS]
    int ctl_head
    int ctl_count


cdef class Datapath:
    cdef dp_state *d
    cdef uint8_t *work_tx         # staging for frames sealed through the Python API / bench
    cdef uint8_t *work_rx         # staging for datagrams opened through the Python API / bench
    cdef uint8_t *scratch         # decrypt target for single-packet frames (SCRATCH_LEN)
    cdef int engines              # Engines built on this datapath
    cdef engine_state *engine_list[ENGINES_MAX]   # their states: a filter swap takes each tx_lock
    cdef readonly object filter_rules   # {(segment, direction): (default_allow, rules)} as installed
    cdef readonly int last_segment      # header byte 9 of the latest frame open() returned
