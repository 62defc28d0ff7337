# The bridge: etun as a good switch port (docs/MANUAL.md, "Bridging: learning, loops, storms").
#
# Per frame, from either pump, with no lock and no allocation:
#   1. learn the source MAC: local (captured on the LAN, DIR_TX) or remote (from the tunnel, DIR_RX)
#   2. a MAC seen on this side within BRIDGE_FLIP_MS of being seen on the other is a fast flip;
#      BRIDGE_LOOP_FLIPS of them in a row is a loop: that direction is held off (at "block")
#   3. tx: unicast to a MAC last seen on the LAN stays on the LAN (local_destination)
#   4. flooded frames (broadcast, multicast, unicast to an unknown MAC) over storm_limit a
#      second per segment and direction are dropped (storm)
#
# The MAC table is shared by every segment (the key holds the segment) and by both pumps. A MAC
# lives in one of two buckets, each one cache line of BRIDGE_WAYS entries: the first (picked by
# the MAC alone) while it is at most half full, else the emptier (picked by MAC and segment);
# when both are full, one of their MACs moves on to its own other bucket to make room
# (bridge_relocate). Nearly every lookup reads one line, and two choices keep the buckets even:
# 40,960 random MACs, five eighths of the 65,536 slots, fit (a test learns them); in 20 runs the
# first MAC that found no room came between 47,616 and 52,480 (without the move, one run in 150
# already had one at 24,576). The pumps ask for the
# first buckets of a whole batch before its first frame meets the bridge (bridge_prefetch), so
# a batch's misses overlap. An entry is two 64-bit words, each loaded and
# stored whole (atomic.h). Looking up needs no lock: read the key, the info, the key again (a slot taken
# over by another MAC meanwhile reads as a miss). Refreshing an entry is a compare-and-swap of
# its info, at most every BRIDGE_TOUCH_MS, so the two pumps do not fight over cache lines.
# Adding a MAC takes bridge_lock, looks again, then fills an empty or aged slot: key 0, info,
# key -- so a MAC is never in the table twice, and a reader never pairs one MAC's key with
# another's info. Aged entries read as absent; their slots are reused, and the control loop
# empties them every few seconds (bridge_sweep). With several segments, each holds at most its
# share (bridge_share): a host spraying source MACs fills its own segment's share, never the
# others'.
#
# Loop and storm state (bridge_dir) belongs to one direction: only that direction's pump (the
# holder of tx_lock, or of recv_lock) writes it; the control loop only reads it.

cdef uint64_t BRIDGE_SEEN_MASK = (<uint64_t>1 << 40) - 1   # info bits 0..39: last seen, ms (35 years)
cdef uint64_t BRIDGE_MAC_MASK = (<uint64_t>1 << 48) - 1    # key bits 0..47: the MAC

cdef enum:
    BRIDGE_SIDE_SHIFT = 40             # bit 40: SIDE_LOCAL or SIDE_REMOTE
    BRIDGE_FLIPS_SHIFT = 41            # bits 41..43: fast flips in a row (at most 7)
    BRIDGE_FLIP_S_SHIFT = 44           # bits 44..63: when it last flipped, s (wraps in 12 days)
    BRIDGE_FLIP_S_MASK = (1 << 20) - 1
    BRIDGE_TOUCH_MS = 100              # a MAC's last-seen time is refreshed at most this often
    BRIDGE_FLIP_MS = 1000              # seen on the other side this recently: a fast flip
    BRIDGE_LOOP_FLIPS = 3              # fast flips in a row that make a loop (a move makes one)
    BRIDGE_FLIP_WINDOW_S = 2           # ... each within this long (whole seconds) of the one before
    BRIDGE_HOLD_MS = 2000              # a loop's first hold; it doubles while the loop persists
    BRIDGE_HOLD_MAX_MS = 64000
    STORM_SECOND_MS = 1000
    BRIDGE_FIT = BRIDGE_BUCKETS * BRIDGE_WAYS * 3 // 8   # MACs shown to fit with room to spare
    BRIDGE_SHARE_MIN = 2048            # a segment's share is never smaller


cdef inline uint64_t bridge_key(uint32_t seg, const uint8_t *mac) noexcept nogil:
    return (<uint64_t>1 << 63) | (<uint64_t>seg << 48) | pkt_mac48(mac)


