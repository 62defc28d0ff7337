# Outbound: one frame -> balanced fragments, encrypted once, each with its header and tag.
#
#   1. check the frame's length for its type and that a send session exists
#   2. plan n = ceil(L / P) fragments of q or q + 1 bytes; take counters base .. base + n - 1
#   3. at encrypt: ChaCha20 over the whole frame, in place, nonce = key_index || base
#   4. per fragment: header, body = a slice of the frame, tag = HMAC(header || body)
#   5. hand the scattered datagrams to the caller; nothing is copied

cdef inline void seal_drop(dp_state *d, int reason, const uint8_t *frame, uint32_t length,
                           uint8_t ftype) noexcept nogil:
    cdef uint32_t skip = VNET_HDR_LEN if ftype == TYPE_FRAME_VNET else 0
    if length >= skip:
        drop_frame(d, DIR_TX, reason, frame + skip, length - skip)
    else:
        drop_frame(d, DIR_TX, reason, NULL, 0)


cdef int seal_frame(dp_state *d, uint8_t *frame, uint32_t length, uint8_t ftype,
                    pkt_ref *out) noexcept nogil:
    """Seal one frame into `out` (room for MAX_FRAGS). Returns the packet count, or -DROP_*.

    The frame buffer is encrypted in place and needs TAILROOM spare bytes; the datagrams point
    into it, so it must stay untouched until they are sent. Caller holds send_lock.
    """
    cdef uint32_t n, q, r, i, off = 0, size
    cdef uint64_t base
    cdef uint8_t tag[SHA256_LEN]
    cdef pkt_ref *p
    if length < wire_min_len(ftype):
        seal_drop(d, DROP_RUNT, frame, length, ftype)
        return -DROP_RUNT
    if length > wire_max_len(ftype):
        seal_drop(d, DROP_OVERSIZED, frame, length, ftype)
        return -DROP_OVERSIZED
    if not d.send_ready:
        seal_drop(d, DROP_NO_SESSION, frame, length, ftype)
        return -DROP_NO_SESSION
    n = frag_count(length, d.payload_max)
    q = length // n
    r = length % n
    base = d.send_counter
    d.send_counter += n
    if d.level == LEVEL_ENCRYPT:
        if crypto_xor(&d.send_keys, base, frame, frame, length) != 0:
            drop_count(d, DIR_TX, DROP_CRYPTO_ERROR, 1)
            return -DROP_CRYPTO_ERROR
    for i in range(n):
        size = q + 1 if i < r else q
        p = &out[i]
        wire_put_header(p.meta, d.level, ftype, r, i, n, d.send_keys.index, base + i)
        p.body = frame + off
        p.body_len = size
        if d.level != LEVEL_NONE:
            if crypto_mac(&d.send_keys.mac, p.meta, HEADER_LEN, p.body, size, tag) != 0:
                drop_count(d, DIR_TX, DROP_CRYPTO_ERROR, 1)
                return -DROP_CRYPTO_ERROR
            memcpy(p.meta + HEADER_LEN, tag, TAG_LEN)
        off += size
    d.ctr[DIR_TX][C_FRAMES] += 1
    d.ctr[DIR_TX][C_BYTES] += length
    d.ctr[DIR_TX][C_PACKETS] += n
    if n > 1:
        d.ctr[DIR_TX][C_FRAGMENTS] += n
    return <int>n
