# Software GRO on the way to the LAN: TCP segments of one flow leave as one super-frame.
#
# Software GRO on the way to the LAN: consecutive TCP segments of one flow, opened in the same
# batch, leave as one GSO super-frame with a virtio_net_hdr, as kernel VXLAN's GRO cells do.
# The far host's stack then handles one packet instead of up to 64, and acknowledges it once.
#
# Merging is conservative, like Linux GRO: plain IPv4 (no options, no fragments) or IPv6 (no
# extension headers) TCP behind identical Ethernet and VLAN headers; ACK set, no SYN, FIN, RST,
# URG, ECE or CWR; identical TCP options, acknowledgement and window; the next sequence number
# and IPv4 ID; valid IP and TCP checksums (a corrupted segment is passed on as it came, never
# hidden under a recomputed sum); every segment the size of the first but the last.

cdef uint8_t GRO_ZERO_VNET[VNET_HDR_LEN]      # prepended to plain frames we inject

cdef enum:
    GRO_MAX_SEGS = 64             # segments in one super-frame (the kernel's GSO_MAX_SEGS floor)
    GRO_MAX_IP = 65535            # bytes of IP packet in one super-frame
    TCP_FLAGS_NO_MERGE = 0x01 | 0x02 | 0x04 | 0x20 | 0x40 | 0x80   # FIN SYN RST URG ECE CWR
    TCP_ACK = 0x10


cdef bint gro_inspect(const uint8_t *f, uint32_t n, gro_seg *g) noexcept nogil:
    """Whether this frame may join a super-frame; fills g. Verifies both checksums."""
    cdef uint32_t l3, l4, hdr, iplen
    cdef vlan_walk w
    g.l3 = 0
    if n < MIN_FRAME_LEN + 40:
        return False
    pkt_walk_vlans(f, n, &w)
    l3 = w.l3
    if w.ethertype == ETH_P_IP:
        if l3 + 20 > n or f[l3] != 0x45 or f[l3 + 9] != PROTO_TCP or (pkt_be16(f + l3 + 6) & 0x3fff) != 0:
            return False
        iplen = pkt_be16(f + l3 + 2)
        if l3 + iplen != n or pkt_csum(f + l3, 20) != 0xffff:
            return False
        l4 = l3 + 20
        g.v6 = False
    elif w.ethertype == ETH_P_IPV6:
        if l3 + 40 > n or (f[l3] >> 4) != 6 or f[l3 + 6] != PROTO_TCP:
            return False
        iplen = 40 + pkt_be16(f + l3 + 4)
        if l3 + iplen != n:
            return False
        l4 = l3 + 40
        g.v6 = True
    else:
        return False
    if l4 + 20 > n:
        return False
    hdr = l4 + (f[l4 + 12] >> 4) * 4
    if hdr < l4 + 20 or hdr >= n or hdr > GRO_HDR_MAX:
        return False
    if (f[l4 + 13] & TCP_FLAGS_NO_MERGE) or not (f[l4 + 13] & TCP_ACK):
        return False
    if pkt_csum_add(pkt_pseudo_sum(f + l3, g.v6, PROTO_TCP, n - l4), pkt_csum(f + l4, n - l4)) != 0xffff:
        return False                  # let the host see, and drop, exactly what was sent
    g.l3 = <uint16_t>l3
    g.l4 = <uint16_t>l4
    g.hdr = <uint16_t>hdr
    g.payload = <uint16_t>(n - hdr)
    g.seq = pkt_be32(f + l4 + 4)
    return True


