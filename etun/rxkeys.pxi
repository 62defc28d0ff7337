# Receive keys: the current, previous and next key index of the receive session, one index
# derived on demand, and the last index of the previous session, each with its replay window.

cdef inline bint rxkeys_in_role(const dp_state *d, int k) noexcept nogil:
    return (k == d.rx_cur or k == d.rx_prev or k == d.rx_next or k == d.rx_trial
            or k == d.rx_old)


cdef int rxkeys_free_slot(const dp_state *d) noexcept nogil:
    cdef int k
    for k in range(RX_SLOTS):
        if not rxkeys_in_role(d, k):
            return k
    return -1


cdef void rxkeys_wipe(dp_state *d, int k) noexcept nogil:
    if crypto_keys_wipe(&d.rxk[k].keys) != 0:
        drop_count(d, DIR_RX, DROP_CRYPTO_ERROR, 1)


cdef void rxkeys_clear(dp_state *d, int *role) noexcept nogil:
    if role[0] >= 0:
        rxkeys_wipe(d, role[0])
        role[0] = -1


cdef int rxkeys_install(dp_state *d, int *role, uint32_t index) noexcept nogil:
    """Derive `index` of the current receive session into a free slot and give it `role`."""
    cdef int k = rxkeys_free_slot(d)
    if k < 0 or crypto_keys_derive(&d.rxk[k].keys, d.recv_secret, index) != 0:
        drop_count(d, DIR_RX, DROP_CRYPTO_ERROR, 1)
        return -1
    replay_reset(&d.rxk[k].window)
    d.rxk[k].gen = d.recv_gen
    role[0] = k
    return 0


cdef int rxkeys_new_session(dp_state *d, const uint8_t *secret) noexcept nogil:
    """Switch to a new receive session; the old one stays usable at its current index."""
    rxkeys_clear(d, &d.rx_old)
    d.rx_old = d.rx_cur
    d.rx_cur = -1
    rxkeys_clear(d, &d.rx_prev)
    rxkeys_clear(d, &d.rx_next)
    rxkeys_clear(d, &d.rx_trial)
    memcpy(d.recv_secret, secret, SECRET_LEN)
    d.recv_gen += 1
    d.recv_ready = True
    if d.level == LEVEL_NONE:
        d.rx_cur = rxkeys_free_slot(d)
        replay_reset(&d.rxk[d.rx_cur].window)
        d.rxk[d.rx_cur].gen = d.recv_gen
        return 0
    if rxkeys_install(d, &d.rx_cur, 0) != 0:
        d.recv_ready = False
        return -1
    rxkeys_install(d, &d.rx_next, 1)
    return 0


cdef int rxkeys_lookup(dp_state *d, const uint8_t *pkt, uint32_t body_len) noexcept nogil:
    """The slot whose keys authenticate this data packet, or -DROP_KEY_INDEX / -DROP_AUTH."""
    cdef uint32_t index = pkt_be32(pkt + 4)
    cdef uint64_t cur_index
    cdef int cand[RX_SLOTS]
    cdef int roles[RX_SLOTS - 1]
    cdef int nc = 0, j, k
    cdef bint old_match, tried_old = False
    cdef const uint8_t *body = pkt + HEADER_LEN
    cdef const uint8_t *tag = body + body_len
    roles[0] = d.rx_cur
    roles[1] = d.rx_next
    roles[2] = d.rx_prev
    roles[3] = d.rx_trial
    for j in range(RX_SLOTS - 1):
        k = roles[j]
        if k >= 0 and d.rxk[k].keys.live and d.rxk[k].keys.index == index:
            cand[nc] = k
            nc += 1
    k = d.rx_old
    old_match = k >= 0 and d.rxk[k].keys.live and d.rxk[k].keys.index == index
    if nc == 0 and old_match:
        # The old session's keys are held: try them before spending a derivation token on
        # the current session, so the old session's traffic never drains the budget.
        if crypto_tag_ok(&d.rxk[k].keys.mac, pkt, body, body_len, tag):
            return k
        old_match = False
        tried_old = True
    if nc == 0 and d.rx_cur >= 0:
        cur_index = d.rxk[d.rx_cur].keys.index
        if (index > cur_index + 1 and index - cur_index <= KEY_LOOKAHEAD
                and bucket_take(&d.derive, d.now_ms, DERIVE_PER_SEC, DERIVE_BURST)):
            # The sender rotated more than once while nothing reached us.
            rxkeys_clear(d, &d.rx_trial)
            if rxkeys_install(d, &d.rx_trial, index) != 0:
                return -DROP_CRYPTO_ERROR
            cand[nc] = d.rx_trial
            nc += 1
    if old_match:
        cand[nc] = k
        nc += 1
    if nc == 0:
        return -DROP_AUTH if tried_old else -DROP_KEY_INDEX
    for j in range(nc):
        if crypto_tag_ok(&d.rxk[cand[j]].keys.mac, pkt, body, body_len, tag):
            return cand[j]
    return -DROP_AUTH


cdef void rxkeys_promote(dp_state *d, int k) noexcept nogil:
    """An index above the current one authenticated: it becomes current, index - 1 previous
    (kept if held, derived if it was skipped) and index + 1 is derived as next."""
    cdef uint32_t index = d.rxk[k].keys.index
    cdef int olds[3]
    cdef int keep = -1, j, s
    olds[0] = d.rx_cur
    olds[1] = d.rx_next
    olds[2] = d.rx_prev
    for j in range(2):
        s = olds[j]
        if s >= 0 and s != k and d.rxk[s].keys.live and d.rxk[s].keys.index + 1 == index:
            keep = s
    for j in range(3):
        s = olds[j]
        if s >= 0 and s != k and s != keep:
            rxkeys_wipe(d, s)
    if k == d.rx_trial:
        d.rx_trial = -1
    d.rx_cur = k
    d.rx_prev = keep
    d.rx_next = -1
    if d.rx_trial >= 0 and <uint64_t>d.rxk[d.rx_trial].keys.index <= <uint64_t>index + 1:
        rxkeys_clear(d, &d.rx_trial)
    if d.rx_prev < 0:
        rxkeys_install(d, &d.rx_prev, index - 1)
    if index < 0xFFFFFFFFu:
        rxkeys_install(d, &d.rx_next, index + 1)     # the last index has no next: never 0 again


cdef keyset *rxkeys_find(dp_state *d, uint32_t gen, uint32_t index) noexcept nogil:
    cdef int k
    for k in range(RX_SLOTS):
        if (rxkeys_in_role(d, k) and d.rxk[k].gen == gen and d.rxk[k].keys.live
                and d.rxk[k].keys.index == index):
            return &d.rxk[k].keys
    return NULL


cdef int rxkeys_jump(dp_state *d, uint32_t index) noexcept nogil:
    """A fresh authenticated HELLO says the sender of the current session is at `index`: make
    it current when it lies beyond next. Returns 1 if it jumped, 0 if not, -1 on failure."""
    if d.level == LEVEL_NONE or not d.recv_ready or d.rx_cur < 0:
        return 0
    if <uint64_t>index <= <uint64_t>d.rxk[d.rx_cur].keys.index + 1:
        return 0
    rxkeys_clear(d, &d.rx_trial)
    if rxkeys_install(d, &d.rx_trial, index) != 0:
        return -1
    rxkeys_promote(d, d.rx_trial)
    return 1
