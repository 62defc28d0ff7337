# Frame filters (docs/CONFIG.md, "Filters"): allow/deny by MAC, OUI or EtherType, most specific first.
#
# Rules compile into tables the pumps read without Python: open-addressing hashes from a MAC or
# OUI to the first rule naming it, and a 64 Ki array from EtherType to the first rule naming it.
# Deciding a frame takes at most two MAC, two OUI and a few EtherType lookups, whatever the
# number of rules. Every rule and the default count their hits; only the owning pump writes them.
#
# A table is replaced under running pumps (a reload) without a lock or a check per frame: the
# pumps read the table pointer only inside a round that already holds a lock (nic_ingress: the
# engine's tx_lock, held for a whole tx round; tunnel_ingress: recv_lock, held for a whole rx
# round). Datapath.set_filter takes those same locks to swap the pointer, so when it lets go no
# round can still hold the old table, and it is freed at once: the locks are the grace period.

cdef enum:
    FILTER_NONE = 0xFFFF          # "no rule" in the EtherType array
    FILTER_ETHERTYPES = 65536     # entries of the EtherType arrays
    FILTER_SEEN_BLOCK = 512       # EtherType counters filter_report() skips at once when all zero
    FILTER_KIND_MAC = 0           # rule kinds filter_build() takes
    FILTER_KIND_OUI = 1
    FILTER_KIND_ETHERTYPE = 2


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


cdef filter_table *filter_build(bint default_allow, uint32_t nrules, const uint8_t *allow,
                                const uint8_t *kind, const uint64_t *value,
                                uint32_t guards) noexcept nogil:
    """A table for rules given as parallel arrays (kind FILTER_KIND_*, value a MAC or OUI as an
    integer, or an EtherType), in configuration order, after the guard presets (1 << GUARD_*).
    NULL when memory ran out; the caller checks the values first."""
    cdef filter_table *t = <filter_table *>calloc(1, sizeof(filter_table))
    cdef uint32_t i, nmac = 0, noui = 0
    if t == NULL:
        return NULL
    for i in range(nrules):
        nmac += kind[i] == FILTER_KIND_MAC
        noui += kind[i] == FILTER_KIND_OUI
    t.default_allow = default_allow
    t.nrules = nrules
    t.guards = guards
    t.allow = <uint8_t *>calloc(nrules + 1, 1)
    t.hits = <uint64_t *>calloc(nrules + 1, sizeof(uint64_t))
    t.seen = <uint64_t *>calloc(FILTER_ETHERTYPES, sizeof(uint64_t))
    if (t.allow == NULL or t.hits == NULL or t.seen == NULL
            or (nmac and filter_hash_init(&t.mac, nmac) != 0)
            or (noui and filter_hash_init(&t.oui, noui) != 0)):
        filter_free(t)
        return NULL
    for i in range(nrules):
        t.allow[i] = allow[i]
        if kind[i] == FILTER_KIND_MAC:
            filter_hash_put(&t.mac, value[i], i)
        elif kind[i] == FILTER_KIND_OUI:
            filter_hash_put(&t.oui, value[i], i)
        else:
            if t.ethertype == NULL:
                t.ethertype = <uint16_t *>malloc(FILTER_ETHERTYPES * sizeof(uint16_t))
                if t.ethertype == NULL:
                    filter_free(t)
                    return NULL
                memset(t.ethertype, 0xFF, FILTER_ETHERTYPES * sizeof(uint16_t))
            if t.ethertype[value[i]] == FILTER_NONE:
                t.ethertype[value[i]] = <uint16_t>i
    return t


cdef inline uint32_t filter_first(uint32_t a, uint32_t b) noexcept nogil:
    return a if a < b else b


