# Inbound: one datagram -> checked in the order of PROTOCOL.md §3.2 -> a frame, a held fragment,
# a control packet for Python, or a drop counted under its reason.
#
#   1. header sane and fragment fields consistent, else malformed
#   2. same level as ours; a receive session exists
#   3. key index known (or derivable ahead), tag verified in constant time
#   4. counter new to the replay window -- only now does the window move
#   5. single-packet frame: decrypt and deliver; else copy into reassembly, and when the last
#      fragment arrives decrypt the whole frame in one pass and deliver it

cdef inline int open_drop(dp_state *d, int reason, const uint8_t *src, uint32_t srclen) noexcept nogil:
    drop_datagram(d, reason, src, srclen)
    d.last_drop = reason
    return -reason


cdef inline void open_expire(dp_state *d) noexcept nogil:
    """Discard incomplete frames older than the reassembly timeout at d.now_ms. Under recv_lock."""
    cdef uint32_t n = reasm_expire(&d.reasm, d.now_ms)
    if n:
        drop_count(d, DIR_RX, DROP_FRAG_TIMEOUT, n)


cdef inline bint open_control_authentic(dp_state *d, const uint8_t *pkt, uint32_t length,
                                        uint8_t lvl, uint8_t ptype) noexcept nogil:
    """A HELLO at our level, long enough to name its sender, whose tag verifies under the
    control key."""
    if ptype != TYPE_HELLO or not d.ctl_ready or lvl != d.level or lvl == LEVEL_NONE:
        return False
    if length < HEADER_LEN + NONCE_LEN + TAG_LEN:
        return False
    return crypto_tag_ok(&d.ctl_mac, pkt, pkt + HEADER_LEN, length - HEADER_LEN - TAG_LEN,
                         pkt + length - TAG_LEN)


cdef int open_hello_admit(dp_state *d, const uint8_t *pkt) noexcept nogil:
    """Queue an authentic HELLO only if its counter is new for its sender nonce (the control
    plane's freshness rule, PROTOCOL.md §5 step 1, applied before the queue), and, unless it
    comes from the peer's current sender nonce, only within HELLO_PER_SEC: a recording of
    genuine HELLOs replayed in a flood cannot crowd out the peer's. 0 or -DROP_*."""
    cdef const uint8_t *sender = pkt + HEADER_LEN
    cdef uint64_t counter = pkt_be64(pkt + 8)
    cdef int k, slot = -1, victim = -1
    cdef hello_sender *h
    for k in range(HELLO_SENDERS):
        h = &d.ctl_senders[k]
        if h.used and memcmp(h.sender, sender, NONCE_LEN) == 0:
            slot = k
            break
    if counter == 0 or (slot >= 0 and counter <= d.ctl_senders[slot].counter):
        return -DROP_REPLAY                      # HELLO counters start at 1 (§5)
    if not (d.ctl_peer_set and memcmp(d.ctl_peer, sender, NONCE_LEN) == 0):
        if not bucket_take(&d.ctl_other, d.now_ms, HELLO_PER_SEC, HELLO_BURST):
            return -DROP_CONTROL_QUEUE
    if slot < 0:
        # A free entry, else the least recently used one that is not the peer's current.
        for k in range(HELLO_SENDERS):
            h = &d.ctl_senders[k]
            if not h.used:
                victim = k
                break
            if d.ctl_peer_set and memcmp(d.ctl_peer, h.sender, NONCE_LEN) == 0:
                continue
            if victim < 0 or h.used_ms < d.ctl_senders[victim].used_ms:
                victim = k
        slot = victim
        memcpy(d.ctl_senders[slot].sender, sender, NONCE_LEN)
        d.ctl_senders[slot].used = True
    d.ctl_senders[slot].counter = counter
    d.ctl_senders[slot].used_ms = d.now_ms
    return 0


