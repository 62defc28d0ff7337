# Drops: each counted under its reason and direction, and sampled for the drop trace.
#
# Drops: each one counted under its reason, per direction; with the drop trace on (the debug
# switch), at most one sample per reason and direction a second, naming the address that caused
# it, waits in a small ring for the control loop to log (as the kernel WireGuard driver's
# rate-limited debug lines do).

cdef void drop_sample(dp_state *d, int direction, int reason, int addr_kind, const uint8_t *addr,
                      uint32_t addr_len) noexcept nogil:
    cdef uint64_t now = clock_ms()
    cdef trace_sample *s
    if now < d.trace_last_ms[direction][reason] + TRACE_INTERVAL_MS:
        d.trace_more[direction][reason] += 1
        return
    d.trace_last_ms[direction][reason] = now
    if addr_len > SOCKADDR_LEN:
        addr_len = 0
        addr_kind = TRACE_NONE
    pthread_mutex_lock(&d.trace_lock)
    if d.trace_count < TRACE_SLOTS:
        s = &d.trace_ring[(d.trace_head + d.trace_count) % TRACE_SLOTS]
        d.trace_count += 1
        s.more = d.trace_more[direction][reason]
        s.direction = <uint8_t>direction
        s.reason = <uint8_t>reason
        s.addr_kind = <uint8_t>addr_kind
        s.addr_len = <uint8_t>addr_len
        if addr_len:
            memcpy(s.addr, addr, addr_len)
        d.trace_more[direction][reason] = 0
    pthread_mutex_unlock(&d.trace_lock)


cdef inline void drop_count(dp_state *d, int direction, int reason, uint32_t n) noexcept nogil:
    """n drops nobody in particular caused (a socket overflow, an expired fragment)."""
    d.ctr[direction][reason] += n
    if d.trace_on:
        drop_sample(d, direction, reason, TRACE_NONE, NULL, 0)


cdef inline void drop_frame(dp_state *d, int direction, int reason, const uint8_t *frame,
                            uint32_t length) noexcept nogil:
    """A frame dropped: the trace names its source MAC (when it has one)."""
    d.ctr[direction][reason] += 1
    if d.trace_on:
        if frame != NULL and length >= 12:
            drop_sample(d, direction, reason, TRACE_MAC, frame + 6, 6)
        else:
            drop_sample(d, direction, reason, TRACE_NONE, NULL, 0)


cdef inline void drop_datagram(dp_state *d, int reason, const uint8_t *name,
                               uint32_t namelen) noexcept nogil:
    """A datagram from the UDP side dropped: the trace names its source address."""
    d.ctr[DIR_RX][reason] += 1
    if d.trace_on:
        drop_sample(d, DIR_RX, reason, TRACE_SOCKADDR if namelen else TRACE_NONE, name, namelen)


# -- for the control plane: the names `etun status` shows, the counts, the sampled drops ------

# counters.h generates these names with the C_* / DROP_* enums, in the same order.
COUNTER_NAMES = tuple(etun_counter_names[i].decode() for i in range(N_COUNTERS))
DROP_REASONS = COUNTER_NAMES[FIRST_DROP_REASON:]
DIRECTION_NAMES = {DIR_TX: "outbound", DIR_RX: "inbound"}


class Dropped(Exception):
    """A control packet failed its checks; `reason` is a COUNTER_NAMES drop reason."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


cdef dict drop_counters(const dp_state *d):
    """{"tx": {name: count}, "rx": {name: count}} for every counter and drop reason; the
    control plane's own drops count as inbound."""
    return {
        "tx": {COUNTER_NAMES[i]: d.ctr[DIR_TX][i] for i in range(N_COUNTERS)},
        "rx": {COUNTER_NAMES[i]: d.ctr[DIR_RX][i] + d.ctr_ctl[i] for i in range(N_COUNTERS)},
    }


cdef drop_count_ctl(dp_state *d, str reason):
    """Count a drop the control plane decided, apart from the counters only the pumps write."""
    i = COUNTER_NAMES.index(reason)
    if i < FIRST_DROP_REASON:
        raise ValueError(f"{reason} is not a drop reason")
    d.ctr_ctl[i] += 1


cdef list drop_trace_pop(dp_state *d):
    """The sampled drops waiting in the ring, oldest first, as the control loop logs them."""
    cdef trace_sample *s
    out = []
    pthread_mutex_lock(&d.trace_lock)
    try:                                       # a failed allocation must not leave the pumps locked out
        while d.trace_count:
            s = &d.trace_ring[d.trace_head]
            out.append((DIRECTION_NAMES[s.direction], COUNTER_NAMES[s.reason], s.addr_kind,
                        PyBytes_FromStringAndSize(<char *>s.addr, s.addr_len), s.more))
            d.trace_head = (d.trace_head + 1) % TRACE_SLOTS
            d.trace_count -= 1
    finally:
        pthread_mutex_unlock(&d.trace_lock)
    return out
