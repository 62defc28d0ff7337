# Anti-replay: the RFC 6479 sliding window; accepts counters up to REPLAY_WINDOW behind the highest.

cdef inline void replay_reset(replay_window *w) noexcept nogil:
    memset(w, 0, sizeof(replay_window))


cdef bint replay_accept(replay_window *w, uint64_t counter) noexcept nogil:
    """Accept a counter not seen before and not too old, and remember it.

    Callers run this only after the packet authenticated, or a forged packet could move the
    window and make the real ones look old.
    """
    cdef uint64_t block = counter >> 6
    cdef uint64_t top_block, steps, i
    cdef uint64_t bit = (<uint64_t>1) << (counter & 63)
    if not w.any:
        w.any = True
        w.top = counter
    elif counter > w.top:
        top_block = w.top >> 6
        steps = block - top_block
        if steps > REPLAY_BLOCKS:
            steps = REPLAY_BLOCKS
        # Blocks the window slides over hold counters from REPLAY_BLOCKS blocks ago: clear them.
        for i in range(1, steps + 1):
            w.bits[(top_block + i) & (REPLAY_BLOCKS - 1)] = 0
        w.top = counter
    elif w.top - counter > REPLAY_WINDOW:
        # The ring holds REPLAY_BLOCKS words; the oldest word still distinct from the newest
        # covers exactly REPLAY_WINDOW counters behind the top.
        return False
    block &= REPLAY_BLOCKS - 1
    if w.bits[block] & bit:
        return False
    w.bits[block] |= bit
    return True