cdef bint gro_follows(const uint8_t *a, const gro_seg *ga, const uint8_t *b, const gro_seg *gb,
                      uint32_t gso_size) noexcept nogil:
    """Whether segment b continues the run whose latest segment is a."""
    cdef uint32_t l3 = ga.l3, l4 = ga.l4
    if gb.l3 != l3 or gb.hdr != ga.hdr or gb.v6 != ga.v6 or ga.payload != gso_size:
        return False
    if gb.payload > gso_size or gb.seq != ga.seq + ga.payload:
        return False
    if memcmp(a, b, l3) != 0:                               # MACs, tags, EtherType
        return False
    if ga.v6:
        # Version, traffic class, flow label; hop limit; addresses.
        if memcmp(a + l3, b + l3, 4) != 0 or a[l3 + 7] != b[l3 + 7] or memcmp(a + l3 + 8, b + l3 + 8, 32) != 0:
            return False
    else:
        # TOS, DF, TTL, addresses; the ID counts up by one per segment.
        if (a[l3 + 1] != b[l3 + 1] or a[l3 + 6] != b[l3 + 6] or a[l3 + 8] != b[l3 + 8]
                or memcmp(a + l3 + 12, b + l3 + 12, 8) != 0
                or <uint16_t>(pkt_be16(a + l3 + 4) + 1) != pkt_be16(b + l3 + 4)):
            return False
    # Ports; acknowledgement; data offset; flags but PSH (it may end a run); window; options.
    return (memcmp(a + l4, b + l4, 4) == 0 and memcmp(a + l4 + 8, b + l4 + 8, 5) == 0
            and (a[l4 + 13] | TCP_PSH) == (b[l4 + 13] | TCP_PSH)
            and memcmp(a + l4 + 14, b + l4 + 14, 2) == 0
            and memcmp(a + l4 + 20, b + l4 + 20, ga.hdr - l4 - 20) == 0)


cdef void gro_head(uint8_t *out, const uint8_t *f, const gro_seg *g, uint32_t total_payload,
                   uint32_t gso_size, bint push, const uint8_t *tags, uint32_t tlen) noexcept nogil:
    """vnet header and merged headers for a run, into out (GRO_HEAD_ROOM bytes), with the
    segment's `tags` (tlen bytes) pushed behind the MAC addresses."""
    cdef uint8_t *h = out + VNET_HDR_LEN
    cdef uint32_t l3 = g.l3 + tlen, l4 = g.l4 + tlen, hdr = g.hdr + tlen
    cdef uint32_t l4len = hdr - l4 + total_payload
    memset(out, 0, VNET_HDR_LEN)
    out[0] = VNET_F_NEEDS_CSUM
    out[1] = VNET_GSO_TCPV6 if g.v6 else VNET_GSO_TCPV4
    pkt_put_le16(out + 2, <uint16_t>hdr)
    pkt_put_le16(out + 4, <uint16_t>gso_size)
    pkt_put_le16(out + 6, <uint16_t>l4)
    pkt_put_le16(out + 8, 16)                   # the TCP checksum's offset in its header
    memcpy(h, f, 12)
    memcpy(h + 12, tags, tlen)
    memcpy(h + 12 + tlen, f + 12, g.hdr - 12)
    if g.v6:
        pkt_put_be16(h + l3 + 4, <uint16_t>l4len)
    else:
        pkt_put_be16(h + l3 + 2, <uint16_t>(20 + l4len))
        pkt_put_be16(h + l3 + 10, 0)
        pkt_put_be16(h + l3 + 10, <uint16_t>~pkt_csum(h + l3, 20))
    if push:
        h[l4 + 13] |= TCP_PSH
    # The partial checksum a NIC (or the kernel's GSO) finishes: the pseudo-header sum.
    pkt_put_be16(h + l4 + 16, <uint16_t>pkt_pseudo_sum(h + l3, g.v6, PROTO_TCP, l4len))


