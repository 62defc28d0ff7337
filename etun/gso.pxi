# Software GSO: cut a TCP or UDP super-frame from the LAN into the wire-size frames its host
# asked its NIC to send, every header and checksum finished -- what a NIC's TSO/USO would put on
# the wire. A super-frame crossing whole would be lost with any one of its up to 87 packets
# (docs/OFFLOADS.md): cut, a lost packet costs one segment, as on any link.
#
# Segments are built in a per-pump arena and sealed from there; the arena empties with each
# UDP flush, because sealed datagrams point into it until they are sent.

cdef enum:
    VNET_GSO_TCPV4 = 1
    VNET_GSO_TCPV6 = 4
    VNET_GSO_UDP_L4 = 5
    VNET_GSO_ECN = 0x80
    TCP_FIN = 0x01
    TCP_PSH = 0x08
    TCP_CWR = 0x80
    SEG_ARENA_LEN = 1 << 20       # bytes of segments held until the next UDP flush
    CAP_SUPERFRAME = 0xff         # cap_type of a captured frame to be cut by gso_seal()


cdef inline uint32_t gso_add(uint32_t a, uint32_t b) noexcept nogil:
    """Ones'-complement addition of 16-bit values (RFC 1071)."""
    a += b
    return (a & 0xffff) + (a >> 16)


cdef inline void gso_put_be16(uint8_t *p, uint16_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 8)
    p[1] = <uint8_t>v


cdef int gso_parse(engine_state *e, int i, const uint8_t *f, uint32_t n, const uint8_t *vnet,
                   int vlan_shift) noexcept nogil:
    """Check that a super-frame can be cut here and note where its headers are. 0 or -1."""
    cdef uint8_t gso_type = vnet[1] & ~VNET_GSO_ECN
    cdef uint16_t mss = lan_le16(vnet + 4)
    cdef uint32_t l3 = 12, l4, hdr
    cdef uint16_t et
    if not (vnet[0] & VNET_F_NEEDS_CSUM) or mss == 0 or n < 14:
        return -1
    et = lan_be16(f + 12)
    while (et == ETH_P_8021Q or et == ETH_P_8021AD) and l3 + 6 <= n:
        l3 += 4
        et = lan_be16(f + l3)
    l3 += 2
    l4 = lan_le16(vnet + 6) + <uint32_t>vlan_shift       # csum_start: the kernel's own L4 offset
    if gso_type == VNET_GSO_TCPV4 or (gso_type == VNET_GSO_UDP_L4 and et == ETH_P_IP):
        if (et != ETH_P_IP or l3 + 20 > n or (f[l3] >> 4) != 4 or (f[l3] & 15) < 5
                or l4 < l3 + (f[l3] & 15) * 4):
            return -1
    elif gso_type == VNET_GSO_TCPV6 or (gso_type == VNET_GSO_UDP_L4 and et == ETH_P_IPV6):
        if et != ETH_P_IPV6 or l3 + 40 > n or l4 < l3 + 40 or (f[l3] >> 4) != 6:
            return -1
    else:
        return -1
    if gso_type == VNET_GSO_UDP_L4:
        hdr = l4 + 8
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


