# Shared datapath declarations: sizes and limits, packet types, counters and drop reasons, state structs.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from etun._openssl cimport EVP_CIPHER_CTX, SHA256_CTX
from etun._linux cimport pthread_mutex_t, mmsghdr, iovec, socklen_t


cdef enum:
    WIRE_VERSION = 1
    HEADER_LEN = 16           # bytes of header before the payload
    TAG_LEN = 16              # bytes of HMAC-SHA256-128 after the payload
    UDP_HEADER_LEN = 8
    KEY_LEN = 32              # bytes of a ChaCha20 key, an HMAC key, a session secret
    VNET_HDR_LEN = 10         # sizeof(struct virtio_net_hdr)
    ETH_HEADER_LEN = 14
    MIN_FRAME_LEN = 14                        # an Ethernet header and nothing else
    MAX_FRAME_LEN = 65557                     # 14 + two VLAN tags + the largest IP packet
    MAX_PAYLOAD_LEN = MAX_FRAME_LEN + VNET_HDR_LEN   # the largest thing fragmented (FRAME_VNET)
    MAX_FRAGS = 255                           # frag_count is one byte
    MIN_MAX_PACKET = 320                      # keeps MAX_PAYLOAD_LEN within MAX_FRAGS fragments
    MAX_MAX_PACKET = 9000
    CHACHA_BLOCK = 64         # ChaCha20 runs on whole blocks; buffers keep this much spare room
    TAILROOM = 64             # spare bytes after every buffer the cipher writes or reads

    LEVEL_NONE = 0
    LEVEL_AUTH = 1
    LEVEL_ENCRYPT = 2

    TYPE_FRAME = 1
    TYPE_FRAME_VNET = 2
    TYPE_HELLO = 4
    TYPE_PROBE = 5
    TYPE_PROBE_REPLY = 6

    REPLAY_BLOCKS = 64                        # 64-bit words in the RFC 6479 bitmap
    REPLAY_WINDOW = (REPLAY_BLOCKS - 1) * 64  # how far behind the highest a counter may be: 4032

    KEY_LOOKAHEAD = 64        # key indices ahead of the current one a receiver will derive
    CONTROL_BURST = 50        # unverified control packets (probes, foreign HELLOs) queued at once
    CONTROL_PER_SEC = 50      # ... and per second
    HELLO_BURST = 10          # authentic HELLOs from a sender nonce other than the peer's current
    HELLO_PER_SEC = 10        # ... (a restart, or a recorded earlier run); the current one is free
    HELLO_SENDERS = 8         # sender nonces whose HELLO counters the pump remembers
    DERIVE_BURST = 8          # on-demand derivations allowed at once
    DERIVE_PER_SEC = 8        # ... and refilled per second

    SMALL_BUF_LEN = 2048      # reassembly buffer for frames up to 1522 bytes + vnet header
    LARGE_BUF_LEN = 65664     # MAX_PAYLOAD_LEN + TAILROOM, rounded up to 64

    LAN_PACKET = 0            # the LAN side is an AF_PACKET socket on a NIC
    LAN_TAP = 1               # ... or a TAP device
    TX_BATCH = 64             # frames per LAN read
    TX_PKTS = 1024            # sealed datagrams held before a UDP flush (>= MAX_FRAGS)
    FRAME_AT = 14             # a captured frame starts here in its slot: vnet header and VLAN room before it
    FRAME_SLOT = 65664        # FRAME_AT + MAX_FRAME_LEN + TAILROOM, rounded up to 64
    RX_BATCH = 32             # datagram buffers per UDP read; each may hold a GRO train
    RX_SLOT = 65600           # the largest UDP payload + TAILROOM
    OUT_BATCH = 64            # frames per LAN write
    GRO_HEAD_ROOM = 144       # vnet header + L2 (two tags) + IPv6 + TCP with options: 10+22+40+60
    GSO_SEGMENTS = 64         # datagrams per UDP GSO send (the kernel's UDP_MAX_SEGMENTS floor)
    GSO_BYTES = 65000         # payload bytes per UDP GSO send (below the 64 KiB IP limit)
    SOCKADDR_LEN = 28         # sizeof(struct sockaddr_in6), the largest peer address
    CMSG_ROOM = 64            # control-message bytes per datagram (auxdata, GRO size, drops)
    CTL_SLOTS = 32            # control packets queued for Python
    CTL_MAX = 9216            # the largest control packet kept (probes fill max_packet)

    PUMP_TX = 0               # index of the LAN -> tunnel pump in per-pump arrays
    PUMP_RX = 1               # ... and of the tunnel -> LAN pump
    KICK_SPIN_US = 300        # how long a kicked pump polls for the reply it was woken for
    KICK_RECENT_US = 100000   # kick only a pump that moved traffic this recently: a flow both ways
    PARK_AFTER_US = 50000     # the tx pump parks after this long without a burst (pump.pxi)
    TX_BURST_FRAMES = 8       # a tx round of this many frames (or a super-frame) unparks it

    PUMP_TX_WAKEUPS = 0       # tx rounds (either pump): LAN reads that returned frames
    PUMP_TX_SLEEPS = 1        # tx pump: polls because the LAN had nothing, or each 100 ms parked
    PUMP_UDP_SENDS = 2        # tx rounds: sendmmsg calls
    PUMP_UDP_MSGS = 3         # ... messages they carried (a GSO train is one)
    PUMP_RX_WAKEUPS = 4       # rx pump: UDP reads that returned datagrams
    PUMP_RX_SLEEPS = 5        # ... polls because the socket had nothing
    PUMP_RX_DGRAMS = 6        # ... datagrams read (a GRO train counts each)
    PUMP_LAN_SENDS = 7        # ... sendmmsg/writev calls to the LAN
    PUMP_TX_SERVED = 8        # tx rounds the rx pump ran, the tx pump parked or asleep

    OPEN_HELD = 0             # open_packet(): fragment stored, frame not complete yet
    OPEN_FRAME = 1            # open_packet(): a complete frame is in the frame_ref
    OPEN_CONTROL = 2          # open_packet(): a control packet for the Python control plane


