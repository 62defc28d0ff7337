# Guard presets ([bridge] guard): frames a LAN should keep to itself, denied before any rule.
#
# Guard presets ([bridge] guard): frames a LAN should keep to itself, recognised before any
# filter rule (filter.pxi) and denied with a counter of their own. Each is a few byte compares.
#
#   stp          BPDUs: to 01:80:c2:00:00:00 (IEEE 802.1D) or 01:00:0c:cc:cc:cd (Cisco PVST+)
#   lldp         EtherType 0x88cc, behind any VLAN tags
#   dhcp-server  a DHCP server's answers: UDP 67 -> 68 (IPv4), 547 -> 546 (DHCPv6)
#   ipv6-ra      ICMPv6 router advertisements (type 134), behind up to GUARD_IPV6_EXT
#                hop-by-hop, routing or destination-options headers (RFC 7113 evasion)

cdef enum:
    ETH_P_LLDP = 0x88cc
    BPDU_OUI = 0x0180C2           # 01:80:c2:00:00:00 is BPDU_OUI << 24
    PVST_OUI = 0x01000C           # 01:00:0c:cc:cc:cd is PVST_OUI << 24 | PVST_NIC
    PVST_NIC = 0xCCCCCD
    PROTO_ICMPV6 = 58
    ICMPV6_RA = 134
    GUARD_IPV6_EXT = 4            # extension headers walked to find an RA's ICMPv6 header


cdef inline bint guard_is_bpdu(const uint8_t *f) noexcept nogil:
    cdef uint64_t dst = pkt_mac48(f)
    return dst == <uint64_t>BPDU_OUI << 24 or dst == (<uint64_t>PVST_OUI << 24 | PVST_NIC)


cdef int guard_l4(const uint8_t *f, uint32_t n, const vlan_walk *w, uint8_t *proto) noexcept nogil:
    """Offset of the transport header of an unfragmented IPv4 or IPv6 packet (walking IPv6
    extension headers), and its protocol; -1 when there is none in the frame."""
    cdef uint32_t off = w.l3, hops
    cdef uint8_t nh
    if w.ethertype == ETH_P_IP:
        if off + 20 > n or (pkt_be16(f + off + 6) & 0x1fff) != 0:
            return -1
        proto[0] = f[off + 9]
        return <int>(off + (f[off] & 15) * 4)
    if w.ethertype != ETH_P_IPV6 or off + 40 > n:
        return -1
    nh = f[off + 6]
    off += 40
    for hops in range(GUARD_IPV6_EXT):
        if nh != 0 and nh != 43 and nh != 60:
            break
        if off + 8 > n:
            return -1
        nh = f[off]
        off += (f[off + 1] + 1) * 8
    proto[0] = nh
    return <int>off


cdef int guard_match(uint32_t guards, const uint8_t *f, uint32_t n, const vlan_walk *w) noexcept nogil:
    """The first of `guards` (1 << GUARD_*) the frame is for, or -1. n >= MIN_FRAME_LEN."""
    cdef int l4
    cdef uint8_t proto = 0
    cdef uint16_t sport, dport
    if guards & (1 << GUARD_STP) and guard_is_bpdu(f):
        return GUARD_STP
    if guards & (1 << GUARD_LLDP) and w.ethertype == ETH_P_LLDP:
        return GUARD_LLDP
    if not guards & ((1 << GUARD_DHCP_SERVER) | (1 << GUARD_IPV6_RA)):
        return -1
    l4 = guard_l4(f, n, w, &proto)
    if l4 < 0 or <uint32_t>l4 + 8 > n:
        return -1
    if guards & (1 << GUARD_DHCP_SERVER) and proto == PROTO_UDP:
        sport = pkt_be16(f + l4)
        dport = pkt_be16(f + l4 + 2)
        if (sport == 67 and dport == 68) or (sport == 547 and dport == 546):
            return GUARD_DHCP_SERVER
    if guards & (1 << GUARD_IPV6_RA) and proto == PROTO_ICMPV6 and w.ethertype == ETH_P_IPV6 \
            and f[l4] == ICMPV6_RA:
        return GUARD_IPV6_RA
    return -1


GUARD_NAMES = ("stp", "lldp", "dhcp-server", "ipv6-ra")  # [bridge] guard, by GUARD_* index


cdef uint32_t guard_bits(object names) except? 0xFFFFFFFF:
    """The GUARD_* bit set of preset names; ValueError for a name not in GUARD_NAMES."""
    cdef uint32_t bits = 0
    for name in names:
        if name not in GUARD_NAMES:
            raise ValueError(f"unknown guard {name!r}")
        bits |= 1 << GUARD_NAMES.index(name)
    return bits
