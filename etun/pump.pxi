# The two pumps, each a loop in one thread with the GIL released, until stopped or broken.
#
# tx round (LAN -> tunnel):                   rx round (tunnel -> LAN):
#   1. read a batch, re-insert VLAN tags,       1. read a batch, split GRO trains
#      finish checksums, cut super-frames       2. open each: checks, replay, reassembly
#   2. seal each frame under send_lock          3. authenticated from a new address: roam
#   3. flush: sendmmsg, equal sizes as GSO      4. control packets to the Python queue
#                                               5. write the frames to the LAN, release slots
#
# Light traffic needs one thread, and waking a sleeping thread is what costs: ~50 us where
# idle CPUs halt (a VM), of which the waker pays ~15 us for the interprocessor interrupt.
# So the tx pump parks while the LAN is light, and the rx pump watches the LAN as well and
# runs the tx rounds itself. "Light" means no LAN read brings a burst (TX_BURST_FRAMES frames
# or a super-frame): when one thread falls behind, the queue grows and a burst comes. The
# answer to a frame just written to the LAN (a ping reply, a TCP ACK) leaves from the rx
# pump, caught while it polls; from a host in the same kernel (a bridge, veth, a container)
# it is in the capture queue before that write even returns. A burst wakes the tx pump,
# which reads the LAN itself from then on; it parks again when it finds the LAN empty
# PARK_AFTER_US after the latest burst. Any tx round, whichever pump runs it, holds tx_lock.

cdef inline bint pump_keep_spinning(engine_state *e, int me, uint64_t *idle_since) noexcept nogil:
    """Whether to try again at once instead of sleeping: a wakeup costs more than a few
    empty reads while traffic is flowing (yielding, so nothing runnable is starved)."""
    cdef uint64_t now
    if e.spin_us == 0:
        return False
    now = clock_us()
    if idle_since[0] == 0:
        idle_since[0] = now
    if now - idle_since[0] < e.spin_us or now < e.spin_until_us[me]:
        sched_yield()
        return True
    idle_since[0] = 0
    return False


cdef inline void pump_signal(engine_state *e, int other) noexcept nogil:
    """Wake the other pump unconditionally (it re-reads the parking state)."""
    cdef uint64_t one = 1
    write(e.kick_fd[other], &one, sizeof(one))


cdef inline bint pump_answer_likely(engine_state *e, int side, uint64_t now_us) noexcept nogil:
    """Whether `side` carried traffic lately, so an answer to what just went the other way is
    likely to come back through it soon (a ping, a TCP segment). Never when not spinning."""
    return e.spin_us != 0 and e.active_us[side] + KICK_RECENT_US > now_us


cdef inline void pump_kick(engine_state *e, int other) noexcept nogil:
    """This pump just moved traffic the other pump will likely see an answer to: if that
    pump sleeps, wake it now, so its wakeup overlaps the answer's journey instead of adding
    to it (it then polls KICK_SPIN_US)."""
    if e.sleeping[other] and pump_answer_likely(e, other, clock_us()):
        pump_signal(e, other)


cdef inline void pump_expect(engine_state *e, int side, uint64_t now_us) noexcept nogil:
    """The kick's twin for an answer the rx pump itself will read (`side` PUMP_RX: from the
    tunnel; PUMP_TX: from the LAN while the tx pump is parked): poll for it as long."""
    if pump_answer_likely(e, side, now_us):
        e.spin_until_us[PUMP_RX] = now_us + KICK_SPIN_US


cdef bint pump_wait(engine_state *e, int me, bint udp, bint lan, int timeout_ms) noexcept nogil:
    """Sleep until the UDP socket (with `udp`) or a LAN port (with `lan`) is readable, the stop
    eventfd fires, a kick comes, or the timeout passes. Returns whether a kick came."""
    cdef pollfd fds[3 + PORTS_MAX]
    cdef uint64_t junk
    cdef int i, rc, nfds = 2
    fds[0].fd = e.wake_fd
    fds[1].fd = e.kick_fd[me]
    if udp:
        fds[nfds].fd = e.udp_fd
        nfds += 1
    if lan:
        for i in range(e.nports):
            fds[nfds].fd = e.port_fd[i]
            nfds += 1
    for i in range(nfds):
        fds[i].events = POLLIN
        fds[i].revents = 0
    e.sleeping[me] = 1
    rc = poll(fds, nfds, timeout_ms)
    e.sleeping[me] = 0
    if rc > 0 and fds[1].revents:
        read(e.kick_fd[me], &junk, sizeof(junk))
        e.spin_until_us[me] = clock_us() + KICK_SPIN_US
        return True
    return False


