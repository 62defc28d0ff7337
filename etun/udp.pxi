# The UDP side in batches: recvmmsg and sendmmsg, with UDP GRO and GSO.
#
# The UDP side in batches: datagrams in with recvmmsg, GRO trains split by their segment size;
# sealed datagrams out with sendmmsg, each run of equal-size datagrams as one UDP GSO send.

cdef extern from *:
    """
    #include <netinet/in.h>
    static int etun_addr_equal(const unsigned char *a, unsigned int alen,
                               const unsigned char *b, unsigned int blen) {
        const struct sockaddr_in *a4 = (const void *)a, *b4 = (const void *)b;
        const struct sockaddr_in6 *a6 = (const void *)a, *b6 = (const void *)b;
        if (alen < sizeof(sa_family_t) || blen < sizeof(sa_family_t) || a4->sin_family != b4->sin_family)
            return 0;
        if (a4->sin_family == AF_INET)
            return alen >= sizeof(*a4) && blen >= sizeof(*b4) && a4->sin_port == b4->sin_port
                   && a4->sin_addr.s_addr == b4->sin_addr.s_addr;
        if (a4->sin_family == AF_INET6)
            return alen >= sizeof(*a6) && blen >= sizeof(*b6) && a6->sin6_port == b6->sin6_port
                   && memcmp(&a6->sin6_addr, &b6->sin6_addr, 16) == 0
                   && a6->sin6_scope_id == b6->sin6_scope_id;
        return 0;
    }
    static ssize_t etun_sendto(int fd, const void *buf, size_t len, int flags, const unsigned char *to,
                               unsigned int tolen) {
        return sendto(fd, buf, len, flags, (const struct sockaddr *)to, tolen);
    }
    """
    bint udp_addr_equal "etun_addr_equal"(
        const uint8_t *a, unsigned int alen, const uint8_t *b, unsigned int blen) nogil
    ssize_t udp_sendto "etun_sendto"(int fd, const void *buf, size_t length, int flags,
                                     const uint8_t *to, unsigned int tolen) nogil


cdef int udp_receive(engine_state *e) noexcept nogil:
    """recvmmsg up to RX_BATCH datagrams (or GRO trains). Returns the count or -errno."""
    cdef int i, n
    for i in range(RX_BATCH):
        e.udp_in[i].msg_hdr.msg_namelen = SOCKADDR_LEN
        e.udp_in[i].msg_hdr.msg_controllen = CMSG_ROOM
        e.udp_in[i].msg_hdr.msg_flags = 0
    n = recvmmsg(e.udp_fd, e.udp_in, RX_BATCH, MSG_DONTWAIT, NULL)
    return n if n >= 0 else -errno


cdef uint32_t udp_segment_size(engine_state *e, msghdr *m, uint32_t total) noexcept nogil:
    """The GRO segment size of a received train (or its whole length), noting socket drops."""
    cdef cmsghdr *c = CMSG_FIRSTHDR(m)
    cdef int gso_size = 0
    cdef uint32_t drops
    while c != NULL:
        if c.cmsg_level == IPPROTO_UDP and c.cmsg_type == UDP_GRO:
            memcpy(&gso_size, CMSG_DATA(c), sizeof(int))
        elif c.cmsg_level == SOL_SOCKET and c.cmsg_type == SO_RXQ_OVFL:
            # A running count of datagrams the kernel dropped because we fell behind.
            memcpy(&drops, CMSG_DATA(c), sizeof(uint32_t))
            if drops != e.rxq_drops:
                drop_count(e.dp, DIR_RX, DROP_SOCKET_OVERFLOW, <uint32_t>(drops - e.rxq_drops))
            e.rxq_drops = drops
        c = CMSG_NXTHDR(m, c)
    if gso_size <= 0 or <uint32_t>gso_size > total:
        return total
    return <uint32_t>gso_size


cdef inline uint32_t udp_pkt_len(const pkt_ref *p, int tag_len) noexcept nogil:
    return HEADER_LEN + p.body_len + tag_len


cdef void udp_roam(engine_state *e, const uint8_t *name, socklen_t namelen) noexcept nogil:
    """An authenticated packet came from `name`: the most recent such address is the peer's."""
    if udp_addr_equal(name, namelen, e.peer, e.peer_len):
        return
    pthread_mutex_lock(&e.peer_lock)
    if not udp_addr_equal(name, namelen, e.peer, e.peer_len) and namelen <= SOCKADDR_LEN:
        memcpy(e.peer, name, namelen)
        e.peer_len = namelen
        e.peer_gen += 1
        e.peer_roams += 1
    pthread_mutex_unlock(&e.peer_lock)


