# Software GSO: TCP and UDP super-frames from the LAN cut into wire-size frames.
#
# Software GSO: cut a TCP or UDP super-frame from the LAN into the wire-size frames its host
# asked its NIC to send, every header and checksum finished -- what a NIC's TSO/USO would put on
# the wire. A super-frame crossing whole would be lost with any one of its up to 87 packets
# (docs/OFFLOADS.md): cut, a lost packet costs one segment, as on any link.
#
# Segments are built in a per-pump arena and sealed from there; the arena empties with each
# UDP flush, because sealed datagrams point into it until they are sent.

cdef enum:
    TCP_FIN = 0x01
    TCP_PSH = 0x08
    TCP_CWR = 0x80


cdef int gso_parse(engine_state *e, int i, const uint8_t *f, uint32_t n, const uint8_t *vnet,
                   int vlan_shift) noexcept nogil:
    """Check that a super-frame can be cut here and note where its headers are. 0 or -1."""
    cdef uint8_t gso_type = vnet[1] & ~VNET_GSO_ECN
    cdef uint16_t mss = pkt_le16(vnet + 4)
    cdef uint32_t l3, l4, hdr
    cdef vlan_walk w
    if not (vnet[0] & VNET_F_NEEDS_CSUM) or mss == 0 or n < MIN_FRAME_LEN:
        return -1
    pkt_walk_vlans(f, n, &w)
    l3 = w.l3
    if <int>pkt_le16(vnet + 6) + vlan_shift < <int>l3:
        return -1                                     # csum_start must point past the L3 start
    l4 = <uint32_t>(<int>pkt_le16(vnet + 6) + vlan_shift)   # csum_start: the kernel's own L4 offset
    if gso_type == VNET_GSO_TCPV4 or (gso_type == VNET_GSO_UDP_L4 and w.ethertype == ETH_P_IP):
        if (w.ethertype != ETH_P_IP or l3 + 20 > n or (f[l3] >> 4) != 4 or (f[l3] & 15) < 5
                or l4 < l3 + (f[l3] & 15) * 4):
            return -1
    elif gso_type == VNET_GSO_TCPV6 or (gso_type == VNET_GSO_UDP_L4 and w.ethertype == ETH_P_IPV6):
        if w.ethertype != ETH_P_IPV6 or l3 + 40 > n or l4 < l3 + 40 or (f[l3] >> 4) != 6:
            return -1
    else:
        return -1
    if gso_type == VNET_GSO_UDP_L4:
        hdr = l4 + UDP_HEADER_LEN
    else:
        if l4 + 20 > n or (f[l4 + 12] >> 4) < 5:
            return -1
        hdr = l4 + (f[l4 + 12] >> 4) * 4
    if hdr >= n or hdr > 0xffff:
        return -1
    # Each segment's IP and UDP lengths are 16-bit fields: a segment they cannot describe is
    # not cut (a local TAP writer could ask for one; the kernel never does).
    if hdr - l3 + (mss if mss < n - hdr else n - hdr) > 0xffff:
        return -1
    e.gso_l3[i] = <uint16_t>l3
    e.gso_l4[i] = <uint16_t>l4
    e.gso_hdr[i] = <uint16_t>hdr
    e.gso_mss[i] = mss
    e.gso_tcp[i] = gso_type != VNET_GSO_UDP_L4
    return 0


cdef inline uint32_t gso_segments(uint32_t payload, uint32_t mss) noexcept nogil:
    return (payload + mss - 1) // mss


cdef inline uint32_t gso_segment_len(uint32_t payload, uint32_t mss, uint32_t k) noexcept nogil:
    """Payload bytes of segment k: mss, but the last one takes what is left."""
    return mss if (k + 1) * mss <= payload else payload - k * mss


