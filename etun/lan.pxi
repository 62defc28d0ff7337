# The LAN side in batches: frames in from a packet socket or TAP device, and out to it.
#
# The LAN side in batches: frames in from an AF_PACKET socket or a TAP device, ready to seal;
# frames out to it. Both carry a 10-byte virtio_net_hdr, so GSO super-frames and partial
# checksums cross intact (docs/OFFLOADS.md).
#
# A capture slot: [0, 4) spare | [4, 14) vnet header as read | [14, ...) the frame | TAILROOM.
# Re-inserting a VLAN tag moves the frame start 4 bytes down, taking off the tags a segment
# selected moves it up; a FRAME_VNET payload is the (adjusted) vnet header written right
# before wherever the frame starts (the 10 bytes in front of it are always in the slot).


cdef int lan_complete_csum(uint8_t *frame, uint32_t length, uint16_t start,
                           uint16_t offset) noexcept nogil:
    """Finish a partial checksum the sending host left to its NIC, as the NIC would have."""
    cdef uint16_t c
    if <uint32_t>start + offset + 2 > length:
        return -1
    c = <uint16_t>~pkt_csum(frame + start, length - start)
    if offset == 6:           # UDP's checksum field
        c = pkt_udp_csum(c)
    pkt_put_be16(frame + start + offset, c)
    return 0


cdef bint lan_is_own_tunnel(const uint8_t *f, uint32_t n, uint16_t port) noexcept nogil:
    """A UDP datagram to or from our port whose payload starts like an etun header.

    Frames for or from the gateway itself are filtered out by the kernel (BPF on pkttype,
    PACKET_IGNORE_OUTGOING); this catches our tunnel packets that reach the LAN NIC under
    another MAC address, so they are never tunneled again (docs/MANUAL.md, promise 7).
    """
    cdef uint32_t off, l4
    cdef vlan_walk w
    if n < MIN_FRAME_LEN:
        return False
    pkt_walk_vlans(f, n, &w)
    off = w.l3
    if w.ethertype == ETH_P_IP:
        if off + 20 > n or f[off + 9] != PROTO_UDP or (pkt_be16(f + off + 6) & 0x1fff) != 0:
            return False
        l4 = off + (f[off] & 15) * 4
    elif w.ethertype == ETH_P_IPV6:
        if off + 40 > n or f[off + 6] != PROTO_UDP:
            return False
        l4 = off + 40
    else:
        return False
    if l4 + UDP_HEADER_LEN + HEADER_LEN > n:
        return False
    if pkt_be16(f + l4) != port and pkt_be16(f + l4 + 2) != port:
        return False
    return wire_is_etun(f[l4 + UDP_HEADER_LEN])


cdef bint lan_vnet_ok(const uint8_t *f, uint32_t length) noexcept nogil:
    """Whether a FRAME_VNET from the peer may reach our kernel: its virtio_net_hdr asks only for
    what fits the frame behind it -- known flags and GSO kinds, a checksum field inside the frame
    at a TCP or UDP offset (for segmentation, the one of its kind), headers and segments no
    longer than the frame (hdr_len is the kernel's linear part, which may hold payload too: it
    bounds nothing tighter). Anything else is the peer's bug or an attack on our kernel, and is
    dropped (bad_offload)."""
    cdef uint8_t flags = f[0], gso = f[1] & ~VNET_GSO_ECN
    cdef uint32_t n = length - VNET_HDR_LEN
    cdef uint32_t hdr_len = pkt_le16(f + 2), gso_size = pkt_le16(f + 4)
    cdef uint32_t start = pkt_le16(f + 6), offset = pkt_le16(f + 8)
    if flags & ~(VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID):
        return False
    if gso != VNET_GSO_NONE and gso != VNET_GSO_TCPV4 and gso != VNET_GSO_UDP and gso != VNET_GSO_TCPV6 \
            and gso != VNET_GSO_UDP_L4:
        return False
    if (f[1] & VNET_GSO_ECN) and gso != VNET_GSO_TCPV4 and gso != VNET_GSO_TCPV6:
        return False
    if hdr_len > n:
        return False
    if flags & VNET_F_NEEDS_CSUM:
        if start < MIN_FRAME_LEN or (offset != 6 and offset != 16) or start + offset + 2 > n:
            return False
    if gso != VNET_GSO_NONE:
        if not (flags & VNET_F_NEEDS_CSUM) or gso_size == 0 or gso_size > n:
            return False
        # Each segment's checksum goes where its kind keeps it: TCP's at 16, UDP's at 6.
        if offset != (16 if gso == VNET_GSO_TCPV4 or gso == VNET_GSO_TCPV6 else 6):
            return False
    return True