cdef void gso_fill(uint8_t *s, const uint8_t *f, uint32_t l3, uint32_t l4, uint32_t hdr,
                   uint32_t seglen, uint32_t k, uint32_t nseg, uint32_t mss, bint tcp) noexcept nogil:
    """Finish segment k of nseg, whose headers and payload are already copied into s."""
    cdef bint v6 = (s[l3] >> 4) == 6
    cdef uint32_t l4len = hdr - l4 + seglen, sum
    cdef uint32_t seq
    cdef uint8_t flags
    cdef uint16_t c
    if v6:
        gso_put_be16(s + l3 + 4, <uint16_t>(l4 - l3 - 40 + l4len))
        sum = lan_csum_sum(s + l3 + 8, 32)
    else:
        gso_put_be16(s + l3 + 2, <uint16_t>(l4 - l3 + l4len))
        gso_put_be16(s + l3 + 4, <uint16_t>(lan_be16(f + l3 + 4) + k))      # IP ID per segment
        s[l3 + 10] = 0
        s[l3 + 11] = 0
        gso_put_be16(s + l3 + 10, <uint16_t>~lan_csum_sum(s + l3, (s[l3] & 15) * 4))
        sum = lan_csum_sum(s + l3 + 12, 8)
    sum = gso_add(sum, 6 if tcp else 17)
    sum = gso_add(sum, (l4len >> 16) & 0xffff)
    sum = gso_add(sum, l4len & 0xffff)
    if tcp:
        seq = (<uint32_t>f[l4 + 4] << 24 | <uint32_t>f[l4 + 5] << 16 | <uint32_t>f[l4 + 6] << 8
               | f[l4 + 7]) + k * mss
        s[l4 + 4] = <uint8_t>(seq >> 24)
        s[l4 + 5] = <uint8_t>(seq >> 16)
        s[l4 + 6] = <uint8_t>(seq >> 8)
        s[l4 + 7] = <uint8_t>seq
        flags = f[l4 + 13]
        if k + 1 < nseg:
            flags &= ~(TCP_FIN | TCP_PSH)        # only the last segment ends or pushes
        if k > 0:
            flags &= ~TCP_CWR                    # only the first one answers ECN (RFC 3168)
        s[l4 + 13] = flags
        s[l4 + 16] = 0
        s[l4 + 17] = 0
        c = <uint16_t>~gso_add(sum, lan_csum_sum(s + l4, l4len))
        gso_put_be16(s + l4 + 16, c)
    else:
        gso_put_be16(s + l4 + 4, <uint16_t>l4len)
        s[l4 + 6] = 0
        s[l4 + 7] = 0
        c = <uint16_t>~gso_add(sum, lan_csum_sum(s + l4, l4len))
        gso_put_be16(s + l4 + 6, c if c else 0xffff)


cdef int gso_seal(engine_state *e, int i, uint64_t now) noexcept nogil:
    """Cut captured super-frame i into segments and seal each. Caller holds send_lock; this
    releases it around the flushes it needs. Returns 0, or -DROP_* of the last failure."""
    cdef dp_state *d = e.dp
    cdef const uint8_t *f = e.cap_data[i]
    cdef uint32_t n = e.cap_len[i], l3 = e.gso_l3[i], l4 = e.gso_l4[i], hdr = e.gso_hdr[i]
    cdef uint32_t mss = e.gso_mss[i], payload = n - hdr, nseg, k, seglen, need
    cdef uint8_t *s
    cdef int r, rc = 0
    if not d.send_ready:
        d.ctr_tx[DROP_NO_SESSION] += 1       # once per super-frame, as for any other frame
        return -DROP_NO_SESSION
    nseg = (payload + mss - 1) // mss
    d.ctr_tx[C_SUPERFRAMES] += 1
    for k in range(nseg):
        seglen = mss if (k + 1) * mss <= payload else payload - k * mss
        need = (hdr + seglen + TAILROOM + 63) & ~63u
        if e.seg_used + need > SEG_ARENA_LEN or e.npkts + MAX_FRAGS > TX_PKTS:
            pthread_mutex_unlock(&d.send_lock)
            udp_flush(e, now)
            pthread_mutex_lock(&d.send_lock)
            if e.seg_used + need > SEG_ARENA_LEN or e.npkts + MAX_FRAGS > TX_PKTS:
                d.ctr_tx[DROP_SOCKET_OVERFLOW] += nseg - k      # cannot happen; never overrun
                return -DROP_SOCKET_OVERFLOW
        s = e.seg_arena + e.seg_used
        e.seg_used += need
        memcpy(s, f, hdr)
        memcpy(s + hdr, f + hdr + k * mss, seglen)
        gso_fill(s, f, l3, l4, hdr, seglen, k, nseg, mss, e.gso_tcp[i])
        r = seal_frame(d, s, hdr + seglen, TYPE_FRAME, e.pkts + e.npkts)
        if r > 0:
            e.npkts += r
        else:
            rc = r
    return rc
