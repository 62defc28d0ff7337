# Inbound: a data or SESSION datagram checked, opened and reassembled, or dropped under its reason.
#
# Inbound: one data or SESSION datagram -> checked in the order of PROTOCOL.md §3.2 -> a frame (or
# a SESSION message for the control plane), a held fragment, or a drop counted under its reason.
# Handshake and probe packets take the admission gate instead (admit.pxi).
#
#   1. header sane and fragment fields consistent, else malformed; our version and level
#   2. a receive session with the header's id
#   3. key index held by that session (SESSION messages: the session's own keys), tag verified
#      in constant time
#   4. counter new to the replay window -- only now does the window move, and only now may a
#      packet confirm a session or move its key index
#   5. single-packet frame: decrypt and deliver; else copy into reassembly, and when the last
#      fragment arrives decrypt the whole frame in one pass and deliver it

cdef inline int open_drop(dp_state *d, int reason, const uint8_t *src, uint32_t srclen) noexcept nogil:
    drop_datagram(d, reason, src, srclen)
    d.last_drop = reason
    return -reason


cdef void open_refused(dp_state *d, int reason, uint8_t b0, const uint8_t *src, uint32_t srclen) noexcept nogil:
    """Remember who was refused for a reason an operator must hear of (another version, level
    or key material): the control loop says so in one log line now and then."""
    d.refused_reason = reason
    d.refused_byte0 = b0
    d.refused_len = srclen if srclen <= SOCKADDR_LEN else 0
    if d.refused_len:
        memcpy(d.refused_addr, src, d.refused_len)


cdef inline void open_expire(dp_state *d) noexcept nogil:
    """Discard incomplete frames older than the reassembly timeout at d.now_ms, and a previous
    session whose grace period ended. Under recv_lock."""
    cdef uint32_t n = reasm_expire(&d.reasm, d.now_ms)
    if n:
        drop_count(d, DIR_RX, DROP_FRAG_TIMEOUT, n)
    session_expire(d)


cdef int open_header(dp_state *d, const uint8_t *pkt, uint32_t length, const uint8_t *src,
                     uint32_t srclen) noexcept nogil:
    """Step 1 for every packet: 0 when it is of our version and a known kind, else -DROP_*."""
    if length < 1:
        return open_drop(d, DROP_MALFORMED, src, srclen)
    if wire_version(pkt[0]) != WIRE_VERSION:
        open_refused(d, DROP_VERSION, pkt[0], src, srclen)
        return open_drop(d, DROP_VERSION, src, srclen)
    if wire_level(pkt[0]) == LEVEL_RESERVED:
        return open_drop(d, DROP_MALFORMED, src, srclen)
    return 0


cdef inline void open_count_frame(dp_state *d, uint8_t ftype, uint32_t length) noexcept nogil:
    """Frames and bytes count the LAN's traffic; a SESSION message counts as control when the
    control plane takes it (ctlq.pxi)."""
    if ftype != TYPE_SESSION:
        d.ctr[DIR_RX][C_FRAMES] += 1
        d.ctr[DIR_RX][C_BYTES] += length


cdef keyset *open_keys_of(dp_state *d, uint32_t gen, uint8_t ptype, uint32_t index) noexcept nogil:
    """The keys a completed frame of receive session `gen` was sealed under, if still held."""
    cdef int k, j
    for k in range(RX_SESSIONS):
        if session_in_role(d, k) and d.rx[k].live and d.rx[k].gen == gen:
            if ptype == TYPE_SESSION:
                return &d.rx[k].ctl
            j = session_rx_index(&d.rx[k], index)
            return &d.rx[k].idx[j].keys if j >= 0 else NULL
    return NULL


cdef int open_commit(dp_state *d, int k, uint32_t index, uint8_t ptype) noexcept nogil:
    """The packet passed every check (§3.2 steps 1 to 7): now, and only now, may it move state.
    It confirms its session if that waited in `next`; a data packet at c + 1 (the sender
    rotated), or a SESSION message naming where the sender is (it rotated more than once while
    nothing reached us), makes that index current. 0, or -1 when a derivation failed."""
    cdef rx_session *s = &d.rx[k]
    if k == d.rx_next:
        session_confirm(d)                   # the peer completed our answer: key confirmation
    d.last_rx_session = s.id
    if d.level != LEVEL_NONE and index > s.cur and (ptype == TYPE_SESSION or index == s.cur + 1):
        return session_rx_advance(d, s, index)
    return 0


