# Balanced fragmentation: the plan a sender cuts a frame by, and what a receiver reads off one fragment.

cdef inline uint32_t frag_payload_max(int level, int max_packet) noexcept nogil:
    """P: the largest payload per packet, keeping every datagram below max_packet bytes."""
    return <uint32_t>(max_packet - 1 - UDP_HEADER_LEN - HEADER_LEN - (TAG_LEN if level != LEVEL_NONE else 0))


cdef inline uint32_t frag_count(uint32_t length, uint32_t payload_max) noexcept nogil:
    return (length + payload_max - 1) // payload_max


cdef inline uint32_t frag_offset(uint32_t i, uint32_t q, uint32_t r) noexcept nogil:
    """Fragment i starts here: the first r fragments hold q + 1 bytes, the rest q."""
    return i * q + (i if i < r else r)


cdef inline int frag_parse(const uint8_t *head, uint32_t size, uint32_t tag_len, int ptype,
                           uint32_t *q, uint32_t *length) noexcept nogil:
    """Validate one fragment's fields (PROTOCOL.md §2) and derive q and the frame length.

    Returns 0, or -1 when the fields cannot describe a frame of this type (malformed),
    including a payload larger than any max_packet allows: no sender makes one, and a
    receiver's single-packet buffers are sized by that bound.
    """
    cdef uint32_t r = head[WIRE_BIG], i = head[WIRE_INDEX], n = head[WIRE_COUNT]
    cdef uint64_t counter = wire_counter(head)
    cdef uint32_t qq
    if n == 0 or i >= n or r >= n or counter < i or size == 0:
        return -1
    if size > <uint32_t>(MAX_PACKET_MAX - 1 - UDP_HEADER_LEN - HEADER_LEN) - tag_len:
        return -1
    qq = size - 1 if i < r else size
    if qq == 0:
        return -1
    length[0] = n * qq + r
    q[0] = qq
    if length[0] < wire_min_len(ptype) or length[0] > wire_max_len(ptype):
        return -1
    return 0
