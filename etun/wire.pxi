# The 16-byte tunnel header (docs/PROTOCOL.md §1): writing it, and the frame-length limits per type.

cdef inline void wire_put_header(uint8_t *h, int level, int ptype, uint32_t big, uint32_t index,
                                 uint32_t count, uint32_t key_index, uint64_t counter) noexcept nogil:
    h[0] = <uint8_t>((WIRE_VERSION << 6) | (level << 4) | ptype)
    h[1] = <uint8_t>big
    h[2] = <uint8_t>index
    h[3] = <uint8_t>count
    pkt_put_be32(h + 4, key_index)
    pkt_put_be64(h + 8, counter)


cdef inline uint8_t wire_version(uint8_t b0) noexcept nogil:
    return b0 >> 6


cdef inline uint8_t wire_level(uint8_t b0) noexcept nogil:
    return (b0 >> 4) & 3


cdef inline uint8_t wire_type(uint8_t b0) noexcept nogil:
    return b0 & 15


cdef inline bint wire_is_control(uint8_t ptype) noexcept nogil:
    return ptype == TYPE_HELLO or ptype == TYPE_PROBE or ptype == TYPE_PROBE_REPLY


cdef inline bint wire_is_data(uint8_t ptype) noexcept nogil:
    return ptype == TYPE_FRAME or ptype == TYPE_FRAME_VNET


cdef inline bint wire_is_etun(uint8_t b0) noexcept nogil:
    """Whether a first byte is one an etun of this version sends (its own-packet check)."""
    return (wire_version(b0) == WIRE_VERSION and wire_level(b0) != 3
            and (wire_is_data(wire_type(b0)) or wire_is_control(wire_type(b0))))


cdef inline uint32_t wire_min_len(int ptype) noexcept nogil:
    return MIN_FRAME_LEN + (VNET_HDR_LEN if ptype == TYPE_FRAME_VNET else 0)


cdef inline uint32_t wire_max_len(int ptype) noexcept nogil:
    return MAX_FRAME_LEN + (VNET_HDR_LEN if ptype == TYPE_FRAME_VNET else 0)