cdef void pump_stall(engine_state *e, int me) noexcept nogil:
    """A pump wedged on purpose (Engine.stall, a test hook): it neither turns nor counts until
    told to stop, as a pump stuck in a bug would, so the watchdog sees it."""
    while e.stall[me] and not e.stop:
        poll(NULL, 0, STALL_NAP_MS)


cdef void pump_lan_drops(engine_state *e) noexcept nogil:
    """Frames the kernel dropped because the capture socket was full (read-and-reset)."""
    cdef tpacket_stats st
    cdef socklen_t slen
    cdef int p
    for p in range(e.nports):
        slen = sizeof(st)
        if e.port_kind[p] != LAN_PACKET:
            continue
        if getsockopt(e.port_fd[p], SOL_PACKET, PACKET_STATISTICS, &st, &slen) == 0 and st.tp_drops:
            drop_count(e.dp, DIR_TX, DROP_SOCKET_OVERFLOW, st.tp_drops)


cdef int pump_tx_round(engine_state *e) noexcept nogil:
    """One round of the tx side, by whichever pump holds tx_lock: read a batch of frames from
    the LAN, seal them, send them. Returns the frames read; 0, -EAGAIN or -EINTR for none;
    -errno when the LAN side broke. Sets tx_burst when the round was a big one."""
    cdef dp_state *d = e.dp
    cdef int n, i, r, sent, s
    cdef uint8_t peer_id
    cdef uint64_t now, now_us
    e.tx_now_ms = clock_ms()                   # the clock the bridge reads this round
    n = lan_capture(e)
    if n <= 0:
        return n
    e.pump_stats[PUMP_TX_WAKEUPS] += 1
    e.tx_burst = n >= TX_BURST_FRAMES
    now = clock_ms()
    pthread_mutex_lock(&d.send_lock)
    for i in range(n):
        if e.cap_data[i] == NULL:
            continue
        if e.standby:
            seal_drop(d, DROP_STANDBY, e.cap_data[i], e.cap_len[i], e.cap_type[i])
            continue
        if e.peer_len == 0:
            seal_drop(d, DROP_NO_SESSION, e.cap_data[i], e.cap_len[i], e.cap_type[i])
            continue
        s = segment_id(e.cap_seg[i])
        if e.cap_type[i] == CAP_SUPERFRAME:
            e.tx_burst = True
            gso_seal(e, i, s, segment_pcp(e.cap_seg[i]), now)
            continue
        if e.npkts + MAX_FRAGS > TX_PKTS:
            pthread_mutex_unlock(&d.send_lock)
            udp_flush(e, now)
            pthread_mutex_lock(&d.send_lock)
        # Read under the lock the seal holds: a session installed meanwhile brings its own map.
        peer_id = d.tx.seg_peer[s]
        if peer_id == SEGMENT_NONE:
            # The peer has no segment of this name, or has not told us its segments yet.
            d.seg_ctr[s][DIR_TX][DROP_UNKNOWN_SEGMENT] += 1
            seal_drop(d, DROP_UNKNOWN_SEGMENT, e.cap_data[i], e.cap_len[i], e.cap_type[i])
            continue
        r = seal_frame(d, e.cap_data[i], e.cap_len[i], e.cap_type[i],
                       segment_byte(peer_id, segment_pcp(e.cap_seg[i])), e.pkts + e.npkts)
        if r > 0:
            e.npkts += r
            segment_count(d, DIR_TX, s, e.cap_len[i])
    pthread_mutex_unlock(&d.send_lock)
    sent = e.npkts
    udp_flush(e, now)
    if e.tx_burst or sent:
        now_us = clock_us()
        if e.tx_burst:
            e.tx_burst_us = now_us             # sent or not: no flapping before a session
        if sent:
            e.active_us[PUMP_TX] = now_us
            pump_kick(e, PUMP_RX)
    return n


