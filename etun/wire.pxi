# Header fields: big-endian loads and stores, and the 16-byte header writer (docs/PROTOCOL.md §1).

cdef inline uint32_t wire_be32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline uint64_t wire_be64(const uint8_t *p) noexcept nogil:
    return (<uint64_t>wire_be32(p) << 32) | wire_be32(p + 4)


cdef inline void wire_put_be32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 24)
    p[1] = <uint8_t>(v >> 16)
    p[2] = <uint8_t>(v >> 8)
    p[3] = <uint8_t>v


cdef inline void wire_put_be64(uint8_t *p, uint64_t v) noexcept nogil:
    wire_put_be32(p, <uint32_t>(v >> 32))
    wire_put_be32(p + 4, <uint32_t>v)


cdef inline void wire_put_header(uint8_t *h, int level, int ptype, uint32_t big, uint32_t index,
                                 uint32_t count, uint32_t key_index, uint64_t counter) noexcept nogil:
    h[0] = <uint8_t>((WIRE_VERSION << 6) | (level << 4) | ptype)
    h[1] = <uint8_t>big
    h[2] = <uint8_t>index
    h[3] = <uint8_t>count
    wire_put_be32(h + 4, key_index)
    wire_put_be64(h + 8, counter)


cdef inline uint32_t wire_min_len(int ptype) noexcept nogil:
    return MIN_FRAME_LEN + (VNET_HDR_LEN if ptype == TYPE_FRAME_VNET else 0)


cdef inline uint32_t wire_max_len(int ptype) noexcept nogil:
    return MAX_FRAME_LEN + (VNET_HDR_LEN if ptype == TYPE_FRAME_VNET else 0)