cdef int open_packet(dp_state *d, const uint8_t *pkt, uint32_t length, frame_ref *out,
                     uint8_t *scratch, const uint8_t *src, uint32_t srclen) noexcept nogil:
    """Open one datagram from `src` (a sockaddr for the drop trace; NULL when unknown).
    Returns OPEN_FRAME (see `out`), OPEN_HELD, OPEN_CONTROL or -DROP_*.

    `pkt` needs TAILROOM readable bytes after it; `scratch` receives single-packet frames at
    encrypt and needs SCRATCH_LEN bytes (frag_parse bounds any payload by the largest
    max_packet, not by ours). A delivered frame points into `pkt`, into `scratch` or into a
    reassembly slot, which the caller hands back with open_release() once the frame is sent.
    Caller holds recv_lock.
    """
    cdef uint8_t ptype, lvl
    cdef uint32_t tag_len, body_len, q, flen, n, r, i, off, size
    cdef uint64_t counter, base
    cdef int k, rc
    cdef int32_t sid
    cdef bint evicted
    cdef reasm_slot *s
    cdef keyset *keys
    cdef const uint8_t *body = pkt + HEADER_LEN
    d.ctr[DIR_RX][C_PACKETS] += 1
    d.last_drop = 0
    if length < HEADER_LEN:
        return open_drop(d, DROP_MALFORMED, src, srclen)
    lvl = wire_level(pkt[0])
    ptype = wire_type(pkt[0])
    if wire_version(pkt[0]) != WIRE_VERSION or lvl == 3:
        return open_drop(d, DROP_MALFORMED, src, srclen)
    if wire_is_control(ptype):
        # The control plane checks everything again; here only the queue to it is guarded, so
        # a flood of forged or replayed control packets cannot crowd out the peer's HELLOs.
        if open_control_authentic(d, pkt, length, lvl, ptype):
            rc = open_hello_admit(d, pkt)
            if rc < 0:
                return open_drop(d, -rc, src, srclen)
        elif not bucket_take(&d.ctl_foreign, d.now_ms, CONTROL_PER_SEC, CONTROL_BURST):
            return open_drop(d, DROP_CONTROL_QUEUE, src, srclen)
        d.ctr[DIR_RX][C_CONTROL] += 1
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
        return open_drop(d, DROP_LEVEL_MISMATCH, src, srclen)
    if not d.recv_ready:
        return open_drop(d, DROP_NO_SESSION, src, srclen)
    if d.level == LEVEL_NONE:
        k = d.rx_cur
    else:
        k = rxkeys_lookup(d, pkt, body_len)
        if k < 0:
            return open_drop(d, -k, src, srclen)
    counter = pkt_be64(pkt + 8)
    if not replay_accept(&d.rxk[k].window, counter):
        return open_drop(d, DROP_REPLAY, src, srclen)
    if k == d.rx_next or k == d.rx_trial:
        rxkeys_promote(d, k)
    r = pkt[1]
    i = pkt[2]
    n = pkt[3]
    base = counter - i
    if n == 1:
        # A frame is named by its base; a held fragment claiming this counter as its frame's
        # first contradicts this one (step 7).
        if reasm_lookup(&d.reasm, d.rxk[k].gen, counter) >= 0:
            return open_drop(d, DROP_FRAG_INCONSISTENT, src, srclen)
        if d.level == LEVEL_ENCRYPT:
            if crypto_xor(&d.rxk[k].keys, base, body, scratch, body_len) != 0:
                return open_drop(d, DROP_CRYPTO_ERROR, src, srclen)
            out.data = scratch
        else:
            out.data = <uint8_t *>body
        out.length = body_len
        out.ftype = ptype
        out.slot = -1
        d.ctr[DIR_RX][C_FRAMES] += 1
        d.ctr[DIR_RX][C_BYTES] += body_len
        return OPEN_FRAME

    d.ctr[DIR_RX][C_FRAGMENTS] += 1
    sid = reasm_lookup(&d.reasm, d.rxk[k].gen, base)
    if sid < 0:
        sid = reasm_alloc(&d.reasm, d.rxk[k].gen, base, flen, d.now_ms, &evicted)
        if evicted:
            drop_count(d, DIR_RX, DROP_FRAG_EVICTED, 1)
        if sid < 0:
            return open_drop(d, DROP_FRAG_EVICTED, src, srclen)
        s = &d.reasm.slots[sid]
        s.key_index = d.rxk[k].keys.index
        s.n = <uint16_t>n
        s.r = <uint16_t>r
        s.q = q
        s.ftype = ptype
    else:
        s = &d.reasm.slots[sid]
        # At level none there are no keys, and key_index means nothing (PROTOCOL.md §3.2).
        if (s.n != n or s.r != r or s.q != q or s.ftype != ptype
                or (d.level != LEVEL_NONE and s.key_index != d.rxk[k].keys.index)):
            return open_drop(d, DROP_FRAG_INCONSISTENT, src, srclen)
    if s.have[i >> 6] & ((<uint64_t>1) << (i & 63)):
        return open_drop(d, DROP_REPLAY, src, srclen)
    s.have[i >> 6] |= (<uint64_t>1) << (i & 63)
    s.got += 1
    off = frag_offset(i, q, r)
    size = q + 1 if i < r else q
    # off + size <= n*q + r = flen, and the slot's class holds flen + TAILROOM bytes.
    memcpy(s.buf + off, body, size)
    if s.got < s.n:
        return OPEN_HELD

    # Complete: out of the hash and age list; its buffer is in flight until open_release().
    reasm_unlink(&d.reasm, sid)
    if d.level == LEVEL_ENCRYPT:
        keys = rxkeys_find(d, s.gen, s.key_index)
        rc = -DROP_KEY_INDEX if keys == NULL else 0
        if rc == 0 and crypto_xor(keys, s.base, s.buf, s.buf, flen) != 0:
            rc = -DROP_CRYPTO_ERROR
        if rc != 0:
            reasm_release(&d.reasm, sid)
            return open_drop(d, -rc, src, srclen)
    out.data = s.buf
    out.length = flen
    out.ftype = s.ftype
    out.slot = sid
    d.ctr[DIR_RX][C_REASSEMBLED] += 1
    d.ctr[DIR_RX][C_FRAMES] += 1
    d.ctr[DIR_RX][C_BYTES] += flen
    return OPEN_FRAME


cdef inline void open_release(dp_state *d, frame_ref *f) noexcept nogil:
    if f.slot >= 0:
        reasm_release(&d.reasm, f.slot)
        f.slot = -1