cdef void lan_prepare(engine_state *e, int port, int i, uint8_t *frame, uint32_t flen,
                      const uint8_t *vnet, int vlan_shift) noexcept nogil:
    """Turn one frame captured on `port` into what gets sealed: find its segment and take the
    tags that selected it off; then a plain FRAME; a super-frame that gso_seal() cuts into plain
    FRAMEs; or, for GSO kinds etun does not cut, a FRAME_VNET the far kernel segments.
    `vlan_shift`: bytes the frame grew in front of what the kernel's offsets count from."""
    cdef dp_state *d = e.dp
    cdef uint8_t flags = vnet[0], gso_type = vnet[1], pcp
    cdef uint16_t hdr_len = pkt_le16(vnet + 2), csum_start = pkt_le16(vnet + 6)
    cdef uint8_t *out
    cdef int s, reason
    e.cap_data[i] = NULL
    if e.standby:
        drop_frame(d, DIR_TX, DROP_STANDBY, frame, flen)   # before anything learns from it
        return
    if flen < MIN_FRAME_LEN:
        drop_frame(d, DIR_TX, DROP_RUNT, frame, flen)
        return
    if lan_is_own_tunnel(frame, flen, e.listen_port):
        drop_frame(d, DIR_TX, DROP_OWN_TUNNEL, frame, flen)
        return
    s = segment_select(d, port, frame, flen, &pcp)
    if s < 0:
        drop_frame(d, DIR_TX, DROP_UNSELECTED_VLAN, frame, flen)
        return
    frame = segment_strip(d, s, frame, &flen, &vlan_shift)
    if not filter_allows(d.filt[s][FILTER_NIC_INGRESS], frame, flen):
        segment_drop(d, DIR_TX, s, DROP_FILTER, frame, flen)
        return
    reason = bridge_tx(d, s, frame, flen, e.tx_now_ms)
    if reason:
        segment_drop(d, DIR_TX, s, reason, frame, flen)
        return
    e.cap_seg[i] = <uint8_t>((pcp << SEGMENT_ID_BITS) | s)
    # The offload header's offsets count from where the kernel had the frame start; the tags
    # restored and taken off since moved it. An offset that would now point into the MAC
    # addresses (or before the frame) was never the kernel's: malformed.
    if ((flags & VNET_F_NEEDS_CSUM and <int>csum_start + vlan_shift < MIN_FRAME_LEN)
            or (gso_type != VNET_GSO_NONE and hdr_len and <int>hdr_len + vlan_shift < MIN_FRAME_LEN)):
        segment_drop(d, DIR_TX, s, DROP_MALFORMED, frame, flen)
        return
    if gso_type != VNET_GSO_NONE and gso_parse(e, i, frame, flen, vnet, vlan_shift) == 0:
        e.cap_data[i] = frame
        e.cap_len[i] = flen
        e.cap_type[i] = CAP_SUPERFRAME
        return
    if gso_type != VNET_GSO_NONE:
        # A kind of GSO etun does not cut (SCTP, UFO): carry it whole with its metadata.
        # Offsets in the header count from the frame start, which moved by vlan_shift.
        out = frame - VNET_HDR_LEN
        memmove(out, vnet, VNET_HDR_LEN)
        if hdr_len:
            pkt_put_le16(out + 2, <uint16_t>(hdr_len + vlan_shift))
        if flags & VNET_F_NEEDS_CSUM:
            pkt_put_le16(out + 6, <uint16_t>(csum_start + vlan_shift))
        e.cap_data[i] = out
        e.cap_len[i] = flen + VNET_HDR_LEN
        e.cap_type[i] = CAP_FRAME_VNET
        return
    if flags & VNET_F_NEEDS_CSUM:
        if lan_complete_csum(frame, flen, <uint16_t>(csum_start + vlan_shift),
                             pkt_le16(vnet + 8)) != 0:
            segment_drop(d, DIR_TX, s, DROP_MALFORMED, frame, flen)
            return
    e.cap_data[i] = frame
    e.cap_len[i] = flen
    e.cap_type[i] = CAP_FRAME


