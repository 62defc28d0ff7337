# The two pumps, each a loop in one thread with the GIL released, until stopped or broken.
#
# tx pump (LAN -> tunnel):                    rx pump (tunnel -> LAN):
#   1. wait for frames (or the stop eventfd)    1. wait for datagrams (or the stop eventfd)
#   2. read a batch, re-insert VLAN tags,       2. read a batch, split GRO trains
#      finish checksums, cut super-frames       3. open each: checks, replay, reassembly
#   3. seal each frame under send_lock          4. authenticated from a new address: roam
#   4. flush: sendmmsg, equal sizes as GSO      5. control packets to the Python queue
#   5. now and then: kernel drop statistics     6. write the frames to the LAN, release slots

cdef inline uint64_t pump_clock_ms() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
    return <uint64_t>ts.tv_sec * 1000 + <uint64_t>ts.tv_nsec // 1000000


cdef inline uint64_t pump_clock_us() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000 + <uint64_t>ts.tv_nsec // 1000


cdef inline bint pump_keep_spinning(engine_state *e, int me, uint64_t *idle_since) noexcept nogil:
    """Whether to try again at once instead of sleeping: a wakeup costs more than a few
    empty reads while traffic is flowing (yielding, so nothing runnable is starved)."""
    cdef uint64_t now
    if e.spin_us == 0:
        return False
    now = pump_clock_us()
    if idle_since[0] == 0:
        idle_since[0] = now
    if now - idle_since[0] < e.spin_us or now < e.spin_until_us[me]:
        sched_yield()
        return True
    idle_since[0] = 0
    return False


cdef inline void pump_kick(engine_state *e, int other) noexcept nogil:
    """This pump just moved traffic the other pump will likely see an answer to (a ping, a
    TCP segment): if that pump sleeps but carried traffic lately, wake it now, so its wakeup
    overlaps the answer's journey instead of adding to it."""
    cdef uint64_t one = 1, now
    if not e.sleeping[other] or e.spin_us == 0:
        return
    now = pump_clock_us()
    if now - e.active_us[other] < KICK_RECENT_US:
        write(e.kick_fd[other], &one, sizeof(one))


cdef int pump_wait(engine_state *e, int me, int fd, int timeout_ms) noexcept nogil:
    """Sleep until fd is readable, the stop eventfd fires, a kick comes, or the timeout passes."""
    cdef pollfd fds[3]
    cdef uint64_t junk
    cdef int rc
    fds[0].fd = fd
    fds[0].events = POLLIN
    fds[0].revents = 0
    fds[1].fd = e.wake_fd
    fds[1].events = POLLIN
    fds[1].revents = 0
    fds[2].fd = e.kick_fd[me]
    fds[2].events = POLLIN
    fds[2].revents = 0
    e.sleeping[me] = 1
    rc = poll(fds, 3, timeout_ms)
    e.sleeping[me] = 0
    if rc > 0 and fds[2].revents:
        read(e.kick_fd[me], &junk, sizeof(junk))
        e.spin_until_us[me] = pump_clock_us() + KICK_SPIN_US
    return rc


cdef void pump_lan_drops(engine_state *e) noexcept nogil:
    """Frames the kernel dropped because the capture socket was full (read-and-reset)."""
    cdef tpacket_stats st
    cdef socklen_t slen = sizeof(st)
    if e.lan_kind == LAN_PACKET and getsockopt(e.lan_fd, SOL_PACKET, PACKET_STATISTICS, &st, &slen) == 0:
        e.dp.ctr_tx[DROP_SOCKET_OVERFLOW] += st.tp_drops


cdef int pump_tx(engine_state *e) noexcept nogil:
    """LAN -> tunnel until stopped. Returns 0, or the errno that broke the LAN side."""
    cdef dp_state *d = e.dp
    cdef int n, i, r, sent
    cdef uint64_t now, idle_since = 0
    while not e.stop:
        n = lan_capture_tap(e) if e.lan_kind == LAN_TAP else lan_capture_packet(e)
        if n == -EAGAIN or n == -EINTR or n == 0:
            if pump_keep_spinning(e, PUMP_TX, &idle_since):
                continue
            e.pump_stats[PUMP_TX_SLEEPS] += 1
            pump_wait(e, PUMP_TX, e.lan_fd, 100)
            now = pump_clock_ms()
            if now >= e.stats_next_ms:
                pump_lan_drops(e)
                e.stats_next_ms = now + 1000
            continue
        if n < 0:
            return -n
        idle_since = 0
        e.pump_stats[PUMP_TX_WAKEUPS] += 1
        now = pump_clock_ms()
        pthread_mutex_lock(&d.send_lock)
        for i in range(n):
            if e.cap_data[i] == NULL:
                continue
            if e.peer_len == 0:
                d.ctr_tx[DROP_NO_SESSION] += 1
                continue
            if e.cap_type[i] == CAP_SUPERFRAME:
                gso_seal(e, i, now)
                continue
            if e.npkts + MAX_FRAGS > TX_PKTS:
                pthread_mutex_unlock(&d.send_lock)
                udp_flush(e, now)
                pthread_mutex_lock(&d.send_lock)
            r = seal_frame(d, e.cap_data[i], e.cap_len[i], e.cap_type[i], e.pkts + e.npkts)
            if r > 0:
                e.npkts += r
        pthread_mutex_unlock(&d.send_lock)
        sent = e.npkts
        udp_flush(e, now)
        if sent:
            e.active_us[PUMP_TX] = pump_clock_us()
            pump_kick(e, PUMP_RX)
    return 0


