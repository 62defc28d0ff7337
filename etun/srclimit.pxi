# Budgets per source address: a token bucket for each address recently seen, in a fixed table.
#
# Budgets per source address: a token bucket for each address recently seen, in a fixed table,
# so what one address may ask of etun (handshakes under load, probes) is bounded whatever the
# others do. IPv4 addresses count whole (v4-mapped IPv6 ones too), IPv6 ones by /64, which one
# host usually holds whole. The table never grows: a new address replaces the one seen least
# recently among the few slots it may use, which only ever hands a budget back.

cdef enum:
    SRCLIMIT_KEY_LEN = 9          # family (4 or 6), then 4 or 8 address bytes


cdef inline uint16_t srclimit_family(const uint8_t *sa) noexcept nogil:
    cdef uint16_t family
    memcpy(&family, sa, 2)            # sa_family, in host order
    return family


cdef int srclimit_key(const uint8_t *sa, uint32_t salen, uint8_t *key) noexcept nogil:
    """The budget's key for a struct sockaddr_in/in6: 0, or -1 for anything else."""
    cdef uint16_t family
    memset(key, 0, SRCLIMIT_KEY_LEN)
    if salen < 8:
        return -1
    family = srclimit_family(sa)
    if family == AF_INET:
        key[0] = 4
        memcpy(key + 1, sa + 4, 4)
        return 0
    if family == AF_INET6 and salen >= 24:
        if memcmp(sa + 8, b"\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0:
            key[0] = 4                # a v4-mapped address is that IPv4 address
            memcpy(key + 1, sa + 20, 4)
        else:
            key[0] = 6
            memcpy(key + 1, sa + 8, 8)
        return 0
    return -1


cdef inline uint32_t srclimit_hash(const uint8_t *key, uint64_t seed) noexcept nogil:
    cdef uint64_t h = seed
    cdef int i
    for i in range(SRCLIMIT_KEY_LEN):
        h = (h ^ key[i]) * <uint64_t>0x100000001B3
    return <uint32_t>(h ^ (h >> 29))


cdef bint srclimit_take(srclimit_entry *table, uint64_t seed, const uint8_t *sa, uint32_t salen,
                        uint64_t now_ms, uint64_t per_sec, uint64_t burst) noexcept nogil:
    """Take one token from the budget of sa's address (per_sec a second, burst at once)."""
    cdef uint8_t key[SRCLIMIT_KEY_LEN]
    cdef uint32_t pos, k
    cdef srclimit_entry *e
    cdef srclimit_entry *oldest = NULL
    cdef token_bucket b
    cdef bint ok
    if srclimit_key(sa, salen, key) != 0:
        return False
    pos = srclimit_hash(key, seed)
    for k in range(SRCLIMIT_PROBE):
        e = &table[(pos + k) % SRCLIMIT_SLOTS]
        if e.key[0] != 0 and memcmp(e.key, key, SRCLIMIT_KEY_LEN) == 0:
            b.credit_ms = e.credit_ms
            b.last_ms = e.last_ms
            ok = bucket_take(&b, now_ms, per_sec, burst)
            e.credit_ms = b.credit_ms
            e.last_ms = b.last_ms
            return ok
        if oldest == NULL or e.key[0] == 0 or (oldest.key[0] != 0 and e.last_ms < oldest.last_ms):
            oldest = e
    # A new address: the emptiest or stalest of its slots is given to it, full.
    memcpy(oldest.key, key, SRCLIMIT_KEY_LEN)
    bucket_fill(&b, per_sec, burst, now_ms)
    ok = bucket_take(&b, now_ms, per_sec, burst)
    oldest.credit_ms = b.credit_ms
    oldest.last_ms = b.last_ms
    return ok