cdef inline uint8_t *lan_restore_tag(uint8_t *frame, uint32_t *flen, const tpacket_auxdata *aux,
                                     int *shift) noexcept nogil:
    """The kernel moved the outer VLAN tag into metadata: put it back exactly, in the spare bytes
    in front of the frame. Returns where the frame starts now."""
    cdef uint16_t tpid
    if not (aux.tp_status & TP_STATUS_VLAN_VALID) or flen[0] < 12:
        return frame
    tpid = aux.tp_vlan_tpid if aux.tp_status & TP_STATUS_VLAN_TPID_VALID else ETH_P_8021Q
    memmove(frame - VLAN_TAG_LEN, frame, 12)
    frame -= VLAN_TAG_LEN
    pkt_put_be16(frame + 12, tpid)
    pkt_put_be16(frame + 14, aux.tp_vlan_tci)
    flen[0] += VLAN_TAG_LEN
    shift[0] = VLAN_TAG_LEN
    return frame


cdef int lan_capture_packet(engine_state *e, int port, int first) noexcept nogil:
    """recvmmsg frames from AF_PACKET port `port` into slots first.. TX_BATCH - 1. Returns the
    count or -errno."""
    cdef int n, i, k, shift
    cdef uint8_t *slot
    cdef uint8_t *frame
    cdef uint32_t flen
    cdef msghdr *m
    cdef cmsghdr *c
    cdef tpacket_auxdata aux
    cdef uint8_t vnet[VNET_HDR_LEN]
    for i in range(first, TX_BATCH):
        e.lan_in[i].msg_hdr.msg_controllen = CMSG_ROOM
        e.lan_in[i].msg_hdr.msg_flags = 0
    n = recvmmsg(e.port_fd[port], &e.lan_in[first], TX_BATCH - first, MSG_DONTWAIT, NULL)
    if n < 0:
        return -errno
    for k in range(n):              # the bridge's table lines for the whole batch, misses overlapping
        if e.lan_in[first + k].msg_len >= VNET_HDR_LEN + MIN_FRAME_LEN:
            bridge_prefetch(e.dp, e.frames + <size_t>(first + k) * FRAME_SLOT + FRAME_AT)
    for k in range(n):
        i = first + k
        m = &e.lan_in[i].msg_hdr
        slot = e.frames + <size_t>i * FRAME_SLOT
        frame = slot + FRAME_AT
        e.cap_data[i] = NULL
        if m.msg_flags & MSG_TRUNC:
            drop_frame(e.dp, DIR_TX, DROP_OVERSIZED, frame, MIN_FRAME_LEN)   # its head was read
            continue
        if e.lan_in[i].msg_len < VNET_HDR_LEN:
            drop_frame(e.dp, DIR_TX, DROP_RUNT, NULL, 0)
            continue
        flen = e.lan_in[i].msg_len - VNET_HDR_LEN
        shift = 0
        memcpy(vnet, slot + FRAME_AT - VNET_HDR_LEN, VNET_HDR_LEN)      # a re-inserted tag overwrites its tail
        c = CMSG_FIRSTHDR(m)
        while c != NULL:
            if c.cmsg_level == SOL_PACKET and c.cmsg_type == PACKET_AUXDATA:
                memcpy(&aux, CMSG_DATA(c), sizeof(tpacket_auxdata))
                frame = lan_restore_tag(frame, &flen, &aux, &shift)
            c = CMSG_NXTHDR(m, c)
        lan_prepare(e, port, i, frame, flen, vnet, shift)
    return n