cdef int open_packet(dp_state *d, const uint8_t *pkt, uint32_t length, frame_ref *out,
                     uint8_t *scratch, const uint8_t *src, uint32_t srclen) noexcept nogil:
    """Open one data or SESSION datagram from `src` (a sockaddr for the drop trace; NULL when
    unknown). Returns OPEN_FRAME (see `out`; a SESSION message has ftype TYPE_SESSION),
    OPEN_HELD, OPEN_CONTROL (a handshake or probe packet, untouched) or -DROP_*.

    `pkt` needs TAILROOM readable bytes after it; `scratch` receives single-packet frames at
    encrypt and needs SCRATCH_LEN bytes (frag_parse bounds any payload by the largest
    max_packet, not by ours). A delivered frame points into `pkt`, into `scratch` or into a
    reassembly slot, which the caller hands back with open_release() once the frame is sent.
    Caller holds recv_lock.
    """
    cdef uint8_t ptype, lvl
    cdef uint32_t tag_len, body_len, q, flen, n, r, i, off, size, index
    cdef uint64_t counter, base
    cdef int k, j, rc
    cdef int32_t sid
    cdef bint evicted
    cdef rx_session *s
    cdef reasm_slot *slot
    cdef keyset *keys
    cdef replay_window *window
    cdef uint8_t nonce[CHACHA_NONCE_LEN]
    cdef const uint8_t *body = pkt + HEADER_LEN
    d.ctr[DIR_RX][C_PACKETS] += 1
    d.last_drop = 0
    rc = open_header(d, pkt, length, src, srclen)
    if rc < 0:
        return rc
    lvl = wire_level(pkt[0])
    ptype = wire_type(pkt[0])
    if wire_is_handshake(ptype) or wire_is_probe(ptype):
        return OPEN_CONTROL
    if not wire_is_data(ptype):
        return open_drop(d, DROP_MALFORMED, src, srclen)
    # The packet's own level fixes its layout; a level other than ours is reported as such.
    tag_len = TAG_LEN if lvl != LEVEL_NONE else 0
    if length <= HEADER_LEN + tag_len:
        return open_drop(d, DROP_MALFORMED, src, srclen)
    body_len = length - HEADER_LEN - tag_len
    if frag_parse(pkt, body_len, tag_len, ptype, &q, &flen) != 0:
        return open_drop(d, DROP_MALFORMED, src, srclen)
    if lvl != d.level:
        open_refused(d, DROP_LEVEL_MISMATCH, pkt[0], src, srclen)
        return open_drop(d, DROP_LEVEL_MISMATCH, src, srclen)
    k = session_rx_find(d, pkt[WIRE_SESSION])
    if k < 0:
        return open_drop(d, DROP_NO_SESSION, src, srclen)
    s = &d.rx[k]
    index = pkt_be32(pkt + WIRE_KEY_INDEX)
    keys = NULL
    if ptype == TYPE_SESSION or d.level == LEVEL_NONE:
        # SESSION messages: the session's index-free keys. At level none there are no keys,
        # and one window per session removes duplicates (key_index means nothing there).
        keys = &s.ctl
        window = &s.ctl_window
    else:
        j = session_rx_index(s, index)
        if j < 0:
            return open_drop(d, DROP_KEY_INDEX, src, srclen)
        keys = &s.idx[j].keys
        window = &s.idx[j].window
    if d.level != LEVEL_NONE and not crypto_tag_ok(&keys.mac, pkt, body, body_len, body + body_len):
        return open_drop(d, DROP_AUTH, src, srclen)
    counter = wire_counter(pkt)
    if not replay_accept(window, counter):
        return open_drop(d, DROP_REPLAY, src, srclen)

    r = pkt[WIRE_BIG]
    i = pkt[WIRE_INDEX]
    n = pkt[WIRE_COUNT]
    base = counter - i
    if n == 1:
        # A frame is named by its base; a held fragment claiming this counter as its frame's
        # first contradicts this one (step 7).
        if reasm_lookup(&d.reasm, s.gen, counter) >= 0:
            return open_drop(d, DROP_FRAG_INCONSISTENT, src, srclen)
        if open_commit(d, k, index, ptype) != 0:
            return open_drop(d, DROP_CRYPTO_ERROR, src, srclen)
        if d.level == LEVEL_ENCRYPT:
            wire_nonce(pkt, base, nonce)
            if crypto_xor(keys, nonce, body, scratch, body_len) != 0:
                return open_drop(d, DROP_CRYPTO_ERROR, src, srclen)
            out.data = scratch
        else:
            out.data = <uint8_t *>body
        out.length = body_len
        out.ftype = ptype
        out.segment = pkt[WIRE_SEGMENT]
        out.slot = -1
        open_count_frame(d, ptype, body_len)
        return OPEN_FRAME

    d.ctr[DIR_RX][C_FRAGMENTS] += 1
    sid = reasm_lookup(&d.reasm, s.gen, base)
    if sid < 0:
        sid = reasm_alloc(&d.reasm, s.gen, base, flen, d.now_ms, &evicted)
        if evicted:
            drop_count(d, DIR_RX, DROP_FRAG_EVICTED, 1)
        if sid < 0:
            return open_drop(d, DROP_FRAG_EVICTED, src, srclen)
        slot = &d.reasm.slots[sid]
        memcpy(slot.nonce_head, pkt + WIRE_KEY_INDEX, NONCE_HEAD_LEN)
        slot.n = <uint16_t>n
        slot.r = <uint16_t>r
        slot.q = q
        slot.ftype = ptype
    else:
        slot = &d.reasm.slots[sid]
        # Every fragment of a frame tells the same story: count, sizes, type, and the key index,
        # session and segment of its nonce (§3.2 step 7).
        if (slot.n != n or slot.r != r or slot.q != q or slot.ftype != ptype
                or memcmp(slot.nonce_head, pkt + WIRE_KEY_INDEX, NONCE_HEAD_LEN) != 0):
            return open_drop(d, DROP_FRAG_INCONSISTENT, src, srclen)
    if slot.have[i >> 6] & ((<uint64_t>1) << (i & 63)):
        return open_drop(d, DROP_REPLAY, src, srclen)
    if open_commit(d, k, index, ptype) != 0:
        return open_drop(d, DROP_CRYPTO_ERROR, src, srclen)
    slot.have[i >> 6] |= (<uint64_t>1) << (i & 63)
    slot.got += 1
    off = frag_offset(i, q, r)
    size = q + 1 if i < r else q
    # off + size <= n*q + r = flen, and the slot's class holds flen + TAILROOM bytes.
    memcpy(slot.buf + off, body, size)
    if slot.got < slot.n:
        return OPEN_HELD

    # Complete: out of the hash and age list; its buffer is in flight until open_release().
    reasm_unlink(&d.reasm, sid)
    if d.level == LEVEL_ENCRYPT:
        keys = open_keys_of(d, slot.gen, slot.ftype, pkt_be32(slot.nonce_head))
        rc = -DROP_KEY_INDEX if keys == NULL else 0
        if rc == 0:
            memcpy(nonce, slot.nonce_head, NONCE_HEAD_LEN)
            wire_put_be48(nonce + NONCE_HEAD_LEN, slot.base)
            if crypto_xor(keys, nonce, slot.buf, slot.buf, flen) != 0:
                rc = -DROP_CRYPTO_ERROR
        if rc != 0:
            reasm_release(&d.reasm, sid)
            return open_drop(d, -rc, src, srclen)
    out.data = slot.buf
    out.length = flen
    out.ftype = slot.ftype
    out.segment = slot.nonce_head[WIRE_SEGMENT - WIRE_KEY_INDEX]   # the same in every fragment
    out.slot = sid
    d.ctr[DIR_RX][C_REASSEMBLED] += 1
    open_count_frame(d, slot.ftype, flen)
    return OPEN_FRAME