cdef int pump_tx(engine_state *e) noexcept nogil:
    """LAN -> tunnel until stopped. Returns 0, or the errno that broke the LAN side."""
    cdef int n
    cdef uint64_t now, idle_since = 0
    while not e.stop:
        e.pump_stats[PUMP_TX_LOOPS] += 1       # the heartbeat: even a parked pump turns every 100 ms
        if e.stall[PUMP_TX]:
            pump_stall(e, PUMP_TX)
            continue
        if e.tx_errno:
            return e.tx_errno                  # met by the rx pump during one of its tx rounds
        if not e.tx_parked:
            pthread_mutex_lock(&e.tx_lock)
            n = pump_tx_round(e)
            pthread_mutex_unlock(&e.tx_lock)
            if n > 0:
                idle_since = 0
                continue
            if n < 0 and n != -EAGAIN and n != -EINTR:
                return -n
            if pump_keep_spinning(e, PUMP_TX, &idle_since):
                continue
            if clock_us() >= e.tx_burst_us + PARK_AFTER_US:
                e.tx_parked = 1
                pump_signal(e, PUMP_RX)        # so that it watches the LAN from now on
        e.pump_stats[PUMP_TX_SLEEPS] += 1
        if pump_wait(e, PUMP_TX, False, not e.tx_parked, POLL_TIMEOUT_MS):
            e.tx_parked = 0                    # a burst (a kick that came late does the same)
        now = clock_ms()
        if now >= e.stats_next_ms:
            pump_lan_drops(e)
            e.stats_next_ms = now + 1000
    return 0


cdef int pump_serve_tx(engine_state *e) noexcept nogil:
    """A tx round run by the rx pump, while the tx pump is parked or asleep. Returns the
    frames read: 0 when there were none, on an error, or when the tx pump holds the round."""
    cdef int n
    if pthread_mutex_trylock(&e.tx_lock) != 0:
        return 0
    n = pump_tx_round(e)
    pthread_mutex_unlock(&e.tx_lock)
    if n > 0:
        e.pump_stats[PUMP_TX_SERVED_BY_RX] += 1
        if e.tx_burst and e.tx_parked:
            pump_signal(e, PUMP_TX)            # more is coming: the tx pump takes the LAN back
        else:
            pump_expect(e, PUMP_RX, clock_us())
        return n
    if n < 0 and n != -EAGAIN and n != -EINTR:
        e.tx_errno = -n                        # the kernel reports it once, to the reader: us
        pump_signal(e, PUMP_TX)
    return 0


cdef inline bint pump_rx_allows(engine_state *e, frame_ref *f) noexcept nogil:
    """tunnel_ingress of the frame's segment: the frame behind any offload header."""
    cdef uint32_t skip = VNET_HDR_LEN if f.ftype == TYPE_FRAME_VNET else 0
    return filter_allows(e.dp.filt[segment_id(f.segment)][FILTER_TUNNEL_INGRESS], f.data + skip,
                         f.length - skip)


cdef bint pump_rx_offload_ok(dp_state *d, frame_ref *f, const uint8_t *name, uint32_t namelen) noexcept nogil:
    """A FRAME_VNET's header must fit its frame before our kernel sees it (lan_vnet_ok)."""
    if f.ftype != TYPE_FRAME_VNET or lan_vnet_ok(f.data, f.length):
        return True
    drop_datagram(d, DROP_BAD_OFFLOAD, name, namelen)
    open_release(d, f)
    return False


cdef void pump_rx_dropped(dp_state *d, frame_ref *f, int reason, int s) noexcept nogil:
    """An opened frame is not delivered (tunnel_ingress, the bridge, ...): count it under
    `reason` (for segment s too, unless -1), with its source MAC, and let it go."""
    cdef uint32_t skip = VNET_HDR_LEN if f.ftype == TYPE_FRAME_VNET else 0
    if s >= 0:
        segment_drop(d, DIR_RX, s, reason, f.data + skip, f.length - skip)
    else:
        drop_frame(d, DIR_RX, reason, f.data + skip, f.length - skip)
    open_release(d, f)