cdef int lan_capture_tap(engine_state *e, int port, int first) noexcept nogil:
    """read() frames from TAP port `port` into slots first.. TX_BATCH - 1 (no batch syscall
    exists for it). Returns the slots used or -errno."""
    cdef int i
    cdef ssize_t r
    cdef uint8_t *slot
    for i in range(first, TX_BATCH):
        slot = e.frames + <size_t>i * FRAME_SLOT
        r = read(e.port_fd[port], slot + FRAME_AT - VNET_HDR_LEN,
                 FRAME_SLOT - (FRAME_AT - VNET_HDR_LEN) - TAILROOM)
        if r < 0:
            if i == first:
                return -errno
            return i - first
        e.cap_data[i] = NULL
        if r < VNET_HDR_LEN:
            drop_frame(e.dp, DIR_TX, DROP_RUNT, NULL, 0)
            continue
        lan_prepare(e, port, i, slot + FRAME_AT, <uint32_t>(r - VNET_HDR_LEN), slot + FRAME_AT - VNET_HDR_LEN, 0)
    return TX_BATCH - first


cdef int lan_capture(engine_state *e) noexcept nogil:
    """Read a batch from the LAN ports, each round starting at the next port so that a busy
    one cannot starve the others. Returns the frames read (slots 0..n-1), or -errno of a port
    that broke (e.err_port names it), or -EAGAIN. An error met while other ports brought
    frames is returned by the next call: the kernel reports it only once."""
    cdef int k, p, n, total = 0, start = e.next_port
    if e.lan_err:
        n = -e.lan_err
        e.lan_err = 0
        return n
    e.next_port = (start + 1) % e.nports
    for k in range(e.nports):
        p = (start + k) % e.nports
        if e.port_kind[p] == LAN_TAP:
            n = lan_capture_tap(e, p, total)
        else:
            n = lan_capture_packet(e, p, total)
        if n > 0:
            total += n
            if total == TX_BATCH:
                break
        elif n < 0 and n != -EAGAIN and n != -EINTR:
            e.err_port = p
            if total == 0:
                return n
            e.lan_err = -n
            break
    return total if total else -EAGAIN


cdef void lan_count_send_error(engine_state *e, int err, int frames) noexcept nogil:
    drop_count(e.dp, DIR_RX, DROP_OVERSIZED if err == EMSGSIZE else DROP_SEND_ERROR, frames)


cdef void lan_emit(engine_state *e) noexcept nogil:
    """Write the frames opened this batch to their LAN ports (merged where gro.pxi may), each
    run of messages for one port in one call, counting every frame of a message the kernel
    refuses."""
    cdef int i, r, sent = 0, m, end, fd
    if e.nout == 0:
        return
    m = gro_plan(e)
    while sent < m:
        fd = e.port_fd[e.msg_port[sent]]
        if e.port_kind[e.msg_port[sent]] == LAN_TAP:
            e.pump_stats[PUMP_LAN_SENDS] += 1
            if writev(fd, e.lan_out[sent].msg_hdr.msg_iov, <int>e.lan_out[sent].msg_hdr.msg_iovlen) < 0:
                lan_count_send_error(e, errno, e.msg_frames[sent])
            sent += 1
            continue
        end = sent + 1
        while end < m and e.msg_port[end] == e.msg_port[sent]:
            end += 1
        e.pump_stats[PUMP_LAN_SENDS] += 1
        r = sendmmsg(fd, &e.lan_out[sent], end - sent, 0)
        if r > 0:
            sent += r
        elif errno == EINTR:
            continue
        else:
            # The message at `sent` failed; skip it and send the rest.
            lan_count_send_error(e, errno, e.msg_frames[sent])
            sent += 1
