# The tunnel header (docs/PROTOCOL.md §1), every packet's first byte, and frame-length limits.
#
# The tunnel header (docs/PROTOCOL.md §1): the 16 bytes in front of data and SESSION packets,
# the first byte every packet starts with, and the frame-length limits per type.
#
#   0: version (2 bits) | level (2) | type (4)    1: frag_big   2: frag_index   3: frag_count
#   4..7: key_index    8: session (the receiver's id)    9: segment    10..15: counter (48 bits)

cdef uint64_t COUNTER_MAX = ((<uint64_t>1) << 48) - 1   # a session's last counter: 48 bits
# Too wide for a cpdef enum, so exported here, under the same name.
globals()["COUNTER_MAX"] = COUNTER_MAX

cdef enum:
    SESSION_MSG_MIN = 4           # bytes of a SESSION message (session.py)
    SESSION_MSG_MAX = 8192


cdef inline uint64_t wire_be48(const uint8_t *p) noexcept nogil:
    return (<uint64_t>pkt_be16(p) << 32) | pkt_be32(p + 2)


cdef inline void wire_put_be48(uint8_t *p, uint64_t v) noexcept nogil:
    pkt_put_be16(p, <uint16_t>(v >> 32))
    pkt_put_be32(p + 2, <uint32_t>v)


cdef inline uint8_t wire_first_byte(int level, int ptype) noexcept nogil:
    return <uint8_t>((WIRE_VERSION << 6) | (level << 4) | ptype)


cdef inline void wire_put_header(uint8_t *h, int level, int ptype, uint32_t big, uint32_t index,
                                 uint32_t count, uint32_t key_index, uint8_t session,
                                 uint8_t segment, uint64_t counter) noexcept nogil:
    h[0] = wire_first_byte(level, ptype)
    h[WIRE_BIG] = <uint8_t>big
    h[WIRE_INDEX] = <uint8_t>index
    h[WIRE_COUNT] = <uint8_t>count
    pkt_put_be32(h + WIRE_KEY_INDEX, key_index)
    h[WIRE_SESSION] = session
    h[WIRE_SEGMENT] = segment
    wire_put_be48(h + WIRE_COUNTER, counter)


cdef inline uint64_t wire_counter(const uint8_t *h) noexcept nogil:
    return wire_be48(h + WIRE_COUNTER)


cdef inline void wire_nonce(const uint8_t *h, uint64_t base, uint8_t *nonce) noexcept nogil:
    """The ChaCha20 nonce of a frame: header bytes 4..15 (key_index, session, segment) with the
    counter of the frame's first fragment (PROTOCOL.md §3.1)."""
    memcpy(nonce, h + WIRE_KEY_INDEX, NONCE_HEAD_LEN)
    wire_put_be48(nonce + NONCE_HEAD_LEN, base)


cdef inline uint8_t wire_version(uint8_t b0) noexcept nogil:
    return b0 >> 6


cdef inline uint8_t wire_level(uint8_t b0) noexcept nogil:
    return (b0 >> 4) & 3


cdef inline uint8_t wire_type(uint8_t b0) noexcept nogil:
    return b0 & 15


cdef inline bint wire_is_data(uint8_t ptype) noexcept nogil:
    """Types carried by the datapath's seal/open: frames, and SESSION messages."""
    return ptype == TYPE_FRAME or ptype == TYPE_FRAME_VNET or ptype == TYPE_SESSION


cdef inline bint wire_is_handshake(uint8_t ptype) noexcept nogil:
    return ptype == TYPE_INIT or ptype == TYPE_RESP or ptype == TYPE_COOKIE


cdef inline bint wire_is_probe(uint8_t ptype) noexcept nogil:
    return ptype == TYPE_PROBE or ptype == TYPE_PROBE_REPLY


cdef inline bint wire_is_etun(uint8_t b0) noexcept nogil:
    """Whether a first byte is one an etun of this version sends (its own-packet check)."""
    cdef uint8_t ptype = wire_type(b0)
    return (wire_version(b0) == WIRE_VERSION and wire_level(b0) != LEVEL_RESERVED
            and (wire_is_data(ptype) or wire_is_handshake(ptype) or wire_is_probe(ptype)))


cdef inline uint32_t wire_min_len(int ptype) noexcept nogil:
    if ptype == TYPE_SESSION:
        return SESSION_MSG_MIN
    return MIN_FRAME_LEN + (VNET_HDR_LEN if ptype == TYPE_FRAME_VNET else 0)


cdef inline uint32_t wire_max_len(int ptype) noexcept nogil:
    if ptype == TYPE_SESSION:
        return SESSION_MSG_MAX
    return MAX_FRAME_LEN + (VNET_HDR_LEN if ptype == TYPE_FRAME_VNET else 0)


# For Python: the levels and packet types by name.
LEVELS = {"none": LEVEL_NONE, "auth": LEVEL_AUTH, "encrypt": LEVEL_ENCRYPT}
LEVEL_NAMES = {v: k for k, v in LEVELS.items()}
HANDSHAKE_TYPES = (TYPE_INIT, TYPE_RESP, TYPE_COOKIE)
TYPE_NAMES = {TYPE_FRAME: "FRAME", TYPE_FRAME_VNET: "FRAME_VNET", TYPE_SESSION: "SESSION", TYPE_INIT: "INIT",
              TYPE_RESP: "RESP", TYPE_COOKIE: "COOKIE", TYPE_PROBE: "PROBE", TYPE_PROBE_REPLY: "PROBE_REPLY"}