cdef void udp_flush(engine_state *e, uint64_t now_ms) noexcept nogil:
    """Send every sealed datagram waiting in e.pkts, then forget them."""
    cdef int tag_len = e.dp.tag_len
    cdef int n = e.npkts, i = 0, j, k, m = 0, sent = 0, r, err
    cdef uint32_t size, nbytes
    cdef uint16_t seg16
    cdef uint8_t peer[SOCKADDR_LEN]
    cdef socklen_t peer_len
    cdef iovec *iov = e.udp_out_iov
    cdef msghdr *h
    cdef cmsghdr *c
    cdef int first[TX_PKTS]
    cdef int count[TX_PKTS]
    if n == 0:
        e.seg_used = 0        # segments whose seal failed left bytes in the arena too
        return
    pthread_mutex_lock(&e.peer_lock)
    memcpy(peer, e.peer, SOCKADDR_LEN)
    peer_len = e.peer_len
    pthread_mutex_unlock(&e.peer_lock)
    while i < n:
        size = udp_pkt_len(&e.pkts[i], tag_len)
        nbytes = size
        j = i + 1
        if e.gso:
            # A GSO send cuts its payload into `size` pieces; only the last may be shorter.
            while (j < n and j - i < GSO_SEGMENTS
                   and udp_pkt_len(&e.pkts[j - 1], tag_len) == size
                   and udp_pkt_len(&e.pkts[j], tag_len) <= size
                   and nbytes + udp_pkt_len(&e.pkts[j], tag_len) <= GSO_BYTES):
                nbytes += udp_pkt_len(&e.pkts[j], tag_len)
                j += 1
        h = &e.udp_out[m].msg_hdr
        h.msg_name = peer
        h.msg_namelen = peer_len
        h.msg_iov = iov
        h.msg_iovlen = 0
        h.msg_flags = 0
        for k in range(i, j):
            iov[0].iov_base = e.pkts[k].meta
            iov[0].iov_len = HEADER_LEN
            iov[1].iov_base = <void *>e.pkts[k].body
            iov[1].iov_len = e.pkts[k].body_len
            iov += 2
            h.msg_iovlen += 2
            if tag_len:
                iov[0].iov_base = e.pkts[k].meta + HEADER_LEN
                iov[0].iov_len = TAG_LEN
                iov += 1
                h.msg_iovlen += 1
        if j - i > 1:
            h.msg_control = e.udp_out_cmsg + <size_t>m * CMSG_ROOM
            h.msg_controllen = CMSG_SPACE(sizeof(uint16_t))
            c = CMSG_FIRSTHDR(h)
            c.cmsg_level = IPPROTO_UDP
            c.cmsg_type = UDP_SEGMENT
            c.cmsg_len = CMSG_LEN(sizeof(uint16_t))
            seg16 = <uint16_t>size
            memcpy(CMSG_DATA(c), &seg16, sizeof(uint16_t))
        else:
            h.msg_control = NULL
            h.msg_controllen = 0
        first[m] = i
        count[m] = j - i
        m += 1
        i = j
    e.pump_stats[PUMP_UDP_MESSAGES] += m
    while sent < m:
        e.pump_stats[PUMP_UDP_SENDS] += 1
        r = sendmmsg(e.udp_fd, &e.udp_out[sent], m - sent, 0)
        if r > 0:
            sent += r
            continue
        err = errno
        if err == EINTR:
            continue
        if count[sent] > 1 and (err == EIO or err == EINVAL or err == ENOPROTOOPT):
            # The route's device cannot take GSO: switch it off for good and resend the rest
            # of this flush datagram by datagram.
            e.gso = False
            e.gso_errno = err
            memmove(e.pkts, &e.pkts[first[sent]], (n - first[sent]) * sizeof(pkt_ref))
            e.npkts = n - first[sent]
            udp_flush(e, now_ms)
            return
        drop_count(e.dp, DIR_TX, DROP_SEND_ERROR, count[sent])
        sent += 1
    e.last_send_ms = now_ms
    e.npkts = 0
    e.seg_used = 0            # nothing points into the segment arena any more
