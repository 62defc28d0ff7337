# Segments: which segment a captured frame belongs to, and its VLAN tags off and back on.
#
# Segments (docs/CONFIG.md "[[segment]]", docs/PROTOCOL.md §2.2): which segment a captured frame
# belongs to, by its LAN port and VLAN tags; the selected tags off on the way in, the local
# segment's tags on the way out.
#
# A port's segments each select a tag path (one 802.1Q tag; or an outer tag, 802.1ad or 802.1Q,
# and an inner 802.1Q tag) or none. A frame belongs to the segment selecting its longest
# matching path: two tags before one. An untagged frame belongs to the port's segment without
# vlan, if any. A segment without vlan alone on its port takes every frame as it is, tags
# included. Tags deeper than the path stay in the frame. The PCP of the outermost selected tag
# crosses in the header's segment byte (bits 7..5) and is written into every tag pushed at the
# far side; DEI is not carried. Pushed tags are 802.1Q, and 802.1ad for a two-tag path's outer
# one, whatever the LAN sent: a host must not be able to change what etun pushes.

cdef inline uint8_t segment_byte(uint8_t peer_id, uint8_t pcp) noexcept nogil:
    return <uint8_t>((pcp << SEGMENT_ID_BITS) | peer_id)


cdef inline uint8_t segment_id(uint8_t b) noexcept nogil:
    return b & (SEGMENTS_MAX - 1)


cdef inline uint8_t segment_pcp(uint8_t b) noexcept nogil:
    return b >> SEGMENT_ID_BITS


cdef int segment_select(dp_state *d, int port, const uint8_t *f, uint32_t n,
                        uint8_t *pcp) noexcept nogil:
    """The segment of a frame captured on `port` (n >= MIN_FRAME_LEN), or -1: a VLAN no segment
    there selects. *pcp: the priority of the tag that selected it (0 when none did)."""
    cdef int s, untagged = -1, one = -1
    cdef uint16_t vid1 = 0, vid2 = 0, tpid = pkt_be16(f + 12)
    cdef bint tagged, two
    cdef seg_state *g
    tagged = pkt_is_vlan_tag(tpid) and n >= MIN_FRAME_LEN + VLAN_TAG_LEN
    if tagged:
        vid1 = pkt_be16(f + 14) & VLAN_VID_MASK
    # A priority tag (VLAN id 0) marks an untagged frame with a priority.
    tagged = tagged and vid1 != 0
    two = tagged and pkt_be16(f + 16) == ETH_P_8021Q and n >= MIN_FRAME_LEN + 2 * VLAN_TAG_LEN
    if two:
        vid2 = pkt_be16(f + 18) & VLAN_VID_MASK
    pcp[0] = pkt_be16(f + 14) >> VLAN_PCP_SHIFT if tagged else 0
    for s in range(d.nsegs):
        g = &d.seg[s]
        if g.port != port:
            continue
        if g.carry_all:
            pcp[0] = 0
            return s
        if g.ntags == 0:
            untagged = s
        elif g.vid[0] == vid1 and tagged:
            if g.ntags == 1 and tpid == ETH_P_8021Q:     # one tag: 802.1Q only, as a switch port
                one = s
            elif two and g.vid[1] == vid2:
                return s
    if one >= 0:
        return one
    if not tagged:
        pcp[0] = 0
        return untagged
    return -1


cdef inline uint8_t *segment_strip(dp_state *d, int s, uint8_t *frame, uint32_t *flen,
                                   int *shift) noexcept nogil:
    """Take the tags segment `s` selected out of the frame (the MAC addresses move up). Returns
    the new frame start."""
    cdef uint32_t cut = <uint32_t>d.seg[s].ntags * VLAN_TAG_LEN
    if cut == 0:
        return frame
    memmove(frame + cut, frame, 12)
    flen[0] -= cut
    shift[0] -= <int>cut
    return frame + cut


cdef inline bint segment_admits(const seg_state *g, const uint8_t *f, uint32_t n) noexcept nogil:
    """Whether a frame from the tunnel (n >= MIN_FRAME_LEN) may be written into segment g as it
    is. A segment that takes a trunk's untagged frames must not receive a tagged one: written as
    it came, it would land in a VLAN of the trunk no segment selects for it. A priority tag
    (VLAN 0) with nothing behind it is untagged."""
    cdef uint16_t et = pkt_be16(f + 12)
    if g.ntags or g.carry_all or not pkt_is_vlan_tag(et):
        return True
    return (n >= MIN_FRAME_LEN + VLAN_TAG_LEN and (pkt_be16(f + 14) & VLAN_VID_MASK) == 0
            and not pkt_is_vlan_tag(pkt_be16(f + 16)))