cdef inline bint pump_rx_allows(engine_state *e, frame_ref *f) noexcept nogil:
    """tunnel_ingress: the frame behind any offload header."""
    cdef uint32_t skip = VNET_HDR_LEN if f.ftype == TYPE_FRAME_VNET else 0
    return filter_allows(<filter_table *>e.dp.filt[FILTER_TUNNEL_INGRESS], f.data + skip,
                         f.length - skip)


cdef void pump_deliver(engine_state *e) noexcept nogil:
    cdef int i
    if e.nout == 0:
        return
    lan_emit(e)
    for i in range(e.nout):
        open_release(e.dp, &e.out[i])
    e.nout = 0
    e.active_us[PUMP_RX] = pump_clock_us()
    pump_kick(e, PUMP_TX)


cdef int pump_rx(engine_state *e) noexcept nogil:
    """Tunnel -> LAN until stopped. Returns 0, or the errno that broke the UDP side."""
    cdef dp_state *d = e.dp
    cdef int n, i, rc
    cdef uint32_t total, seg, off, length
    cdef uint8_t *base
    cdef uint8_t *name
    cdef socklen_t namelen
    cdef bint accepted
    cdef uint64_t now, idle_since = 0
    while not e.stop:
        n = udp_receive(e)
        if n == -EAGAIN or n == -EINTR or n == 0:
            if pump_keep_spinning(e, PUMP_RX, &idle_since):
                continue
            e.pump_stats[PUMP_RX_SLEEPS] += 1
            pump_wait(e, PUMP_RX, e.udp_fd, 100)
            pthread_mutex_lock(&d.recv_lock)
            d.now_ms = pump_clock_ms()
            reasm_expire(&d.reasm, d.now_ms, d.ctr_rx)
            pthread_mutex_unlock(&d.recv_lock)
            continue
        if n < 0:
            return -n
        idle_since = 0
        e.pump_stats[PUMP_RX_WAKEUPS] += 1
        now = pump_clock_ms()
        pthread_mutex_lock(&d.recv_lock)
        d.now_ms = now
        if now >= e.expire_next_ms:
            reasm_expire(&d.reasm, now, d.ctr_rx)
            e.expire_next_ms = now + 50
        for i in range(n):
            total = e.udp_in[i].msg_len
            seg = udp_segment_size(e, &e.udp_in[i].msg_hdr, total)
            base = e.dgrams + <size_t>i * RX_SLOT
            name = e.udp_in_name + i * SOCKADDR_LEN
            namelen = e.udp_in[i].msg_hdr.msg_namelen
            accepted = False
            off = 0
            while off < total:
                e.pump_stats[PUMP_RX_DGRAMS] += 1
                length = seg if total - off > seg else total - off
                if e.nout == OUT_BATCH:
                    pump_deliver(e)
                rc = open_packet(d, base + off, length, &e.out[e.nout],
                                 e.scratch + <size_t>e.nout * (MAX_MAX_PACKET + TAILROOM))
                if rc == OPEN_FRAME:
                    accepted = True
                    if pump_rx_allows(e, &e.out[e.nout]):
                        e.nout += 1
                    else:
                        d.ctr_rx[DROP_FILTER] += 1
                        open_release(d, &e.out[e.nout])
                elif rc == OPEN_HELD:
                    accepted = True
                elif rc == OPEN_CONTROL:
                    ctlq_push(e, base + off, length, name, namelen)
                off += length
            if accepted:
                e.last_auth_ms = now
                if d.level != LEVEL_NONE:
                    udp_roam(e, name, namelen)
        pump_deliver(e)
        pthread_mutex_unlock(&d.recv_lock)
    return 0
