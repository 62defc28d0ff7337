# Token buckets: how the receive side rations the work a stranger can ask of it.
#
# Token buckets: how the receive side rations work a stranger can ask of it (key derivations,
# control-queue slots). Credit is kept in milliseconds; a token costs 1000 / per_sec of them.

cdef inline void bucket_fill(token_bucket *b, uint64_t per_sec, uint64_t burst,
                             uint64_t now_ms) noexcept nogil:
    """Start full: burst tokens available at now_ms."""
    b.credit_ms = burst * (1000 // per_sec)
    b.last_ms = now_ms


cdef bint bucket_take(token_bucket *b, uint64_t now_ms, uint64_t per_sec,
                      uint64_t burst) noexcept nogil:
    """Take one token from bucket b (per_sec tokens a second, at most burst held)."""
    cdef uint64_t cost = 1000 // per_sec
    cdef uint64_t credit = b.credit_ms + (now_ms - b.last_ms)
    if credit > burst * cost:
        credit = burst * cost
    b.last_ms = now_ms
    if credit < cost:
        b.credit_ms = credit
        return False
    b.credit_ms = credit - cost
    return True