cdef int filter_frame(filter_table *t, const uint8_t *f, uint32_t n) noexcept nogil:
    """Count the frame's EtherType; return the deciding rule index, or -1 for the default,
    and whether it allows: rule * 2 + allow, or -2 + default_allow; a guard preset that
    denies it (guard.pxi): -3 - GUARD_*."""
    cdef uint32_t rule
    cdef int guard
    cdef vlan_walk w
    if n < MIN_FRAME_LEN:
        return -2 + t.default_allow
    pkt_walk_vlans(f, n, &w)
    t.seen[w.ethertype if w.ethertype >= ETHERTYPE_MIN else 0] += 1
    if t.guards:
        # Built-in rules: before every configured one, so no allow rule can let them through.
        guard = guard_match(t.guards, f, n, &w)
        if guard >= 0:
            t.guard_hits[guard] += 1
            return -3 - guard
    if t.nrules == 0:
        t.default_hits += 1
        return -2 + t.default_allow
    # Most specific first: a MAC rule decides over an OUI rule over an EtherType rule; among
    # rules of one kind, the first in the configuration decides (docs/CONFIG.md).
    rule = filter_first(filter_hash_get(&t.mac, pkt_mac48(f)), filter_hash_get(&t.mac, pkt_mac48(f + 6)))
    if rule == FILTER_NONE:
        rule = filter_first(filter_hash_get(&t.oui, pkt_mac48(f) >> 24),
                            filter_hash_get(&t.oui, pkt_mac48(f + 6) >> 24))
    if rule == FILTER_NONE and t.ethertype != NULL:
        if w.ethertype >= ETHERTYPE_MIN:
            rule = t.ethertype[w.ethertype]
        if w.has_8021q:
            rule = filter_first(rule, t.ethertype[ETH_P_8021Q])
        if w.has_8021ad:
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


cdef void filter_carry(filter_table *t, filter_table *old, const int32_t *keep, bint keep_default) noexcept nogil:
    """Move to a new table the counts a swap keeps: the hits of every rule both tables hold
    (keep[i]: the old index of new rule i, or -1), the default's if its action stayed, the
    guard presets', and the EtherType counts, whatever the rules (the arrays trade places, so `old` gets t's zeros).
    The caller holds the locks of every reader of `old`: nobody counts into it meanwhile."""
    cdef uint32_t i
    cdef uint64_t *seen
    for i in range(t.nrules):
        if keep[i] >= 0:
            t.hits[i] = old.hits[keep[i]]
    if keep_default:
        t.default_hits = old.default_hits
    memcpy(t.guard_hits, old.guard_hits, sizeof(t.guard_hits))
    seen = t.seen
    t.seen = old.seen
    old.seen = seen


cdef void filter_readers(dp_state *d, engine_state **engines, int direction, bint take) noexcept nogil:
    """Take (or, take False, let go of) the locks every reader of d.filt[*][direction] holds while
    it reads: each engine's tx_lock for nic_ingress, recv_lock for tunnel_ingress."""
    cdef int k
    cdef pthread_mutex_t *lock
    for k in range(ENGINES_MAX if direction == FILTER_NIC_INGRESS else 1):
        if direction == FILTER_NIC_INGRESS:
            if engines[k] == NULL:
                continue
            lock = &engines[k].tx_lock
        else:
            lock = &d.recv_lock
        if take:
            pthread_mutex_lock(lock)
        else:
            pthread_mutex_unlock(lock)


# -- building and swapping tables (Datapath.set_filter, filter_stats): the control plane's ----

FILTER_KINDS = {"mac": FILTER_KIND_MAC, "oui": FILTER_KIND_OUI, "ethertype": FILTER_KIND_ETHERTYPE}