cdef int gro_single(uint8_t *head, const frame_ref *f, const uint8_t *tags, uint32_t tlen,
                    iovec *iov) noexcept nogil:
    """One frame as one LAN message: its vnet header (a FRAME_VNET's own, its offsets moved
    by the tags pushed) and, with tags, the MAC addresses and tags in `head`. Returns the
    iovecs used (at most 2)."""
    cdef uint32_t skip = VNET_HDR_LEN if f.ftype == TYPE_FRAME_VNET else 0
    cdef uint16_t v
    if tlen == 0:
        if skip:
            iov[0].iov_base = f.data
            iov[0].iov_len = f.length
            return 1
        iov[0].iov_base = GRO_ZERO_VNET
        iov[0].iov_len = VNET_HDR_LEN
        iov[1].iov_base = f.data
        iov[1].iov_len = f.length
        return 2
    if skip:
        memcpy(head, f.data, VNET_HDR_LEN)
        v = pkt_le16(head + 2)
        if v:
            pkt_put_le16(head + 2, <uint16_t>(v + tlen))
        if head[0] & VNET_F_NEEDS_CSUM:
            pkt_put_le16(head + 6, <uint16_t>(pkt_le16(head + 6) + tlen))
    else:
        memset(head, 0, VNET_HDR_LEN)
    memcpy(head + VNET_HDR_LEN, f.data + skip, 12)
    memcpy(head + VNET_HDR_LEN + 12, tags, tlen)
    iov[0].iov_base = head
    iov[0].iov_len = VNET_HDR_LEN + 12 + tlen
    iov[1].iov_base = f.data + skip + 12
    iov[1].iov_len = f.length - skip - 12
    return 2


cdef int gro_plan(engine_state *e) noexcept nogil:
    """Group e.out into LAN messages (e.lan_out with their iovecs; e.msg_frames says how many
    frames each carries, e.msg_port where it goes), pushing each frame's segment tags. Frames
    of different segments never share a message. Returns the message count."""
    cdef int i = 0, j, k, m = 0, niov = 0
    cdef uint32_t gso_size = 0, total = 0, ip_total, tlen
    cdef frame_ref *f
    cdef gro_seg *g
    cdef seg_state *sg
    cdef uint8_t *head
    cdef uint8_t tags[VLAN_PATH_MAX * VLAN_TAG_LEN]
    cdef iovec *iov
    cdef msghdr *h
    for j in range(e.nout):
        f = &e.out[j]
        if f.ftype != TYPE_FRAME or not gro_inspect(f.data, f.length, &e.segs[j]):
            e.segs[j].l3 = 0
    while i < e.nout:
        iov = &e.lan_out_iov[niov]
        h = &e.lan_out[m].msg_hdr
        h.msg_iov = iov
        g = &e.segs[i]
        sg = &e.dp.seg[segment_id(e.out[i].segment)]
        tlen = segment_tags(sg, segment_pcp(e.out[i].segment), tags)
        head = e.gro_heads + <size_t>m * GRO_HEAD_ROOM
        j = i + 1
        if g.l3:
            gso_size = g.payload
            total = g.payload
            ip_total = (g.hdr - g.l3) + g.payload
            # A segment with PSH ends its run: the sender wanted it delivered now.
            while (j < e.nout and j - i < GRO_MAX_SEGS and e.segs[j].l3
                   and e.out[j].segment == e.out[i].segment
                   and not (e.out[j - 1].data[g.l4 + 13] & TCP_PSH)
                   and ip_total + e.segs[j].payload <= GRO_MAX_IP
                   and gro_follows(e.out[j - 1].data, &e.segs[j - 1], e.out[j].data, &e.segs[j], gso_size)):
                total += e.segs[j].payload
                ip_total += e.segs[j].payload
                j += 1
        if j - i > 1:
            gro_head(head, e.out[i].data, g, total, gso_size,
                     (e.out[j - 1].data[g.l4 + 13] & TCP_PSH) != 0, tags, tlen)
            iov[0].iov_base = head
            iov[0].iov_len = VNET_HDR_LEN + g.hdr + tlen
            for k in range(i, j):
                iov[1 + k - i].iov_base = e.out[k].data + e.segs[k].hdr
                iov[1 + k - i].iov_len = e.segs[k].payload
            h.msg_iovlen = 1 + (j - i)
            e.dp.ctr[DIR_RX][C_SUPERFRAMES] += 1
        else:
            h.msg_iovlen = gro_single(head, &e.out[i], tags, tlen, iov)
        e.msg_frames[m] = j - i
        e.msg_port[m] = sg.port
        niov += <int>h.msg_iovlen
        m += 1
        i = j
    return m