cdef inline uint64_t bridge_info(uint64_t seen_ms, int side, uint64_t flips, uint64_t flip_s) noexcept nogil:
    return ((seen_ms & BRIDGE_SEEN_MASK) | (<uint64_t>side << BRIDGE_SIDE_SHIFT)
            | (flips << BRIDGE_FLIPS_SHIFT) | ((flip_s & BRIDGE_FLIP_S_MASK) << BRIDGE_FLIP_S_SHIFT))


cdef inline uint64_t bridge_seen(uint64_t info) noexcept nogil:
    return info & BRIDGE_SEEN_MASK


cdef inline int bridge_side(uint64_t info) noexcept nogil:
    return <int>((info >> BRIDGE_SIDE_SHIFT) & 1)


cdef inline uint64_t bridge_age(uint64_t info, uint64_t now) noexcept nogil:
    """ms since the entry was last seen; 0 when the other pump's clock read a little later."""
    cdef uint64_t seen = bridge_seen(info)
    now &= BRIDGE_SEEN_MASK
    return now - seen if now > seen else 0


cdef enum:
    BRIDGE_INDEX_SHIFT = 64 - 14       # a bucket index is the top 14 bits of a product (16,384 buckets)


cdef inline bridge_entry *bridge_bucket(dp_state *d, uint64_t key, int which) noexcept nogil:
    """Bucket `which` of a key, keyed by the datapath's random seed as the Linux bridge keys its
    table: nobody outside can aim at a bucket. The index is the top bits of (key ^ seed) times
    an odd constant: every bit of the key moves them (a product's low bits, which filter_mix
    uses, see only the key's low bits: MACs differing in their first octet shared buckets
    whatever the seed). The first bucket is picked by the MAC alone, so a batch of frames can
    ask for it before their segments are known (bridge_prefetch); the second by the MAC and the
    segment, with another seed and constant, so one MAC on many segments (a router on a trunk)
    has a second bucket on each."""
    cdef uint64_t h
    if which == 0:
        h = ((key & BRIDGE_MAC_MASK) ^ d.bridge_seed) * <uint64_t>0x9E3779B97F4A7C15
    else:
        h = (key ^ ((d.bridge_seed << 32) | (d.bridge_seed >> 32))) * <uint64_t>0xC4CEB9FE1A85EC53
    return d.macs + ((h >> BRIDGE_INDEX_SHIFT) & (BRIDGE_BUCKETS - 1)) * BRIDGE_WAYS


cdef bridge_entry *bridge_find(dp_state *d, uint64_t key, bridge_entry *first, uint64_t *info) noexcept nogil:
    """The entry of key and its info, or NULL; lock-free (see the top of this file). `first`:
    the key's first bucket, as the caller already found it."""
    cdef bridge_entry *b
    cdef int which, i
    for which in range(2):
        b = first if which == 0 else bridge_bucket(d, key, 1)
        for i in range(BRIDGE_WAYS):
            if atomic_load64(&b[i].key) == key:
                info[0] = atomic_load64(&b[i].info)
                if atomic_load64(&b[i].key) == key:
                    return &b[i]
                return NULL            # just taken over by another MAC: this one had aged
    return NULL


cdef inline uint32_t bridge_share(dp_state *d) noexcept nogil:
    """MACs one segment may hold: all of the table when it is alone; else its part of BRIDGE_FIT
    (at least BRIDGE_SHARE_MIN), so that hosts on some segments, however many MACs they spray,
    leave the others' parts free (up to 12 segments the parts add up to no more than fits)."""
    cdef uint32_t share
    if d.nsegs <= 1:
        return BRIDGE_BUCKETS * BRIDGE_WAYS
    share = BRIDGE_FIT // <uint32_t>d.nsegs
    return share if share > BRIDGE_SHARE_MIN else BRIDGE_SHARE_MIN


cdef inline uint32_t bridge_key_segment(uint64_t key) noexcept nogil:
    return <uint32_t>((key >> 48) & 0x7FFF)


cdef bridge_entry *bridge_free_slot(bridge_entry *b, uint64_t now, uint64_t age_ms, int own_segment,
                                    int *live) noexcept nogil:
    """The first empty or aged slot of bucket b (NULL: none), and how many live MACs it holds.
    own_segment >= 0: only an aged slot of that segment will do (it holds its whole share)."""
    cdef bridge_entry *slot = NULL
    cdef int i
    live[0] = 0
    for i in range(BRIDGE_WAYS):
        if b[i].key != 0 and bridge_age(atomic_load64(&b[i].info), now) < age_ms:
            live[0] += 1
        elif slot == NULL and (own_segment < 0 or (b[i].key != 0
                                                   and bridge_key_segment(b[i].key) == <uint32_t>own_segment)):
            slot = &b[i]
    return slot


