# Outbound: one frame -> balanced fragments, encrypted once, each with its header and tag.
#
#   1. check the frame's length for its type and that a send session exists
#   2. plan n = ceil(L / P) fragments of q or q + 1 bytes; take counters base .. base + n - 1
#   3. at encrypt: ChaCha20 over the whole frame, in place, nonce = key_index || session ||
#      segment || base (a SESSION message: under the session's own keys)
#   4. per fragment: header, body = a slice of the frame, tag = HMAC(header || body)
#   5. hand the scattered datagrams to the caller; nothing is copied

cdef inline void seal_drop(dp_state *d, int reason, const uint8_t *frame, uint32_t length,
                           uint8_t ftype) noexcept nogil:
    cdef uint32_t skip = VNET_HDR_LEN if ftype == TYPE_FRAME_VNET else 0
    if length >= skip:
        drop_frame(d, DIR_TX, reason, frame + skip, length - skip)
    else:
        drop_frame(d, DIR_TX, reason, NULL, 0)


cdef int seal_frame(dp_state *d, uint8_t *frame, uint32_t length, uint8_t ftype, uint8_t segment,
                    pkt_ref *out) noexcept nogil:
    """Seal one frame (or SESSION message) of `segment` into `out` (room for MAX_FRAGS).
    Returns the packet count, or -DROP_*.

    The frame buffer is encrypted in place and needs TAILROOM spare bytes; the datagrams point
    into it, so it must stay untouched until they are sent. Caller holds send_lock.
    """
    cdef uint32_t n, q, r, i, off = 0, size
    cdef uint64_t base
    cdef uint8_t tag[SHA256_LEN]
    cdef uint8_t nonce[CHACHA_NONCE_LEN]
    cdef pkt_ref *p
    cdef tx_session *t = &d.tx
    cdef keyset *keys = &t.ctl if ftype == TYPE_SESSION else &t.data
    if length < wire_min_len(ftype):
        seal_drop(d, DROP_RUNT, frame, length, ftype)
        return -DROP_RUNT
    if length > wire_max_len(ftype):
        seal_drop(d, DROP_OVERSIZED, frame, length, ftype)
        return -DROP_OVERSIZED
    n = frag_count(length, d.payload_max)
    if not t.live or t.counter + n > COUNTER_MAX + 1:
        # No session, or its counters are used up (the control plane renews sessions long
        # before: PROTOCOL.md §5.4).
        seal_drop(d, DROP_NO_SESSION, frame, length, ftype)
        return -DROP_NO_SESSION
    q = length // n
    r = length % n
    base = t.counter
    t.counter += n
    if d.level == LEVEL_ENCRYPT:
        pkt_put_be32(nonce, t.index)         # the header's bytes 4..9, as wire_nonce() reads them
        nonce[WIRE_SESSION - WIRE_KEY_INDEX] = t.peer_id
        nonce[WIRE_SEGMENT - WIRE_KEY_INDEX] = segment
        wire_put_be48(nonce + NONCE_HEAD_LEN, base)
        if crypto_xor(keys, nonce, frame, frame, length) != 0:
            drop_count(d, DIR_TX, DROP_CRYPTO_ERROR, 1)
            return -DROP_CRYPTO_ERROR
    for i in range(n):
        size = q + 1 if i < r else q
        p = &out[i]
        wire_put_header(p.meta, d.level, ftype, r, i, n, t.index, t.peer_id, segment, base + i)
        p.body = frame + off
        p.body_len = size
        if d.level != LEVEL_NONE:
            if crypto_mac(&keys.mac, p.meta, HEADER_LEN, p.body, size, tag) != 0:
                drop_count(d, DIR_TX, DROP_CRYPTO_ERROR, 1)
                return -DROP_CRYPTO_ERROR
            memcpy(p.meta + HEADER_LEN, tag, TAG_LEN)
        off += size
    if ftype == TYPE_SESSION:
        d.ctr[DIR_TX][C_CONTROL] += 1            # frames and bytes count the LAN's traffic only
    else:
        d.ctr[DIR_TX][C_FRAMES] += 1
        d.ctr[DIR_TX][C_BYTES] += length
    d.ctr[DIR_TX][C_PACKETS] += n
    if n > 1:
        d.ctr[DIR_TX][C_FRAGMENTS] += n
    return <int>n


cdef list seal_datagrams(Datapath dp, frame, uint8_t ftype, uint8_t segment):
    """Datapath.seal(): one frame from Python through dp's staging buffer, its datagrams as bytes."""
    cdef dp_state *d = dp.d
    cdef const uint8_t[:] view = frame
    cdef Py_ssize_t length = view.shape[0]
    cdef pkt_ref pkts[MAX_FRAGS]
    cdef int n, i
    if length > MAX_PAYLOAD_LEN:
        drop_frame(d, DIR_TX, DROP_OVERSIZED, NULL, 0)
        return []
    if length:
        memcpy(dp.work_tx, &view[0], length)   # length <= MAX_PAYLOAD_LEN, work_tx's size
    pthread_mutex_lock(&d.send_lock)
    n = seal_frame(d, dp.work_tx, <uint32_t>length, ftype, segment, pkts)
    pthread_mutex_unlock(&d.send_lock)
    out = []
    for i in range(n):
        out.append(PyBytes_FromStringAndSize(<char *>pkts[i].meta, HEADER_LEN)
                   + PyBytes_FromStringAndSize(<char *>pkts[i].body, pkts[i].body_len)
                   + PyBytes_FromStringAndSize(<char *>pkts[i].meta + HEADER_LEN, d.tag_len))
    return out
