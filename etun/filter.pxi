# Frame filters (SPEC.md "Filters"): allow/deny by MAC, OUI or EtherType, most specific first.
#
# Rules compile into tables the pumps read without Python: open-addressing hashes from a MAC or
# OUI to the first rule naming it, and a 64 Ki array from EtherType to the first rule naming it.
# Deciding a frame takes at most two MAC, two OUI and a few EtherType lookups, whatever the
# number of rules. Every rule and the default count their hits; only the owning pump writes them.

cdef enum:
    FILTER_NIC_INGRESS = 0        # frames captured on the LAN NIC (tx pump)
    FILTER_TUNNEL_INGRESS = 1     # frames arriving from the tunnel (rx pump)
    FILTER_NONE = 0xFFFF          # "no rule" in the EtherType array
    FILTER_MAX_RULES = 65534
    FILTER_MAX_TAGS = 8           # VLAN tags followed into a frame (more is not a real frame)


cdef struct filter_hash:          # key -> first rule index; key 0 marks an empty slot
    uint64_t *keys
    uint32_t *rule
    uint32_t mask


cdef struct filter_table:
    bint default_allow
    uint32_t nrules
    uint8_t *allow                # per rule: 1 allow, 0 deny
    uint64_t *hits                # per rule
    uint64_t default_hits
    filter_hash mac
    filter_hash oui
    uint16_t *ethertype           # 65536 entries, or NULL without EtherType rules
    uint64_t *seen                # frames per EtherType (65536; index 0: 802.3 length frames)


cdef inline uint64_t filter_mix(uint64_t key) noexcept nogil:
    key *= <uint64_t>0x9E3779B97F4A7C15
    return key ^ (key >> 29)


cdef int filter_hash_init(filter_hash *h, uint32_t n) noexcept nogil:
    cdef uint32_t size = 8
    while size < 2 * n:
        size <<= 1
    h.keys = <uint64_t *>calloc(size, sizeof(uint64_t))
    h.rule = <uint32_t *>calloc(size, sizeof(uint32_t))
    h.mask = size - 1
    return 0 if h.keys != NULL and h.rule != NULL else -1


cdef void filter_hash_put(filter_hash *h, uint64_t key, uint32_t rule) noexcept nogil:
    """Remember the first rule for a key; later rules naming the same key never decide."""
    cdef uint32_t pos = <uint32_t>filter_mix(key) & h.mask
    key |= <uint64_t>1 << 63          # never 0, so 0 can mark an empty slot
    while h.keys[pos] != 0:
        if h.keys[pos] == key:
            return
        pos = (pos + 1) & h.mask
    h.keys[pos] = key
    h.rule[pos] = rule


cdef inline uint32_t filter_hash_get(const filter_hash *h, uint64_t key) noexcept nogil:
    cdef uint32_t pos
    if h.keys == NULL:
        return FILTER_NONE
    pos = <uint32_t>filter_mix(key) & h.mask
    key |= <uint64_t>1 << 63
    while h.keys[pos] != 0:
        if h.keys[pos] == key:
            return h.rule[pos]
        pos = (pos + 1) & h.mask
    return FILTER_NONE


cdef void filter_free(filter_table *t) noexcept nogil:
    if t == NULL:
        return
    free(t.allow)
    free(t.hits)
    free(t.mac.keys)
    free(t.mac.rule)
    free(t.oui.keys)
    free(t.oui.rule)
    free(t.ethertype)
    free(t.seen)
    free(t)


cdef inline uint64_t filter_mac_key(const uint8_t *m) noexcept nogil:
    return ((<uint64_t>m[0] << 40) | (<uint64_t>m[1] << 32) | (<uint64_t>m[2] << 24)
            | (<uint64_t>m[3] << 16) | (<uint64_t>m[4] << 8) | m[5])


cdef inline uint32_t filter_first(uint32_t a, uint32_t b) noexcept nogil:
    return a if a < b else b


cdef int filter_frame(filter_table *t, const uint8_t *f, uint32_t n) noexcept nogil:
    """Count the frame's EtherType; return the deciding rule index, or -1 for the default,
    and whether it allows: rule * 2 + allow, or -2 + default_allow."""
    cdef uint32_t rule, off = 12, depth = 0
    cdef uint16_t et
    cdef bint has_8021q = False, has_8021ad = False
    if n < MIN_FRAME_LEN:
        return -2 + t.default_allow
    et = lan_be16(f + 12)
    while (et == ETH_P_8021Q or et == ETH_P_8021AD) and off + 6 <= n and depth < FILTER_MAX_TAGS:
        has_8021q |= et == ETH_P_8021Q
        has_8021ad |= et == ETH_P_8021AD
        off += 4
        depth += 1
        et = lan_be16(f + off)
    t.seen[et if et >= 0x600 else 0] += 1
    if t.nrules == 0:
        t.default_hits += 1
        return -2 + t.default_allow
    # Most specific first: a MAC rule decides over an OUI rule over an EtherType rule; among
    # rules of one kind, the first in the configuration decides (SPEC.md).
    rule = filter_first(filter_hash_get(&t.mac, filter_mac_key(f)),
                        filter_hash_get(&t.mac, filter_mac_key(f + 6)))
    if rule == FILTER_NONE:
        rule = filter_first(filter_hash_get(&t.oui, filter_mac_key(f) >> 24),
                            filter_hash_get(&t.oui, filter_mac_key(f + 6) >> 24))
    if rule == FILTER_NONE and t.ethertype != NULL:
        if et >= 0x600:
            rule = t.ethertype[et]
        if has_8021q:
            rule = filter_first(rule, t.ethertype[ETH_P_8021Q])
        if has_8021ad:
            rule = filter_first(rule, t.ethertype[ETH_P_8021AD])
    if rule == FILTER_NONE:
        t.default_hits += 1
        return -2 + t.default_allow
    t.hits[rule] += 1
    return <int>(rule * 2 + t.allow[rule])


cdef inline bint filter_allows(filter_table *t, const uint8_t *f, uint32_t n) noexcept nogil:
    cdef int verdict
    if t == NULL:
        return True
    verdict = filter_frame(t, f, n)
    return (verdict & 1) if verdict >= 0 else verdict == -1
