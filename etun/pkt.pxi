# Packet helpers every fragment that reads frames shares.
#
# Packet helpers every fragment that reads frames shares: byte order, the one VLAN-tag walk, and
# the RFC 1071 Internet checksum with its TCP/UDP pseudo-header.

cdef inline uint16_t pkt_be16(const uint8_t *p) noexcept nogil:
    return <uint16_t>((p[0] << 8) | p[1])


cdef inline uint32_t pkt_be32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline uint64_t pkt_be64(const uint8_t *p) noexcept nogil:
    return (<uint64_t>pkt_be32(p) << 32) | pkt_be32(p + 4)


cdef inline void pkt_put_be16(uint8_t *p, uint16_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 8)
    p[1] = <uint8_t>v


cdef inline void pkt_put_be32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 24)
    p[1] = <uint8_t>(v >> 16)
    p[2] = <uint8_t>(v >> 8)
    p[3] = <uint8_t>v


cdef inline uint16_t pkt_le16(const uint8_t *p) noexcept nogil:
    """virtio_net_hdr fields are little-endian (as on x86 and arm64 Linux)."""
    return <uint16_t>(p[0] | (p[1] << 8))


cdef inline void pkt_put_le16(uint8_t *p, uint16_t v) noexcept nogil:
    p[0] = <uint8_t>v
    p[1] = <uint8_t>(v >> 8)


cdef inline void pkt_put_le32(uint8_t *p, uint32_t v) noexcept nogil:
    pkt_put_le16(p, <uint16_t>v)
    pkt_put_le16(p + 2, <uint16_t>(v >> 16))


cdef inline uint64_t pkt_mac48(const uint8_t *m) noexcept nogil:
    """A MAC address as a 48-bit integer, first byte most significant."""
    return (<uint64_t>pkt_be16(m) << 32) | pkt_be32(m + 2)


cdef inline bint pkt_is_vlan_tag(uint16_t ethertype) noexcept nogil:
    """Whether an EtherType field holds a VLAN tag's TPID: 802.1Q, or 802.1ad (an outer tag)."""
    return ethertype == ETH_P_8021Q or ethertype == ETH_P_8021AD


cdef inline void pkt_walk_vlans(const uint8_t *f, uint32_t n, vlan_walk *w) noexcept nogil:
    """Follow the 802.1Q / 802.1ad tags after the MAC addresses, at most VLAN_MAX_TAGS of them,
    to the EtherType behind them and the network header's offset. The caller guarantees
    n >= MIN_FRAME_LEN; a tag is followed only when the EtherType after it is inside the frame.
    """
    cdef uint32_t off = 12
    cdef uint16_t et = pkt_be16(f + 12)
    w.tags = 0
    w.has_8021q = False
    w.has_8021ad = False
    while pkt_is_vlan_tag(et) and off + VLAN_TAG_LEN + 2 <= n \
            and w.tags < VLAN_MAX_TAGS:
        w.has_8021q |= et == ETH_P_8021Q
        w.has_8021ad |= et == ETH_P_8021AD
        off += VLAN_TAG_LEN
        w.tags += 1
        et = pkt_be16(f + off)
    w.ethertype = et
    w.l3 = off + 2


cdef uint16_t pkt_csum(const uint8_t *p, uint32_t n) noexcept nogil:
    """RFC 1071 ones'-complement sum of p[0:n], folded, in network byte order (not inverted).

    Sums little-endian 32-bit words into 64 bits (no carry is lost below 2**32 words) and
    swaps once at the end: the ones'-complement sum is byte-order independent (RFC 1071 §2).
    """
    cdef uint64_t sum = 0
    cdef uint32_t w, i = 0
    while i + 4 <= n:
        memcpy(&w, p + i, 4)
        sum += w
        i += 4
    if i + 2 <= n:
        sum += pkt_le16(p + i)
        i += 2
    if i < n:
        sum += p[i]
    while sum >> 16:
        sum = (sum & 0xffff) + (sum >> 16)
    return <uint16_t>(((sum & 0xff) << 8) | (sum >> 8))


cdef inline uint32_t pkt_csum_add(uint32_t a, uint32_t b) noexcept nogil:
    """Ones'-complement addition of two folded 16-bit sums (RFC 1071)."""
    a += b
    return (a & 0xffff) + (a >> 16)


cdef inline uint32_t pkt_pseudo_sum(const uint8_t *ip, bint v6, uint8_t proto,
                                    uint32_t l4len) noexcept nogil:
    """The folded sum of the TCP/UDP pseudo-header (RFC 793, RFC 768, RFC 8200 §8.1) of the
    IPv4 or IPv6 header at `ip` for a transport segment of l4len bytes."""
    cdef uint32_t sum = pkt_csum(ip + 8, 32) if v6 else pkt_csum(ip + 12, 8)
    sum = pkt_csum_add(sum, proto)
    sum = pkt_csum_add(sum, (l4len >> 16) & 0xffff)
    return pkt_csum_add(sum, l4len & 0xffff)


cdef inline uint16_t pkt_udp_csum(uint16_t c) noexcept nogil:
    """A computed UDP checksum as it goes on the wire: 0 means "no checksum" (RFC 768), so a
    sum that comes out 0 is sent as its other form, 0xffff."""
    return c if c else 0xffff