# Per-direction counters. Everything from DROP_MALFORMED on is a drop reason; `etun status`
# shows the lowercase name without the prefix (COUNTER_NAMES in _fast.pyx, same order).
cdef enum:
    C_FRAMES = 0              # frames carried (tx: captured and sent; rx: delivered to the LAN)
    C_BYTES                   # bytes of those frames
    C_PACKETS                 # tunnel packets (tx: sent; rx: received, before any check)
    C_FRAGMENTS               # tunnel packets that carried part of a multi-packet frame
    C_REASSEMBLED             # multi-packet frames completed
    C_CONTROL                 # control packets (HELLO, PROBE, ...) passed to the control plane
    C_SUPERFRAMES             # GSO super-frames from the LAN cut into wire-size frames (tx)
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
    N_COUNTERS


cdef struct mac_state:        # HMAC-SHA256 with the key's pads already absorbed
    SHA256_CTX inner
    SHA256_CTX outer

cdef struct keyset:           # the secrets of one key index of one direction
    EVP_CIPHER_CTX *cipher    # ChaCha20 with the key set; only the IV changes per frame
    mac_state mac
    uint32_t index
    bint live

cdef struct replay_window:    # RFC 6479 sliding window
    uint64_t top              # highest counter accepted
    bint any                  # whether any counter was accepted yet
    uint64_t bits[REPLAY_BLOCKS]

cdef struct rx_key:           # a receive key index together with its replay window
    keyset keys
    replay_window window
    uint32_t gen              # receive session generation the keys belong to

cdef struct pkt_ref:          # one sealed datagram, scattered: head, body, tag
    uint8_t meta[32]          # header in [0:16], tag in [16:32]
    const uint8_t *body
    uint32_t body_len

cdef struct frame_ref:        # one opened frame
    uint8_t *data
    uint32_t length
    uint8_t ftype             # TYPE_FRAME or TYPE_FRAME_VNET
    int32_t slot              # reassembly slot to release once delivered, or -1

cdef struct reasm_slot:
    uint64_t base             # counter of fragment 0: identifies the frame with gen
    uint64_t t_first_ms       # arrival of the first fragment held
    uint64_t have[4]          # bitmap of fragment indices held
    uint8_t *buf
    uint32_t gen
    uint32_t key_index
    uint32_t q                # fragment size; the first r fragments hold q + 1
    uint16_t n
    uint16_t r
    uint16_t got
    uint8_t ftype
    uint8_t cls               # 0: small buffers, 1: large
    uint8_t state             # SLOT_FREE, SLOT_FILLING, SLOT_DELIVERING
    int32_t older             # allocation-order list within the class (oldest at head)
    int32_t newer
    int32_t hpos              # position in the hash index while filling