cdef filter_table *filter_compile(bint default_allow, list rules, uint32_t guards) except NULL:
    """A table of (allow, kind, value) rules in configuration order; ValueError names a bad one."""
    cdef filter_table *t
    cdef uint64_t *values
    cdef uint32_t i
    allow = bytearray(len(rules) + 1)
    kinds = bytearray(len(rules) + 1)
    values = <uint64_t *>calloc(len(rules) + 1, sizeof(uint64_t))
    if values == NULL:
        raise MemoryError("filter table")
    try:
        for i, (allowed, kind, value) in enumerate(rules):
            if kind == "mac" and isinstance(value, bytes) and len(value) == 6:
                values[i] = int.from_bytes(value, "big")
            elif kind == "oui" and isinstance(value, bytes) and len(value) == 3:
                values[i] = int.from_bytes(value, "big")
            elif kind == "ethertype" and isinstance(value, int) and ETHERTYPE_MIN <= value <= 0xFFFF:
                values[i] = value
            else:
                raise ValueError(f"rule {i + 1}: bad {kind} {value!r}")
            allow[i] = 1 if allowed else 0
            kinds[i] = FILTER_KINDS[kind]
        t = filter_build(default_allow, len(rules), <uint8_t *>allow, <uint8_t *>kinds, values, guards)
    finally:
        free(values)
    if t == NULL:
        raise MemoryError("filter table")
    return t


cdef filter_install(Datapath dp, int direction, bint default_allow, list rules, int segment, uint32_t guards):
    """Build the table and swap it in under the locks its readers hold; the hits of rules kept
    (matched by value against the table replaced) carry over, as does the default's if its
    action stayed."""
    cdef dp_state *d = dp.d
    cdef filter_table *t = filter_compile(default_allow, rules, guards)
    cdef filter_table *old = NULL
    cdef int32_t *keep
    cdef uint32_t i
    cdef bint keep_default
    keep = <int32_t *>malloc((len(rules) + 1) * sizeof(int32_t))
    if keep == NULL:
        filter_free(t)
        raise MemoryError("filter table")
    previous = dp.filter_rules.get((segment, direction))
    first = {}
    if previous is not None:
        for i, rule in enumerate(previous[1]):
            first.setdefault(rule, i)
    for i, rule in enumerate(rules):
        keep[i] = first.get(rule, -1)
    keep_default = previous is not None and previous[0] == default_allow
    with nogil:
        # Never wait for a lock holding the GIL: a thread in filter_report may need it.
        pthread_mutex_lock(&d.filter_lock)
        filter_readers(d, dp.engine_list, direction, True)
        old = d.filt[segment][direction]
        if old != NULL:
            filter_carry(t, old, keep, keep_default)
        d.filt[segment][direction] = t
        filter_readers(d, dp.engine_list, direction, False)
        pthread_mutex_unlock(&d.filter_lock)
    free(keep)
    filter_free(old)
    dp.filter_rules[segment, direction] = (default_allow, tuple(rules))


cdef uint64_t FILTER_ZERO_BLOCK[FILTER_SEEN_BLOCK]      # all zeros: what an untouched block compares equal to


cdef dict filter_report(dp_state *d, int direction, int segment):
    """Datapath.filter_stats(): the hits of one installed table, read under filter_lock. The
    512 KiB of EtherType counters are mostly zeros: whole blocks are skipped by one memcmp, a
    few microseconds instead of a walk over 64 Ki words (ten times slower in the sanitizer build)."""
    cdef filter_table *t
    cdef uint32_t i, block
    cdef dict seen = {}
    with nogil:
        pthread_mutex_lock(&d.filter_lock)
    try:
        t = d.filt[segment][direction]
        for block in range(0, FILTER_ETHERTYPES, FILTER_SEEN_BLOCK):
            if memcmp(&t.seen[block], FILTER_ZERO_BLOCK, sizeof(FILTER_ZERO_BLOCK)) != 0:
                for i in range(block, block + FILTER_SEEN_BLOCK):
                    if t.seen[i]:
                        seen[i] = t.seen[i]
        guards = {name: t.guard_hits[i] for i, name in enumerate(GUARD_NAMES) if t.guards & (1 << i)}
        return {"rules": [t.hits[i] for i in range(t.nrules)], "default": t.default_hits,
                "ethertypes": seen, "guards": guards}
    finally:
        pthread_mutex_unlock(&d.filter_lock)
