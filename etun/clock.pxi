# The datapath's clocks: one millisecond clock feeds every now_ms, a microsecond one times the pumps.

cdef inline uint64_t clock_ms() noexcept nogil:
    """Milliseconds, CLOCK_MONOTONIC_COARSE: cheap enough to read once per batch."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
    return <uint64_t>ts.tv_sec * 1000 + <uint64_t>ts.tv_nsec // 1000000


cdef inline uint64_t clock_wall_ms() noexcept nogil:
    """The wall clock in milliseconds since the epoch (CLOCK_REALTIME_COARSE): only for times
    other sites write into packets, such as a probe's."""
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME_COARSE, &ts)
    return <uint64_t>ts.tv_sec * 1000 + <uint64_t>ts.tv_nsec // 1000000


cdef inline uint64_t clock_us() noexcept nogil:
    """Microseconds, CLOCK_MONOTONIC: for spinning, kicks and parking."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000 + <uint64_t>ts.tv_nsec // 1000


cdef inline double clock_s() noexcept nogil:
    """Seconds as a double, CLOCK_MONOTONIC: for timing benchmarks."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef void clock_advance(dp_state *d, object now_ms):
    """Move the datapath clock to now (or to a test's now_ms); it never goes back."""
    cdef uint64_t t = clock_ms() if now_ms is None else <uint64_t>now_ms
    if t > d.now_ms:
        d.now_ms = t