cdef bridge_entry *bridge_relocate(dp_state *d, bridge_entry *b, uint64_t now) noexcept nogil:
    """Under bridge_lock, bucket b holding no free slot: move one of its MACs to an empty or aged
    slot of that MAC's other bucket (one cuckoo step) and return the slot it left, empty; NULL if
    every one's other bucket is full too. The copy is whole before the old slot is emptied, so a
    reader finds the MAC in one slot or the other; a refresh a pump makes to the old slot just
    then is lost, and made again by the MAC's next frame."""
    cdef bridge_entry *other
    cdef bridge_entry *slot
    cdef uint64_t key
    cdef int i, live
    for i in range(BRIDGE_WAYS):
        key = b[i].key
        other = bridge_bucket(d, key, 0)
        if other == b:
            other = bridge_bucket(d, key, 1)
        if other == b:
            continue                           # both of its buckets are this one
        slot = bridge_free_slot(other, now, d.bridge.mac_age_ms, -1, &live)
        if slot == NULL:
            continue
        if slot.key != 0:
            d.brseg[bridge_key_segment(slot.key)].entries -= 1
        atomic_store64(&slot.key, 0)
        atomic_store64(&slot.info, atomic_load64(&b[i].info))
        atomic_store64(&slot.key, key)
        atomic_store64(&b[i].key, 0)
        return &b[i]
    return NULL