cdef inline void open_release(dp_state *d, frame_ref *f) noexcept nogil:
    if f.slot >= 0:
        reasm_release(&d.reasm, f.slot)
        f.slot = -1


cdef object open_refused_pop(dp_state *d):
    """The latest refusal open_refused() recorded, as Datapath.refused() returns it; read once."""
    out = None
    pthread_mutex_lock(&d.recv_lock)
    try:                                       # a Python error here must not leave the rx pump locked out
        if d.refused_reason:
            out = (COUNTER_NAMES[d.refused_reason], d.refused_byte0,
                   PyBytes_FromStringAndSize(<char *>d.refused_addr, d.refused_len))
            d.refused_reason = 0
    finally:
        pthread_mutex_unlock(&d.recv_lock)
    return out


cdef list open_datagram(Datapath dp, datagram, object now_ms):
    """Datapath.open(): one datagram from Python through dp's staging buffer; what it completed
    as [(frame_type, bytes)]."""
    cdef dp_state *d = dp.d
    cdef const uint8_t[:] view = datagram
    cdef Py_ssize_t length = view.shape[0]
    cdef frame_ref f
    cdef int rc
    if length > UDP_DATAGRAM_MAX:
        raise ValueError(f"a UDP datagram holds at most {UDP_DATAGRAM_MAX} bytes")
    if length:
        memcpy(dp.work_rx, &view[0], length)   # length <= UDP_DATAGRAM_MAX, work_rx's size
    result = []
    pthread_mutex_lock(&d.recv_lock)
    try:                                       # a bad now_ms or a failed allocation raises: unlock
        clock_advance(d, now_ms)
        open_expire(d)
        rc = open_packet(d, dp.work_rx, <uint32_t>length, &f, dp.scratch, NULL, 0)
        if rc == OPEN_FRAME:
            dp.last_segment = f.segment
            try:
                result.append((f.ftype, PyBytes_FromStringAndSize(<char *>f.data, f.length)))
            finally:
                open_release(d, &f)
        elif rc == OPEN_CONTROL:
            result.append((wire_type(dp.work_rx[0]), bytes(datagram)))
    finally:
        pthread_mutex_unlock(&d.recv_lock)
    return result