cdef struct reasm_class:
    int32_t first             # slot ids [first, first + count)
    int32_t count
    int32_t *free_stack
    int32_t nfree
    int32_t head              # oldest filling slot, or -1
    int32_t tail              # newest filling slot, or -1

cdef struct reasm_table:
    reasm_slot *slots
    int32_t nslots
    reasm_class cls[2]
    int32_t *index            # open-addressing hash of filling slots by (gen, base)
    uint32_t index_mask
    uint32_t index_shift
    uint64_t timeout_ms
    uint8_t *arena


cdef struct token_bucket:       # a token bucket, in milliseconds of credit (bucket.pxi)
    uint64_t credit_ms
    uint64_t last_ms


cdef struct hello_sender:       # the highest HELLO counter seen from one sender nonce
    uint8_t sender[16]
    uint64_t counter
    uint64_t used_ms
    bint used


cdef struct dp_state:          # everything one site's datapath holds, shared by both directions
    int level
    int max_packet
    int tag_len
    uint32_t payload_max              # P: payload bytes per packet at this level and max_packet
    uint64_t now_ms                   # coarse monotonic clock, set by the caller per batch

    # send side: touched only under send_lock
    pthread_mutex_t send_lock
    keyset send_keys
    uint8_t send_secret[KEY_LEN]
    bint send_ready
    uint64_t send_counter             # next counter; only grows while this process runs
    uint64_t ctr_tx[N_COUNTERS]

    # receive side: touched only under recv_lock
    pthread_mutex_t recv_lock
    uint8_t recv_secret[KEY_LEN]
    uint32_t recv_gen                 # bumped by every new receive session
    bint recv_ready
    rx_key rxk[5]                     # physical slots; the roles below name them (-1: none)
    int rx_cur
    int rx_prev
    int rx_next
    int rx_trial
    int rx_old                        # the current index of the previous receive session
    token_bucket derive               # on-demand key derivations
    reasm_table reasm
    uint64_t ctr_rx[N_COUNTERS]
    uint64_t ctr_ctl[N_COUNTERS]      # drops the Python control plane decided; shown with rx
    mac_state ctl_mac                 # the control key, to let authentic HELLOs pass a flood
    bint ctl_ready
    token_bucket ctl_foreign            # control packets the pump cannot verify
    token_bucket ctl_other              # authentic HELLOs of senders other than the peer's current
    hello_sender ctl_senders[HELLO_SENDERS]
    uint8_t ctl_peer[16]              # the peer's current sender nonce (the control plane's word)
    bint ctl_peer_set
    void *filt[2]                     # filter_table of nic_ingress (tx) and tunnel_ingress (rx)
    int last_drop                     # reason of the latest drop, for tests (0: none)


cdef struct gro_seg_t:         # what software GRO learned about one opened frame (gro.pxi)
    uint16_t l3                   # network header offset (after VLAN tags); 0: not mergeable
    uint16_t l4                   # TCP header offset
    uint16_t hdr                  # payload offset
    uint16_t payload              # payload bytes
    uint32_t seq
    bint v6