cdef inline uint32_t segment_tags(const seg_state *g, uint8_t pcp, uint8_t *out) noexcept nogil:
    """The tags to push for segment g, priority pcp, into out (8 bytes). Returns their length."""
    cdef uint32_t t
    for t in range(g.ntags):
        pkt_put_be16(out + t * VLAN_TAG_LEN, g.tpid[t])
        pkt_put_be16(out + t * VLAN_TAG_LEN + 2, <uint16_t>((pcp << VLAN_PCP_SHIFT) | g.vid[t]))
    return <uint32_t>g.ntags * VLAN_TAG_LEN


cdef inline void segment_count(dp_state *d, int direction, int s, uint32_t length) noexcept nogil:
    d.seg_ctr[s][direction][C_FRAMES] += 1
    d.seg_ctr[s][direction][C_BYTES] += length


cdef inline void segment_drop(dp_state *d, int direction, int s, int reason, const uint8_t *frame,
                              uint32_t length) noexcept nogil:
    """A frame of segment s dropped: counted for the tunnel and for the segment."""
    d.seg_ctr[s][direction][reason] += 1
    drop_frame(d, direction, reason, frame, length)


# -- for the control plane: the segments in, the map to the peer's, the counts out ----------

# What Datapath.segment_counters() shows: the counts the pumps keep per segment too.
SEGMENT_COUNTERS = (C_FRAMES, C_BYTES, DROP_FILTER, DROP_MALFORMED, DROP_UNKNOWN_SEGMENT, DROP_LOCAL_DESTINATION,
                    DROP_LOOP, DROP_STORM)


cdef segment_install(Datapath dp, list segments):
    """The checked (port, vlan ids, carry_all) of each segment into d.seg, each with allow-all
    filters both ways; a double tag's outer one is 802.1ad."""
    cdef dp_state *d = dp.d
    cdef int k, t
    for k in range(SEGMENTS_MAX):
        memset(&d.seg[k], 0, sizeof(seg_state))
    for k, (port, vids, carry_all) in enumerate(segments):
        d.seg[k].port = port
        d.seg[k].ntags = len(vids)
        d.seg[k].carry_all = carry_all
        for t in range(len(vids)):
            d.seg[k].vid[t] = vids[t]
            d.seg[k].tpid[t] = ETH_P_8021Q
        if len(vids) == 2:
            d.seg[k].tpid[0] = ETH_P_8021AD
    d.nsegs = len(segments)
    for k in range(d.nsegs):
        for direction in (FILTER_NIC_INGRESS, FILTER_TUNNEL_INGRESS):
            filter_install(dp, direction, True, [], k, 0)


cdef void segment_set_map(dp_state *d, const uint8_t *peer_ids, uint32_t peer_gen) noexcept:
    """peer_ids (one per segment) into the send sessions made with peer instance peer_gen."""
    cdef uint8_t ids[SEGMENTS_MAX]
    cdef int k
    memset(ids, SEGMENT_NONE, SEGMENTS_MAX)
    for k in range(d.nsegs):
        ids[k] = peer_ids[k]
    pthread_mutex_lock(&d.send_lock)
    if d.tx.peer_gen == peer_gen:
        memcpy(d.tx.seg_peer, ids, SEGMENTS_MAX)
    if d.tx_next.peer_gen == peer_gen:
        memcpy(d.tx_next.seg_peer, ids, SEGMENTS_MAX)
    pthread_mutex_unlock(&d.send_lock)


cdef object segment_map_of(dp_state *d):
    """The send session's segment map as bytes, or None without a send session."""
    pthread_mutex_lock(&d.send_lock)
    try:                                       # a failed allocation must not leave the tx pump locked out
        return PyBytes_FromStringAndSize(<char *>d.tx.seg_peer, d.nsegs) if d.tx.live else None
    finally:
        pthread_mutex_unlock(&d.send_lock)


cdef dict segment_report(const dp_state *d, int seg):
    """Datapath.segment_counters(): SEGMENT_COUNTERS of one segment, per direction."""
    return {name: {COUNTER_NAMES[i]: d.seg_ctr[seg][direction][i] for i in SEGMENT_COUNTERS}
            for name, direction in (("tx", DIR_TX), ("rx", DIR_RX))}
