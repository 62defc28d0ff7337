# The LAN side in batches: frames in from an AF_PACKET socket or a TAP device, ready to seal;
# frames out to it. Both carry a 10-byte virtio_net_hdr, so GSO super-frames and partial
# checksums cross intact (docs/OFFLOADS.md).
#
# A capture slot: [0, 4) spare | [4, 14) vnet header as read | [14, ...) the frame | TAILROOM.
# Re-inserting a VLAN tag moves the frame start 4 bytes down; a FRAME_VNET payload is the
# (adjusted) vnet header written right before wherever the frame starts.

cdef enum:
    VNET_F_NEEDS_CSUM = 1
    VNET_GSO_NONE = 0
    ETH_P_8021Q = 0x8100
    ETH_P_8021AD = 0x88a8
    ETH_P_IP = 0x0800
    ETH_P_IPV6 = 0x86dd

cdef uint8_t LAN_ZERO_VNET[VNET_HDR_LEN]      # prepended to plain frames we inject


cdef inline uint16_t lan_be16(const uint8_t *p) noexcept nogil:
    return <uint16_t>((p[0] << 8) | p[1])


cdef inline uint16_t lan_le16(const uint8_t *p) noexcept nogil:
    return <uint16_t>(p[0] | (p[1] << 8))


cdef inline void lan_put_le16(uint8_t *p, uint16_t v) noexcept nogil:
    p[0] = <uint8_t>v
    p[1] = <uint8_t>(v >> 8)


cdef uint16_t lan_csum_sum(const uint8_t *p, uint32_t n) noexcept nogil:
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
        sum += lan_le16(p + i)
        i += 2
    if i < n:
        sum += p[i]
    while sum >> 16:
        sum = (sum & 0xffff) + (sum >> 16)
    return <uint16_t>(((sum & 0xff) << 8) | (sum >> 8))


cdef int lan_complete_csum(uint8_t *frame, uint32_t length, uint16_t start,
                           uint16_t offset) noexcept nogil:
    """Finish a partial checksum the sending host left to its NIC, as the NIC would have."""
    cdef uint16_t c
    if <uint32_t>start + offset + 2 > length:
        return -1
    c = <uint16_t>~lan_csum_sum(frame + start, length - start)
    if c == 0 and offset == 6:
        c = 0xffff            # UDP: 0 means "no checksum" (RFC 768)
    frame[start + offset] = <uint8_t>(c >> 8)
    frame[start + offset + 1] = <uint8_t>c
    return 0


cdef bint lan_is_own_tunnel(const uint8_t *f, uint32_t n, uint16_t port) noexcept nogil:
    """A UDP datagram to or from our port whose payload starts like an etun header.

    Frames for or from the gateway itself are filtered out by the kernel (BPF on pkttype,
    PACKET_IGNORE_OUTGOING); this catches our tunnel packets that reach the LAN NIC under
    another MAC address, so they are never tunneled again (SPEC promise 7).
    """
    cdef uint32_t off = 12, l4
    cdef uint16_t et
    cdef uint8_t b0
    if n < 14:
        return False
    et = lan_be16(f + 12)
    while (et == ETH_P_8021Q or et == ETH_P_8021AD) and off + 6 <= n:
        off += 4
        et = lan_be16(f + off)
    off += 2
    if et == ETH_P_IP:
        if off + 20 > n or f[off + 9] != 17 or (lan_be16(f + off + 6) & 0x1fff) != 0:
            return False
        l4 = off + (f[off] & 15) * 4
    elif et == ETH_P_IPV6:
        if off + 40 > n or f[off + 6] != 17:
            return False
        l4 = off + 40
    else:
        return False
    if l4 + 8 + HEADER_LEN > n:
        return False
    if lan_be16(f + l4) != port and lan_be16(f + l4 + 2) != port:
        return False
    b0 = f[l4 + 8]
    return (b0 >> 6) == WIRE_VERSION and ((b0 >> 4) & 3) != 3 and (
        (b0 & 15) == TYPE_FRAME or (b0 & 15) == TYPE_FRAME_VNET or (b0 & 15) == TYPE_HELLO
        or (b0 & 15) == TYPE_PROBE or (b0 & 15) == TYPE_PROBE_REPLY)


cdef void lan_prepare(engine_state *e, int i, uint8_t *frame, uint32_t flen, const uint8_t *vnet,
                      int vlan_shift) noexcept nogil:
    """Turn one captured frame into what gets sealed: a plain FRAME; a super-frame that
    gso_seal() cuts into plain FRAMEs; or, for GSO kinds etun does not cut, a FRAME_VNET the
    far kernel segments."""
    cdef dp_state *d = e.dp
    cdef uint8_t flags = vnet[0], gso_type = vnet[1]
    cdef uint16_t hdr_len = lan_le16(vnet + 2), csum_start = lan_le16(vnet + 6)
    cdef uint8_t *out
    e.cap_data[i] = NULL
    if flen < MIN_FRAME_LEN:
        d.ctr_tx[DROP_RUNT] += 1
        return
    if lan_is_own_tunnel(frame, flen, e.listen_port):
        d.ctr_tx[DROP_OWN_TUNNEL] += 1
        return
    if not filter_allows(<filter_table *>d.filt[FILTER_NIC_INGRESS], frame, flen):
        d.ctr_tx[DROP_FILTER] += 1
        return
    if gso_type != VNET_GSO_NONE and gso_parse(e, i, frame, flen, vnet, vlan_shift) == 0:
        e.cap_data[i] = frame
        e.cap_len[i] = flen
        e.cap_type[i] = CAP_SUPERFRAME
        return
    if gso_type != VNET_GSO_NONE:
        # A kind of GSO etun does not cut (SCTP, UFO): carry it whole with its metadata.
        # Offsets in the header count from the frame start, which a re-inserted tag moved.
        out = frame - VNET_HDR_LEN
        memmove(out, vnet, VNET_HDR_LEN)
        if hdr_len:
            lan_put_le16(out + 2, <uint16_t>(hdr_len + vlan_shift))
        if flags & VNET_F_NEEDS_CSUM:
            lan_put_le16(out + 6, <uint16_t>(csum_start + vlan_shift))
        e.cap_data[i] = out
        e.cap_len[i] = flen + VNET_HDR_LEN
        e.cap_type[i] = TYPE_FRAME_VNET
        return
    if flags & VNET_F_NEEDS_CSUM:
        if lan_complete_csum(frame, flen, <uint16_t>(csum_start + vlan_shift),
                             lan_le16(vnet + 8)) != 0:
            d.ctr_tx[DROP_MALFORMED] += 1
            return
    e.cap_data[i] = frame
    e.cap_len[i] = flen
    e.cap_type[i] = TYPE_FRAME