cdef int bridge_insert(dp_state *d, uint64_t key, uint64_t info, uint64_t now) noexcept nogil:
    """Add a MAC under bridge_lock: 1 added, 0 already there (the other pump was first), -1 not
    learnt: both of its buckets are full of live MACs, and so are the other buckets of theirs;
    -2 not learnt: its segment holds its share of the table (bridge_share) and has no aged slot
    of its own there to reuse -- so one segment's hosts cannot crowd out the others'."""
    cdef bridge_entry *b1 = bridge_bucket(d, key, 0)
    cdef bridge_entry *b2 = bridge_bucket(d, key, 1)
    cdef bridge_entry *s1
    cdef bridge_entry *s2
    cdef bridge_entry *slot
    cdef uint32_t seg = bridge_key_segment(key)
    cdef int i, live1, live2, own = -1
    pthread_mutex_lock(&d.bridge_lock)
    for i in range(BRIDGE_WAYS):
        if b1[i].key == key or b2[i].key == key:     # keys change only under this lock
            pthread_mutex_unlock(&d.bridge_lock)
            return 0
    if d.nsegs > 1 and d.brseg[seg].entries >= bridge_share(d):
        own = <int>seg                         # alone, a segment's share is the table: full, not -2
    s1 = bridge_free_slot(b1, now, d.bridge.mac_age_ms, own, &live1)
    s2 = bridge_free_slot(b2, now, d.bridge.mac_age_ms, own, &live2)
    # The first bucket while it is at most half full: lookups look there first.
    slot = s1 if s1 != NULL and (live1 < BRIDGE_WAYS // 2 or s2 == NULL or live1 <= live2) else s2
    if slot == NULL and own < 0:
        slot = bridge_relocate(d, b1, now)     # both full: make room by moving one MAC on
        if slot == NULL:
            slot = bridge_relocate(d, b2, now)
    if slot != NULL:
        if slot.key != 0:
            d.brseg[bridge_key_segment(slot.key)].entries -= 1
        d.brseg[seg].entries += 1
        # Key 0 first: a reader between these stores sees no MAC, never this info under the old key.
        atomic_store64(&slot.key, 0)
        atomic_store64(&slot.info, info)
        atomic_store64(&slot.key, key)
    pthread_mutex_unlock(&d.bridge_lock)
    if slot != NULL:
        return 1
    return -2 if own >= 0 else -1


cdef uint32_t bridge_sweep(dp_state *d, uint64_t now) noexcept nogil:
    """Empty the slots of aged MACs, so that they count against their segment's share no more
    (the control loop, every few seconds). Returns how many. The scan reads without the lock and
    takes it per slot to empty; a MAC a pump refreshes just then may be emptied with it, and is
    learnt again from its next frame."""
    cdef uint64_t key, age_ms = d.bridge.mac_age_ms
    cdef uint32_t i, freed = 0
    for i in range(BRIDGE_BUCKETS * BRIDGE_WAYS):
        key = atomic_load64(&d.macs[i].key)
        if key == 0 or bridge_age(atomic_load64(&d.macs[i].info), now) < age_ms:
            continue
        pthread_mutex_lock(&d.bridge_lock)
        if d.macs[i].key == key and bridge_age(atomic_load64(&d.macs[i].info), now) >= age_ms:
            atomic_store64(&d.macs[i].key, 0)
            d.brseg[bridge_key_segment(key)].entries -= 1
            freed += 1
        pthread_mutex_unlock(&d.bridge_lock)
    return freed


cdef void bridge_loop(dp_state *d, bridge_dir *b, const uint8_t *mac, uint64_t now) noexcept nogil:
    """A MAC flipped sides fast, again: a loop. Remember the MAC; unless held already, hold this
    direction off -- twice as long as last time if the loop came back within one hold."""
    cdef uint64_t m = pkt_mac48(mac), hold
    cdef uint32_t i
    cdef bint known = False, new_loop
    if now < b.hold_until_ms:
        for i in range(BRIDGE_LOOP_MACS):
            known |= b.loop_macs[i] == m
        if not known:
            b.loop_macs[b.loop_mac_next % BRIDGE_LOOP_MACS] = m
            b.loop_mac_next += 1
        return
    new_loop = not (b.hold_ms and now < b.hold_until_ms + b.hold_ms)
    if new_loop:
        hold = BRIDGE_HOLD_MS                  # a new loop: the control loop logs it once
        memset(b.loop_macs, 0, sizeof(b.loop_macs))
        b.loop_mac_next = 0
    else:
        hold = b.hold_ms * 2 if b.hold_ms * 2 < BRIDGE_HOLD_MAX_MS else BRIDGE_HOLD_MAX_MS
    b.loop_macs[b.loop_mac_next % BRIDGE_LOOP_MACS] = m
    b.loop_mac_next += 1
    if new_loop:
        atomic_store64(&b.episodes, b.episodes + 1)    # after its MAC (release): a poll names it
    b.hold_ms = hold
    b.hold_until_ms = now + hold
    b.loops += 1


cdef void bridge_learn(dp_state *d, uint32_t seg, int direction, const uint8_t *mac, uint64_t now,
                       bint held, bridge_entry *first) noexcept nogil:
    """Record that `mac` was seen as a source on this direction's side of segment `seg`; count
    a move or a fast flip; a flip in a direction still carried may mark a loop. `first`: the
    MAC's first bucket, or NULL to find it here."""
    cdef bridge_dir *b = &d.brseg[seg].dir[direction]
    cdef int side = SIDE_LOCAL if direction == DIR_TX else SIDE_REMOTE
    cdef uint64_t key = bridge_key(seg, mac), old = 0, new, flips, flip_s, now_s = now // 1000
    cdef bridge_entry *e
    cdef int attempt, rc
    cdef bint fast
    if mac[0] & 1:
        return                                 # a group address is never a station's source
    if first == NULL:
        first = bridge_bucket(d, key, 0)
    for attempt in range(3):
        e = bridge_find(d, key, first, &old)
        if e == NULL:
            rc = bridge_insert(d, key, bridge_info(now, side, 0, now_s), now)
            if rc > 0:
                b.learnt += 1
                return
            if rc == -2:
                b.over_share += 1
                return
            if rc < 0:
                b.full += 1
                return
            continue                           # the other pump added it: update that
        fast = False
        if bridge_age(old, now) >= d.bridge.mac_age_ms:
            new = bridge_info(now, side, 0, now_s)        # aged: as good as new
        elif bridge_side(old) == side:
            if bridge_age(old, now) < BRIDGE_TOUCH_MS:
                return
            new = (old & ~BRIDGE_SEEN_MASK) | (now & BRIDGE_SEEN_MASK)
        else:
            fast = bridge_age(old, now) < BRIDGE_FLIP_MS
            flips = (old >> BRIDGE_FLIPS_SHIFT) & 7
            flip_s = (old >> BRIDGE_FLIP_S_SHIFT) & BRIDGE_FLIP_S_MASK
            if not fast:
                flips = 0
            elif flips and ((now_s - flip_s) & BRIDGE_FLIP_S_MASK) <= BRIDGE_FLIP_WINDOW_S:
                flips = flips + 1 if flips < 7 else 7
            else:
                flips = 1
            new = bridge_info(now, side, flips, now_s)
        if not atomic_cas64(&e.info, old, new):
            continue                           # the other pump refreshed it meanwhile
        if bridge_age(old, now) >= d.bridge.mac_age_ms:
            b.learnt += 1
        elif bridge_side(old) != side:
            if not fast:
                b.moves += 1
            else:
                b.flips += 1
                if (not held and d.bridge.loop_mode != LOOP_OFF
                        and ((new >> BRIDGE_FLIPS_SHIFT) & 7) >= BRIDGE_LOOP_FLIPS):
                    bridge_loop(d, b, mac, now)
        return


cdef inline void bridge_prefetch(dp_state *d, const uint8_t *f) noexcept nogil:
    """Start loading the first buckets of the frame's destination and source (the frame has at
    least 12 bytes): their misses overlap instead of following each other. The pumps do this
    for a whole batch before its first frame meets the bridge."""
    prefetch_line(bridge_bucket(d, pkt_mac48(f), 0))
    prefetch_line(bridge_bucket(d, pkt_mac48(f + 6), 0))


cdef inline int bridge_where(dp_state *d, uint32_t seg, const uint8_t *mac, uint64_t now,
                             bridge_entry *first) noexcept nogil:
    """The side a unicast MAC was last seen on, or -1: unknown or aged. `first`: its first bucket."""
    cdef uint64_t info = 0
    if bridge_find(d, bridge_key(seg, mac), first, &info) == NULL or bridge_age(info, now) >= d.bridge.mac_age_ms:
        return -1
    return bridge_side(info)


cdef inline bint bridge_storm(bridge_dir *b, uint32_t limit, uint64_t now) noexcept nogil:
    """One more flooded frame this second: over the limit?"""
    if limit == 0:
        return False
    if now - b.storm_second_ms >= STORM_SECOND_MS or now < b.storm_second_ms:
        b.storm_second_ms = now
        b.storm_count = 0
    if b.storm_count >= limit:
        return True
    b.storm_count += 1
    return False


cdef int bridge_tx(dp_state *d, uint32_t seg, const uint8_t *f, uint32_t n, uint64_t now) noexcept nogil:
    """A frame captured on the LAN of segment `seg`: 0 to tunnel it, or the DROP_* reason not to.
    The caller guarantees n >= MIN_FRAME_LEN."""
    cdef bridge_dir *b
    cdef bridge_entry *dst
    cdef bridge_entry *src
    cdef bint held
    cdef int where = -1
    if d.macs == NULL or seg >= SEGMENTS_MAX:
        return 0
    dst = bridge_bucket(d, pkt_mac48(f), 0)    # each found once, both asked for at once
    src = bridge_bucket(d, pkt_mac48(f + 6), 0)
    prefetch_line(dst)
    prefetch_line(src)
    b = &d.brseg[seg].dir[DIR_TX]
    held = d.bridge.loop_mode == LOOP_BLOCK and now < b.hold_until_ms
    bridge_learn(d, seg, DIR_TX, f + 6, now, held, src)
    if not (f[0] & 1):
        where = bridge_where(d, seg, f, now, dst)
        if where == SIDE_LOCAL and d.bridge.learning:
            return DROP_LOCAL_DESTINATION
    if held:
        return DROP_LOOP
    if where < 0 and bridge_storm(b, d.bridge.storm_limit, now):
        return DROP_STORM
    return 0


cdef int bridge_rx(dp_state *d, uint32_t seg, const uint8_t *f, uint32_t n, uint64_t now) noexcept nogil:
    """A frame from the tunnel for the LAN of segment `seg`: 0 to deliver it, or the DROP_*
    reason not to."""
    cdef bridge_dir *b
    cdef bridge_entry *dst
    cdef bridge_entry *src
    cdef bint held
    if d.macs == NULL or seg >= SEGMENTS_MAX or n < MIN_FRAME_LEN:
        return 0
    dst = bridge_bucket(d, pkt_mac48(f), 0)    # each found once, both asked for at once
    src = bridge_bucket(d, pkt_mac48(f + 6), 0)
    prefetch_line(dst)
    prefetch_line(src)
    b = &d.brseg[seg].dir[DIR_RX]
    held = d.bridge.loop_mode == LOOP_BLOCK and now < b.hold_until_ms
    bridge_learn(d, seg, DIR_RX, f + 6, now, held, src)
    if held:
        return DROP_LOOP
    if (((f[0] & 1) or bridge_where(d, seg, f, now, dst) != SIDE_LOCAL)
            and bridge_storm(b, d.bridge.storm_limit, now)):
        return DROP_STORM
    return 0


cdef void bridge_count(dp_state *d, uint32_t seg, uint64_t now, uint64_t *local, uint64_t *remote) noexcept nogil:
    """Live MACs of a segment, by side (a scan of the table: for status, not per frame)."""
    cdef uint64_t key, info, want = (<uint64_t>1 << 63) | (<uint64_t>seg << 48)
    cdef uint32_t i
    local[0] = remote[0] = 0
    for i in range(BRIDGE_BUCKETS * BRIDGE_WAYS):
        key = atomic_load64(&d.macs[i].key)
        if key == 0 or (key & ~BRIDGE_MAC_MASK) != want:
            continue
        info = atomic_load64(&d.macs[i].info)
        if bridge_age(info, now) < d.bridge.mac_age_ms:
            if bridge_side(info) == SIDE_LOCAL:
                local[0] += 1
            else:
                remote[0] += 1


# -- for the control plane: [bridge] in, status out (Datapath.set_bridge, bridge_stats, ...) --

LOOP_MODES = {"off": LOOP_OFF, "log": LOOP_LOG, "block": LOOP_BLOCK}
SIDE_NAMES = {SIDE_LOCAL: "local", SIDE_REMOTE: "remote"}
BRIDGE_TABLE_BYTES = BRIDGE_ENTRIES * sizeof(bridge_entry)
# The timings at the top of this file are a cdef enum, not exported by itself; Python (bridge.py's
# log line, tests) reads these two under the same names.
globals().update({"BRIDGE_HOLD_MS": BRIDGE_HOLD_MS, "BRIDGE_FLIP_MS": BRIDGE_FLIP_MS})


cdef void bridge_configure(dp_state *d, bint learning, uint64_t mac_age_ms, int loop_mode,
                           uint32_t storm_limit) noexcept nogil:
    """[bridge] in, one word at a time: the pumps read each setting per frame, so no lock."""
    d.bridge.learning = learning
    d.bridge.mac_age_ms = mac_age_ms
    d.bridge.loop_mode = loop_mode
    d.bridge.storm_limit = storm_limit


cdef dict bridge_report(dp_state *d, uint32_t seg, uint64_t now):
    """Datapath.bridge_stats(): one segment's MACs, slots and per-direction counts, lock-free."""
    cdef uint64_t local = 0, remote = 0
    cdef bridge_dir *b
    with nogil:
        bridge_count(d, seg, now, &local, &remote)
    out = {"macs": {"local": local, "remote": remote}, "now_ms": now,
           "entries": d.brseg[seg].entries,
           "share": bridge_share(d)}
    for name, direction in (("tx", DIR_TX), ("rx", DIR_RX)):
        b = &d.brseg[seg].dir[direction]
        out[name] = {
            "learnt": b.learnt, "moves": b.moves, "flips": b.flips, "full": b.full,
            "over_share": b.over_share,
            "loops": b.loops, "episodes": atomic_load64(&b.episodes), "hold_until_ms": b.hold_until_ms,
            "hold_ms": b.hold_ms,
            "held": d.bridge.loop_mode == LOOP_BLOCK and now < b.hold_until_ms,
            "loop_macs": [b.loop_macs[i].to_bytes(6, "big").hex(":")
                          for i in range(BRIDGE_LOOP_MACS) if b.loop_macs[i]],
        }
    return out


cdef list bridge_list_macs(dp_state *d, uint64_t now):
    """Datapath.bridge_macs(): the live entries, copied out lock-free first, then named."""
    cdef uint64_t *copy = <uint64_t *>malloc(BRIDGE_ENTRIES * 2 * sizeof(uint64_t))
    cdef uint32_t i, n = 0
    cdef uint64_t key, info
    if copy == NULL:
        raise MemoryError("MAC table copy")
    try:
        with nogil:
            for i in range(BRIDGE_ENTRIES):
                key = atomic_load64(&d.macs[i].key)
                info = atomic_load64(&d.macs[i].info)
                if key != 0 and atomic_load64(&d.macs[i].key) == key \
                        and bridge_age(info, now) < d.bridge.mac_age_ms:
                    copy[2 * n] = key
                    copy[2 * n + 1] = info
                    n += 1
        return [((copy[2 * i] & BRIDGE_MAC_MASK).to_bytes(6, "big").hex(":"), bridge_key_segment(copy[2 * i]),
                 SIDE_NAMES[bridge_side(copy[2 * i + 1])], bridge_age(copy[2 * i + 1], now))
                for i in range(n)]
    finally:
        free(copy)