cdef inline bint pump_rx_admits(dp_state *d, frame_ref *f, int s) noexcept nogil:
    """The frame behind any offload header may go into segment s as it is (segment_admits)."""
    cdef uint32_t skip = VNET_HDR_LEN if f.ftype == TYPE_FRAME_VNET else 0
    return segment_admits(&d.seg[s], f.data + skip, f.length - skip)


cdef inline int pump_rx_bridged(dp_state *d, frame_ref *f, int s, uint64_t now) noexcept nogil:
    """The bridge's word on an opened frame of segment s (bridge.pxi): 0 to deliver, or a
    DROP_* reason."""
    cdef uint32_t skip = VNET_HDR_LEN if f.ftype == TYPE_FRAME_VNET else 0
    return bridge_rx(d, s, f.data + skip, f.length - skip, now)


cdef int pump_rx_bridge(dp_state *d, frame_ref *out, int n, uint64_t now) noexcept nogil:
    """The bridge's word on a batch of opened frames: first ask for every frame's table lines,
    so their misses overlap, then keep the frames it lets through (in order, at the front of
    `out`) and count them; drop and count the others. Returns how many it kept."""
    cdef int i, kept = 0, s, rc
    cdef uint32_t skip
    for i in range(n):
        skip = VNET_HDR_LEN if out[i].ftype == TYPE_FRAME_VNET else 0
        if out[i].length >= skip + MIN_FRAME_LEN:
            bridge_prefetch(d, out[i].data + skip)
    for i in range(n):
        s = segment_id(out[i].segment)
        rc = pump_rx_bridged(d, &out[i], s, now)
        if rc:
            pump_rx_dropped(d, &out[i], rc, s)
            continue
        segment_count(d, DIR_RX, s, out[i].length)
        out[kept] = out[i]
        kept += 1
    return kept


cdef void pump_deliver(engine_state *e) noexcept nogil:
    """Write the frames opened so far to the LAN (those the bridge lets through) and let them go;
    wake or stand in for the tx pump, which may have answers to send."""
    cdef int i
    if e.nout == 0:
        return
    e.nout = pump_rx_bridge(e.dp, e.out, e.nout, e.dp.now_ms)
    if e.nout == 0:
        return
    lan_emit(e)
    for i in range(e.nout):
        open_release(e.dp, &e.out[i])
    e.nout = 0
    e.active_us[PUMP_RX] = clock_us()
    if not e.tx_parked:
        pump_kick(e, PUMP_TX)
    else:
        pump_expect(e, PUMP_TX, e.active_us[PUMP_RX])   # parked, the answers are ours to send