cdef int lan_capture_packet(engine_state *e) noexcept nogil:
    """recvmmsg up to TX_BATCH frames from the AF_PACKET socket. Returns the count or -errno."""
    cdef int n, i, shift
    cdef uint8_t *slot
    cdef uint8_t *frame
    cdef uint32_t flen
    cdef msghdr *m
    cdef cmsghdr *c
    cdef tpacket_auxdata aux
    cdef uint16_t tpid
    cdef uint8_t vnet[VNET_HDR_LEN]
    for i in range(TX_BATCH):
        e.lan_in[i].msg_hdr.msg_controllen = CMSG_ROOM
        e.lan_in[i].msg_hdr.msg_flags = 0
    n = recvmmsg(e.lan_fd, e.lan_in, TX_BATCH, MSG_DONTWAIT, NULL)
    if n < 0:
        return -errno
    for i in range(n):
        m = &e.lan_in[i].msg_hdr
        slot = e.frames + <size_t>i * FRAME_SLOT
        frame = slot + FRAME_AT
        e.cap_data[i] = NULL
        if m.msg_flags & MSG_TRUNC:
            e.dp.ctr_tx[DROP_OVERSIZED] += 1
            continue
        if e.lan_in[i].msg_len < VNET_HDR_LEN:
            e.dp.ctr_tx[DROP_RUNT] += 1
            continue
        flen = e.lan_in[i].msg_len - VNET_HDR_LEN
        shift = 0
        memcpy(vnet, slot + 4, VNET_HDR_LEN)      # a re-inserted tag overwrites its tail
        c = CMSG_FIRSTHDR(m)
        while c != NULL:
            if c.cmsg_level == SOL_PACKET and c.cmsg_type == PACKET_AUXDATA:
                memcpy(&aux, CMSG_DATA(c), sizeof(tpacket_auxdata))
                if aux.tp_status & TP_STATUS_VLAN_VALID and flen >= 12:
                    # The kernel moved the outer tag into metadata; put it back exactly.
                    tpid = aux.tp_vlan_tpid if aux.tp_status & TP_STATUS_VLAN_TPID_VALID else ETH_P_8021Q
                    memmove(frame - 4, frame, 12)
                    frame -= 4
                    frame[12] = <uint8_t>(tpid >> 8)
                    frame[13] = <uint8_t>tpid
                    frame[14] = <uint8_t>(aux.tp_vlan_tci >> 8)
                    frame[15] = <uint8_t>aux.tp_vlan_tci
                    flen += 4
                    shift = 4
            c = CMSG_NXTHDR(m, c)
        lan_prepare(e, i, frame, flen, vnet, shift)
    return n


cdef int lan_capture_tap(engine_state *e) noexcept nogil:
    """read() up to TX_BATCH frames from the TAP device (no batch syscall exists for it)."""
    cdef int i
    cdef ssize_t r
    cdef uint8_t *slot
    for i in range(TX_BATCH):
        slot = e.frames + <size_t>i * FRAME_SLOT
        r = read(e.lan_fd, slot + 4, FRAME_SLOT - 4 - TAILROOM)
        if r < 0:
            if i == 0:
                return -errno
            return i
        if r < VNET_HDR_LEN:
            e.dp.ctr_tx[DROP_RUNT] += 1
            e.cap_data[i] = NULL
            continue
        lan_prepare(e, i, slot + FRAME_AT, <uint32_t>(r - VNET_HDR_LEN), slot + 4, 0)
    return TX_BATCH


cdef void lan_count_send_error(engine_state *e, int err, int frames) noexcept nogil:
    e.dp.ctr_rx[DROP_OVERSIZED if err == EMSGSIZE else DROP_SEND_ERROR] += frames


cdef void lan_emit(engine_state *e) noexcept nogil:
    """Write the frames opened this batch to the LAN (merged where gro.pxi may), counting every
    frame of a message the kernel refuses."""
    cdef int i, r, sent = 0, m
    if e.nout == 0:
        return
    m = gro_plan(e)
    if e.lan_kind == LAN_TAP:
        e.pump_stats[PUMP_LAN_SENDS] += m
        for i in range(m):
            if writev(e.lan_fd, e.lan_out[i].msg_hdr.msg_iov, <int>e.lan_out[i].msg_hdr.msg_iovlen) < 0:
                lan_count_send_error(e, errno, e.msg_frames[i])
        return
    while sent < m:
        e.pump_stats[PUMP_LAN_SENDS] += 1
        r = sendmmsg(e.lan_fd, &e.lan_out[sent], m - sent, 0)
        if r > 0:
            sent += r
        elif errno == EINTR:
            continue
        else:
            # The message at `sent` failed; skip it and send the rest.
            lan_count_send_error(e, errno, e.msg_frames[sent])
            sent += 1