cdef void gso_fill(uint8_t *s, const uint8_t *f, uint32_t l3, uint32_t l4, uint32_t hdr,
                   uint32_t seglen, uint32_t k, uint32_t nseg, uint32_t mss, bint tcp) noexcept nogil:
    """Finish segment k of nseg, whose headers and payload are already copied into s."""
    cdef bint v6 = (s[l3] >> 4) == 6
    cdef uint32_t l4len = hdr - l4 + seglen, sum
    cdef uint8_t flags
    if v6:
        pkt_put_be16(s + l3 + 4, <uint16_t>(l4 - l3 - 40 + l4len))
    else:
        pkt_put_be16(s + l3 + 2, <uint16_t>(l4 - l3 + l4len))
        pkt_put_be16(s + l3 + 4, <uint16_t>(pkt_be16(f + l3 + 4) + k))      # IP ID per segment
        pkt_put_be16(s + l3 + 10, 0)
        pkt_put_be16(s + l3 + 10, <uint16_t>~pkt_csum(s + l3, (s[l3] & 15) * 4))
    sum = pkt_pseudo_sum(s + l3, v6, PROTO_TCP if tcp else PROTO_UDP, l4len)
    if tcp:
        pkt_put_be32(s + l4 + 4, pkt_be32(f + l4 + 4) + k * mss)
        flags = f[l4 + 13]
        if k + 1 < nseg:
            flags &= ~(TCP_FIN | TCP_PSH)        # only the last segment ends or pushes
        if k > 0:
            flags &= ~TCP_CWR                    # only the first one answers ECN (RFC 3168)
        s[l4 + 13] = flags
        pkt_put_be16(s + l4 + 16, 0)
        pkt_put_be16(s + l4 + 16, <uint16_t>~pkt_csum_add(sum, pkt_csum(s + l4, l4len)))
    else:
        pkt_put_be16(s + l4 + 4, <uint16_t>l4len)
        pkt_put_be16(s + l4 + 6, 0)
        sum = <uint16_t>~pkt_csum_add(sum, pkt_csum(s + l4, l4len))
        pkt_put_be16(s + l4 + 6, pkt_udp_csum(sum))


cdef int gso_seal(engine_state *e, int i, int seg, uint8_t pcp, uint64_t now) noexcept nogil:
    """Cut captured super-frame i of etun segment `seg` into segments and seal each, the peer's
    id for `seg` read after every time the lock was let go (a new session brings its own map).
    Caller holds send_lock; this releases it around the flushes it needs. Returns 0, or -DROP_*
    of the last failure."""
    cdef dp_state *d = e.dp
    cdef const uint8_t *f = e.cap_data[i]
    cdef uint32_t n = e.cap_len[i], l3 = e.gso_l3[i], l4 = e.gso_l4[i], hdr = e.gso_hdr[i]
    cdef uint32_t mss = e.gso_mss[i], payload = n - hdr, nseg, k, seglen, need
    cdef uint8_t *s
    cdef uint8_t peer_id
    cdef int r, rc = 0
    if not d.tx.live:
        drop_frame(d, DIR_TX, DROP_NO_SESSION, f, n)   # once per super-frame, as for any frame
        return -DROP_NO_SESSION
    nseg = gso_segments(payload, mss)
    d.ctr[DIR_TX][C_SUPERFRAMES] += 1
    for k in range(nseg):
        seglen = gso_segment_len(payload, mss, k)
        need = (hdr + seglen + TAILROOM + 63) & ~63u
        if e.seg_used + need > SEG_ARENA_LEN or e.npkts + MAX_FRAGS > TX_PKTS:
            pthread_mutex_unlock(&d.send_lock)
            udp_flush(e, now)
            pthread_mutex_lock(&d.send_lock)
            if e.seg_used + need > SEG_ARENA_LEN or e.npkts + MAX_FRAGS > TX_PKTS:
                # A flush empties both (need <= FRAME_SLOT < SEG_ARENA_LEN): never overrun them.
                drop_count(d, DIR_TX, DROP_INTERNAL, nseg - k)
                return -DROP_INTERNAL
        peer_id = d.tx.seg_peer[seg]
        if peer_id == SEGMENT_NONE:
            d.seg_ctr[seg][DIR_TX][DROP_UNKNOWN_SEGMENT] += nseg - k
            drop_count(d, DIR_TX, DROP_UNKNOWN_SEGMENT, nseg - k)
            return -DROP_UNKNOWN_SEGMENT
        s = e.seg_arena + e.seg_used
        e.seg_used += need
        memcpy(s, f, hdr)
        memcpy(s + hdr, f + hdr + k * mss, seglen)
        gso_fill(s, f, l3, l4, hdr, seglen, k, nseg, mss, e.gso_tcp[i])
        r = seal_frame(d, s, hdr + seglen, TYPE_FRAME, segment_byte(peer_id, pcp), e.pkts + e.npkts)
        if r > 0:
            e.npkts += r
            segment_count(d, DIR_TX, seg, hdr + seglen)
        else:
            rc = r
    return rc