cdef int pump_rx_round(engine_state *e) noexcept nogil:
    """One round of the rx side: read a batch of datagrams, open them, write the frames to
    the LAN. Returns the datagrams read; 0, -EAGAIN or -EINTR for none; -errno when the UDP
    side broke."""
    cdef dp_state *d = e.dp
    cdef int n, i, rc, s
    cdef uint32_t total, seg, off, length
    cdef uint8_t *base
    cdef uint8_t *name
    cdef socklen_t namelen
    cdef bint accepted
    cdef uint64_t now
    n = udp_receive(e)
    if n <= 0:
        return n
    e.pump_stats[PUMP_RX_WAKEUPS] += 1
    now = clock_ms()
    pthread_mutex_lock(&d.recv_lock)
    d.now_ms = now
    if now >= e.expire_next_ms:
        open_expire(d)
        e.expire_next_ms = now + EXPIRE_EVERY_MS
    for i in range(n):
        total = e.udp_in[i].msg_len
        seg = udp_segment_size(e, &e.udp_in[i].msg_hdr, total)
        base = e.dgrams + <size_t>i * RX_SLOT
        name = e.udp_in_name + i * SOCKADDR_LEN
        namelen = e.udp_in[i].msg_hdr.msg_namelen
        accepted = False
        off = 0
        while off < total:
            e.pump_stats[PUMP_RX_DATAGRAMS] += 1
            length = seg if total - off > seg else total - off
            if e.nout == OUT_BATCH:
                pump_deliver(e)
            rc = open_packet(d, base + off, length, &e.out[e.nout],
                             e.scratch + <size_t>e.nout * SCRATCH_LEN, name, namelen)
            if rc == OPEN_FRAME and e.out[e.nout].ftype == TYPE_SESSION:
                # A SESSION message is for the control plane, opened, with its session.
                accepted = True
                ctlq_push(e, TYPE_SESSION, e.out[e.nout].data, e.out[e.nout].length,
                          <uint8_t>d.last_rx_session, name, namelen)
                open_release(d, &e.out[e.nout])
            elif rc == OPEN_FRAME:
                accepted = True
                s = segment_id(e.out[e.nout].segment)
                if e.standby:
                    pump_rx_dropped(d, &e.out[e.nout], DROP_STANDBY, -1)
                elif s >= d.nsegs:
                    pump_rx_dropped(d, &e.out[e.nout], DROP_UNKNOWN_SEGMENT, -1)
                elif not pump_rx_offload_ok(d, &e.out[e.nout], name, namelen):
                    pass
                elif not pump_rx_admits(d, &e.out[e.nout], s):
                    pump_rx_dropped(d, &e.out[e.nout], DROP_UNSELECTED_VLAN, s)
                elif not pump_rx_allows(e, &e.out[e.nout]):
                    pump_rx_dropped(d, &e.out[e.nout], DROP_FILTER, s)
                else:
                    e.nout += 1                # the bridge has its word in pump_deliver()
                    # Frames over 2 KiB (super-frames, jumbo frames) have 32 reassembly slots at
                    # the default budget, fewer than a batch: when this frame took the last of
                    # its class, deliver now, so the next one finds a slot free.
                    if reasm_class_spent(&d.reasm, e.out[e.nout - 1].slot):
                        pump_deliver(e)
            elif rc == OPEN_HELD:
                accepted = True
            elif rc == OPEN_CONTROL:
                rc = admit_packet(e, base + off, length, name, namelen)
                if rc == ADMIT:
                    ctlq_push(e, wire_type(base[off]), base + off, length, 0, name, namelen)
                else:
                    drop_datagram(d, -rc, name, namelen)
            off += length
        if accepted:
            e.last_auth_ms = now
            if d.level != LEVEL_NONE:
                udp_roam(e, name, namelen)
    pump_deliver(e)
    pthread_mutex_unlock(&d.recv_lock)
    return n


cdef int pump_rx(engine_state *e) noexcept nogil:
    """Tunnel -> LAN until stopped, and LAN -> tunnel too while the tx pump is parked.
    Returns 0, or the errno that broke the UDP side."""
    cdef dp_state *d = e.dp
    cdef int n, served
    cdef bint lan
    cdef uint64_t idle_since = 0
    while not e.stop:
        e.pump_stats[PUMP_RX_LOOPS] += 1       # the heartbeat: an idle pump turns every 100 ms
        if e.stall[PUMP_RX]:
            pump_stall(e, PUMP_RX)
            continue
        n = pump_rx_round(e)
        if n < 0 and n != -EAGAIN and n != -EINTR:
            return -n
        lan = e.tx_parked and not e.tx_errno
        served = 0
        if lan or (n > 0 and e.sleeping[PUMP_TX] and not e.tx_errno):
            served = pump_serve_tx(e)
        if n > 0 or served > 0:
            idle_since = 0
            continue
        if pump_keep_spinning(e, PUMP_RX, &idle_since):
            continue
        e.pump_stats[PUMP_RX_SLEEPS] += 1
        pump_wait(e, PUMP_RX, True, lan, POLL_TIMEOUT_MS)
        pthread_mutex_lock(&d.recv_lock)
        d.now_ms = clock_ms()
        open_expire(d)
        pthread_mutex_unlock(&d.recv_lock)
    return 0


PUMP_STAT_NAMES = tuple(etun_pump_stat_names[i].decode() for i in range(N_PUMP_STATS))
PUMPS = {"tx": PUMP_TX, "rx": PUMP_RX}                 # the pumps by name, for Engine.stall
