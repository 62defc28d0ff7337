# Reassembly: a bounded table of frames in progress, keyed by (receive session, base counter).
#
# Memory is fixed when the datapath is built: small buffers for frames up to 1522 bytes and a few
# large ones for jumbo and GSO frames. Filling slots sit in an allocation-order list per class, so
# both expiry and eviction take the oldest first in O(1); an open-addressing hash (linear probing,
# backward-shift deletion, load <= 1/2) finds a frame's slot from any of its fragments.

cdef inline uint32_t reasm_buf_len(int cls) noexcept nogil:
    return SMALL_BUF_LEN if cls == REASM_SMALL else LARGE_BUF_LEN


cdef void reasm_free_all(reasm_table *t) noexcept nogil:
    """Every slot on its class's free stack, lowest id on top; no slot filling."""
    cdef int32_t i, c
    for c in range(REASM_CLASSES):
        t.cls[c].head = -1
        t.cls[c].tail = -1
        t.cls[c].nfree = t.cls[c].count
        for i in range(t.cls[c].count):
            t.cls[c].free_stack[i] = t.cls[c].first + t.cls[c].count - 1 - i


cdef int reasm_init(reasm_table *t, uint64_t budget_bytes, uint64_t timeout_ms) noexcept nogil:
    cdef int32_t nsmall = <int32_t>(budget_bytes // 2 // SMALL_BUF_LEN)
    cdef int32_t nlarge = <int32_t>(budget_bytes // 2 // LARGE_BUF_LEN)
    cdef int32_t i
    cdef uint32_t size = 1, bits = 0
    cdef uint8_t *p
    if nsmall < 16:
        nsmall = 16
    if nlarge < 2:
        nlarge = 2
    memset(t, 0, sizeof(reasm_table))
    t.timeout_ms = timeout_ms
    t.nslots = nsmall + nlarge
    t.cls[REASM_SMALL].first = 0
    t.cls[REASM_SMALL].count = nsmall
    t.cls[REASM_LARGE].first = nsmall
    t.cls[REASM_LARGE].count = nlarge
    while size < <uint32_t>(2 * t.nslots):
        size <<= 1
        bits += 1
    t.index_mask = size - 1
    t.index_shift = 64 - bits
    t.slots = <reasm_slot *>calloc(t.nslots, sizeof(reasm_slot))
    # calloc'd pages stay untouched until a daemon's engine makes them resident (engine.pxi).
    t.arena_len = <size_t>nsmall * SMALL_BUF_LEN + <size_t>nlarge * LARGE_BUF_LEN
    t.arena = <uint8_t *>calloc(t.arena_len, 1)
    t.index = <int32_t *>malloc(size * sizeof(int32_t))
    t.cls[REASM_SMALL].free_stack = <int32_t *>malloc(nsmall * sizeof(int32_t))
    t.cls[REASM_LARGE].free_stack = <int32_t *>malloc(nlarge * sizeof(int32_t))
    if (t.slots == NULL or t.arena == NULL or t.index == NULL or t.cls[REASM_SMALL].free_stack == NULL
            or t.cls[REASM_LARGE].free_stack == NULL):
        return -1
    for i in range(<int32_t>size):
        t.index[i] = -1
    reasm_free_all(t)
    p = t.arena
    for i in range(t.nslots):
        t.slots[i].buf = p
        t.slots[i].cls = REASM_SMALL if i < nsmall else REASM_LARGE
        p += reasm_buf_len(t.slots[i].cls)
    # Sanitizer builds: a slot's buffer is readable only while it holds a frame (reasm_alloc).
    etun_poison(t.arena, <size_t>(p - t.arena))
    return 0


cdef void reasm_free(reasm_table *t) noexcept nogil:
    if t.arena != NULL:
        etun_unpoison(t.arena, t.arena_len)
    free(t.slots)
    free(t.arena)
    free(t.index)
    free(t.cls[REASM_SMALL].free_stack)
    free(t.cls[REASM_LARGE].free_stack)
    memset(t, 0, sizeof(reasm_table))


cdef inline uint32_t reasm_home(const reasm_table *t, uint32_t gen, uint64_t base) noexcept nogil:
    return <uint32_t>(((base * <uint64_t>0x9E3779B97F4A7C15)
                       ^ (<uint64_t>gen * <uint64_t>0xD6E8FEB86659FD93)) >> t.index_shift)


cdef int32_t reasm_lookup(const reasm_table *t, uint32_t gen, uint64_t base) noexcept nogil:
    cdef uint32_t pos = reasm_home(t, gen, base)
    cdef int32_t sid
    while True:
        sid = t.index[pos]
        if sid < 0:
            return -1
        if t.slots[sid].base == base and t.slots[sid].gen == gen:
            return sid
        pos = (pos + 1) & t.index_mask


cdef void reasm_index_insert(reasm_table *t, int32_t sid) noexcept nogil:
    cdef reasm_slot *s = &t.slots[sid]
    cdef uint32_t pos = reasm_home(t, s.gen, s.base)
    while t.index[pos] >= 0:
        pos = (pos + 1) & t.index_mask
    t.index[pos] = sid
    s.hpos = <int32_t>pos


cdef void reasm_index_delete(reasm_table *t, uint32_t hole) noexcept nogil:
    """Remove an entry and shift later entries of its probe run back, so lookups never stop early."""
    cdef uint32_t j = hole, home
    cdef int32_t sid
    cdef bint stays
    while True:
        j = (j + 1) & t.index_mask
        sid = t.index[j]
        if sid < 0:
            break
        home = reasm_home(t, t.slots[sid].gen, t.slots[sid].base)
        # The entry at j may fill the hole unless its home lies cyclically in (hole, j].
        if hole <= j:
            stays = hole < home and home <= j
        else:
            stays = hole < home or home <= j
        if not stays:
            t.index[hole] = sid
            t.slots[sid].hpos = <int32_t>hole
            hole = j
    t.index[hole] = -1


cdef void reasm_unlink(reasm_table *t, int32_t sid) noexcept nogil:
    """Take a filling slot out of the hash and its class's age list."""
    cdef reasm_slot *s = &t.slots[sid]
    cdef reasm_class *c = &t.cls[s.cls]
    reasm_index_delete(t, <uint32_t>s.hpos)
    if s.older >= 0:
        t.slots[s.older].newer = s.newer
    else:
        c.head = s.newer
    if s.newer >= 0:
        t.slots[s.newer].older = s.older
    else:
        c.tail = s.older
    s.older = -1
    s.newer = -1
    s.hpos = -1


cdef inline void reasm_release(reasm_table *t, int32_t sid) noexcept nogil:
    """Return a slot whose frame was delivered or discarded to its class's free stack."""
    cdef reasm_slot *s = &t.slots[sid]
    cdef reasm_class *c = &t.cls[s.cls]
    etun_poison(s.buf, reasm_buf_len(s.cls))
    c.free_stack[c.nfree] = sid
    c.nfree += 1


cdef inline void reasm_discard(reasm_table *t, int32_t sid) noexcept nogil:
    reasm_unlink(t, sid)
    reasm_release(t, sid)


cdef inline bint reasm_class_spent(const reasm_table *t, int32_t sid) noexcept nogil:
    """True when the class of slot sid (a frame just completed) has no free slot left: a batch
    holding its frames must be delivered before the next frame of the class can be opened."""
    return sid >= 0 and t.cls[t.slots[sid].cls].nfree == 0


cdef int32_t reasm_alloc(reasm_table *t, uint32_t gen, uint64_t base, uint32_t length,
                         uint64_t now_ms, bint *evicted) noexcept nogil:
    """A filling slot for a new frame, evicting the oldest incomplete one of its class if full
    (then *evicted is set)."""
    cdef reasm_class *c = &t.cls[REASM_SMALL if length + TAILROOM <= SMALL_BUF_LEN else REASM_LARGE]
    cdef int32_t sid
    cdef reasm_slot *s
    evicted[0] = False
    if c.nfree == 0:
        if c.head < 0:
            return -1                 # every slot of the class is being delivered right now
        evicted[0] = True
        reasm_discard(t, c.head)
    c.nfree -= 1
    sid = c.free_stack[c.nfree]
    s = &t.slots[sid]
    # The frame and the cipher's TAILROOM: all open_packet() may touch (sanitizer builds).
    etun_unpoison(s.buf, length + TAILROOM)
    s.gen = gen
    s.base = base
    s.t_first_ms = now_ms
    s.got = 0
    memset(s.have, 0, sizeof(s.have))
    reasm_index_insert(t, sid)
    s.newer = -1
    s.older = c.tail
    if c.tail >= 0:
        t.slots[c.tail].newer = sid
    else:
        c.head = sid
    c.tail = sid
    return sid


cdef uint32_t reasm_expire(reasm_table *t, uint64_t now_ms) noexcept nogil:
    """Discard frames whose first fragment arrived more than the timeout ago, oldest first.
    Returns how many."""
    cdef int c
    cdef int32_t sid
    cdef uint32_t n = 0
    for c in range(REASM_CLASSES):
        while True:
            sid = t.cls[c].head
            if sid < 0 or t.slots[sid].t_first_ms + t.timeout_ms >= now_ms:
                break
            n += 1
            reasm_discard(t, sid)
    return n


cdef int32_t reasm_in_use(const reasm_table *t) noexcept nogil:
    cdef int32_t c, n = 0
    for c in range(REASM_CLASSES):
        n += t.cls[c].count - t.cls[c].nfree
    return n