cdef struct engine_state:     # the two pumps, their buffers and what they share with Python
    dp_state *dp
    int lan_fd
    int lan_kind
    int udp_fd
    int wake_fd                       # eventfd: written to stop both pumps
    int kick_fd[2]                    # eventfds: wake pump PUMP_TX / PUMP_RX ahead of a reply, or to unpark
    int sleeping[2]                   # set while that pump sleeps in poll()
    uint64_t spin_until_us[2]         # a kicked pump polls until then before sleeping again
    uint64_t active_us[2]             # when each pump last moved traffic
    int ctl_fd                        # eventfd: written when control packets are queued
    int stop
    uint16_t listen_port              # our UDP port, to spot our own packets on the LAN
    bint gso                          # UDP GSO in use (switched off if the kernel refuses it)
    bint gro                          # UDP GRO enabled on the socket
    int gso_errno                     # why GSO was switched off at run time; 0: it was not
    uint32_t spin_us                  # keep polling this long before sleeping (0: sleep at once)

    pthread_mutex_t peer_lock         # guards peer, peer_len, peer_gen
    uint8_t peer[SOCKADDR_LEN]
    socklen_t peer_len                # 0: no peer address known yet
    uint32_t peer_gen                 # bumped whenever the address changes
    uint32_t peer_roams               # changes made by authenticated packets (roaming)
    uint64_t last_auth_ms             # the latest authenticated data packet (rx pump)
    uint64_t last_send_ms             # the latest tunnel packet sent (tx rounds)
    uint64_t pump_stats[9]            # PUMP_* counts: how well the pumps batch

    # tx side: LAN -> tunnel, run by the tx pump or, while it sleeps, by the rx pump
    pthread_mutex_t tx_lock           # held for a whole tx round: guards the buffers below
    int tx_errno                      # a LAN error the rx pump met serving this side
    int tx_parked                     # 1: the tx pump sleeps, the rx pump runs the tx rounds
    bint tx_burst                     # the latest tx round was a big one
    uint64_t tx_burst_us              # when the latest big one was read
    uint8_t *frames                   # TX_BATCH slots of FRAME_SLOT bytes
    mmsghdr lan_in[TX_BATCH]
    iovec lan_in_iov[2 * TX_BATCH]
    uint8_t lan_in_cmsg[TX_BATCH * CMSG_ROOM]
    uint8_t *cap_data[TX_BATCH]       # captured frames ready to seal (NULL: dropped)
    uint32_t cap_len[TX_BATCH]
    uint8_t cap_type[TX_BATCH]
    uint16_t gso_l3[TX_BATCH]         # where a super-frame's network header starts
    uint16_t gso_l4[TX_BATCH]         # ... its transport header
    uint16_t gso_hdr[TX_BATCH]        # ... its payload
    uint16_t gso_mss[TX_BATCH]        # ... and the segment size its host asked for
    bint gso_tcp[TX_BATCH]            # TCP (else UDP) segmentation
    uint8_t *seg_arena                # segments cut from super-frames, until the next flush
    uint32_t seg_used
    pkt_ref *pkts                     # TX_PKTS sealed datagrams waiting for the flush
    int npkts
    mmsghdr *udp_out                  # TX_PKTS
    iovec *udp_out_iov                # 3 * TX_PKTS
    uint8_t *udp_out_cmsg             # TX_PKTS * CMSG_ROOM
    uint64_t stats_next_ms            # next PACKET_STATISTICS read

    # rx pump: tunnel -> LAN
    uint8_t *dgrams                   # RX_BATCH slots of RX_SLOT bytes
    mmsghdr udp_in[RX_BATCH]
    iovec udp_in_iov[RX_BATCH]
    uint8_t udp_in_name[RX_BATCH * SOCKADDR_LEN]
    uint8_t udp_in_cmsg[RX_BATCH * CMSG_ROOM]
    uint32_t rxq_drops                # the socket's cumulative overflow count last seen
    frame_ref out[OUT_BATCH]
    int nout
    mmsghdr lan_out[OUT_BATCH]
    iovec lan_out_iov[3 * OUT_BATCH]  # a message: 2 iovecs, or a merged run: 1 + its frames
    int msg_frames[OUT_BATCH]         # frames each LAN message carries
    uint8_t gro_heads[OUT_BATCH * GRO_HEAD_ROOM]   # vnet + merged headers per merged run
    gro_seg_t segs[OUT_BATCH]         # what software GRO learned about each frame in out
    uint8_t *scratch                  # OUT_BATCH decrypt targets for single-packet frames
    uint64_t expire_next_ms

    # control packets: rx pump -> Python
    pthread_mutex_t ctl_lock
    uint8_t *ctl_buf                  # CTL_SLOTS of CTL_MAX bytes
    uint32_t ctl_len[CTL_SLOTS]
    uint8_t ctl_from[CTL_SLOTS * SOCKADDR_LEN]
    uint32_t ctl_fromlen[CTL_SLOTS]
    int ctl_head
    int ctl_count


cdef class Datapath:
    cdef dp_state *d
    cdef uint8_t *work_tx             # staging for frames sealed through the Python API / bench
    cdef uint8_t *work_rx             # staging for datagrams opened through the Python API / bench
    cdef uint8_t *scratch             # decrypt target for single-packet frames
    cdef int engines                  # Engines built on this datapath: filters are fixed then
