# The Engine: both pumps of one site, with everything they use allocated up front.
#
# The Engine: both pumps of one site over its LAN fd and UDP fd. Its buffers, eventfds and locks
# are allocated once (and made resident, by the daemon) before the pumps start and freed after
# they stopped; nothing in the pumps allocates. The Python class is what the daemon drives:
# run_tx()/run_rx() in two threads, the peer's address, control packets, a snapshot for status.

cdef inline size_t engine_touch(void *p, size_t n) noexcept nogil:
    touch_pages(p, n)
    return n


cdef size_t engine_make_resident(engine_state *e) noexcept nogil:
    """Touch every buffer the pumps may use -- the engine's and its datapath's reassembly arena
    and MAC table -- so that the memory they will ever need is resident from the start: RSS
    stays flat however rare the burst that first fills a buffer, and a shortage of memory shows
    at start, not months later. Touching writes no byte. Returns the bytes touched."""
    cdef dp_state *d = e.dp
    return (engine_touch(e.frames, <size_t>TX_BATCH * FRAME_SLOT)
            + engine_touch(e.dgrams, <size_t>RX_BATCH * RX_SLOT)
            + engine_touch(e.scratch, <size_t>OUT_BATCH * SCRATCH_LEN)
            + engine_touch(e.ctl_buf, <size_t>CTL_SLOTS * CTL_MAX)
            + engine_touch(e.seg_arena, <size_t>SEG_ARENA_LEN)
            + engine_touch(d.reasm.arena, d.reasm.arena_len)
            + engine_touch(d.reasm.slots, <size_t>d.reasm.nslots * sizeof(reasm_slot))
            + engine_touch(d.macs, <size_t>BRIDGE_ENTRIES * sizeof(bridge_entry)))


cdef int engine_init(engine_state *e, dp_state *d, int lan_fd, int lan_kind, int udp_fd,
                     uint16_t listen_port, bint gso, bint gro, const char **failed) noexcept nogil:
    """Fill a zeroed engine_state. Returns 0, or -1 with *failed naming what failed (errno set
    for the system calls); engine_free() undoes a partial init."""
    cdef int i
    cdef uint8_t *slot
    e.wake_fd = e.ctl_fd = e.kick_fd[PUMP_TX] = e.kick_fd[PUMP_RX] = -1
    e.dp = d
    e.nports = 1
    e.port_fd[0] = lan_fd
    e.port_kind[0] = lan_kind
    e.udp_fd = udp_fd
    e.listen_port = listen_port
    e.gso = gso
    e.gro = gro
    e.tx_parked = 1                # until the LAN brings a burst (pump.pxi)
    if (pthread_mutex_init(&e.peer_lock, NULL) != 0 or pthread_mutex_init(&e.ctl_lock, NULL) != 0
            or pthread_mutex_init(&e.tx_lock, NULL) != 0):
        failed[0] = b"pthread_mutex_init"
        return -1
    e.frames = <uint8_t *>malloc(<size_t>TX_BATCH * FRAME_SLOT)
    e.pkts = <pkt_ref *>calloc(TX_PKTS, sizeof(pkt_ref))
    e.udp_out = <mmsghdr *>calloc(TX_PKTS, sizeof(mmsghdr))
    e.udp_out_iov = <iovec *>calloc(3 * TX_PKTS, sizeof(iovec))
    e.udp_out_cmsg = <uint8_t *>calloc(TX_PKTS, CMSG_ROOM)
    e.dgrams = <uint8_t *>malloc(<size_t>RX_BATCH * RX_SLOT)
    e.scratch = <uint8_t *>malloc(<size_t>OUT_BATCH * SCRATCH_LEN)
    e.ctl_buf = <uint8_t *>malloc(<size_t>CTL_SLOTS * CTL_MAX)
    e.seg_arena = <uint8_t *>malloc(SEG_ARENA_LEN)
    if (e.seg_arena == NULL or e.frames == NULL or e.pkts == NULL or e.udp_out == NULL
            or e.udp_out_iov == NULL or e.udp_out_cmsg == NULL or e.dgrams == NULL
            or e.scratch == NULL or e.ctl_buf == NULL):
        failed[0] = b"engine buffers"
        return -1
    e.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
    e.ctl_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
    e.kick_fd[PUMP_TX] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
    e.kick_fd[PUMP_RX] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
    if e.wake_fd < 0 or e.ctl_fd < 0 or e.kick_fd[PUMP_TX] < 0 or e.kick_fd[PUMP_RX] < 0:
        failed[0] = b"eventfd"
        return -1
    for i in range(TX_BATCH):
        slot = e.frames + <size_t>i * FRAME_SLOT
        e.lan_in_iov[2 * i].iov_base = slot + FRAME_AT - VNET_HDR_LEN
        e.lan_in_iov[2 * i].iov_len = VNET_HDR_LEN
        e.lan_in_iov[2 * i + 1].iov_base = slot + FRAME_AT
        e.lan_in_iov[2 * i + 1].iov_len = FRAME_SLOT - FRAME_AT - TAILROOM
        e.lan_in[i].msg_hdr.msg_iov = &e.lan_in_iov[2 * i]
        e.lan_in[i].msg_hdr.msg_iovlen = 2
        e.lan_in[i].msg_hdr.msg_control = &e.lan_in_cmsg[i * CMSG_ROOM]
    for i in range(RX_BATCH):
        e.udp_in_iov[i].iov_base = e.dgrams + <size_t>i * RX_SLOT
        e.udp_in_iov[i].iov_len = RX_SLOT - TAILROOM
        e.udp_in[i].msg_hdr.msg_iov = &e.udp_in_iov[i]
        e.udp_in[i].msg_hdr.msg_iovlen = 1
        e.udp_in[i].msg_hdr.msg_name = &e.udp_in_name[i * SOCKADDR_LEN]
        e.udp_in[i].msg_hdr.msg_control = &e.udp_in_cmsg[i * CMSG_ROOM]
    return 0


cdef inline void engine_close(int fd) noexcept nogil:
    if fd >= 0:
        close(fd)


cdef void engine_free(engine_state *e) noexcept nogil:
    """Release what engine_init() took; the pumps have stopped."""
    engine_close(e.wake_fd)
    engine_close(e.ctl_fd)
    engine_close(e.kick_fd[PUMP_TX])
    engine_close(e.kick_fd[PUMP_RX])
    free(e.frames)
    free(e.pkts)
    free(e.udp_out)
    free(e.udp_out_iov)
    free(e.udp_out_cmsg)
    free(e.dgrams)
    free(e.scratch)
    free(e.ctl_buf)
    free(e.seg_arena)
    pthread_mutex_destroy(&e.peer_lock)
    pthread_mutex_destroy(&e.ctl_lock)
    pthread_mutex_destroy(&e.tx_lock)
    free(e)


@cython.no_gc_clear    # __dealloc__ must still see self.datapath to release its count
cdef class Engine:
    """Both pumps of one site over its LAN fd and UDP fd, and what Python shares with them.

    Engine(datapath, lan_fd, lan_kind, udp_fd, listen_port, gso, gro): lan_fd is LAN port 0;
    add_port() adds more (the datapath's segments say which frames each carries). run_tx()
    and run_rx() each block their calling thread, GIL released, until stop(). Run both: while
    the tx pump is parked (light traffic, and at the start) the rx pump reads the LAN for it.
    """

    cdef engine_state *e
    cdef Datapath datapath

    def __cinit__(self, Datapath datapath, int lan_fd, int lan_kind, int udp_fd, int listen_port,
                  bint gso, bint gro):
        cdef const char *failed = NULL
        cdef int k
        if lan_kind not in (LAN_PACKET, LAN_TAP):
            raise ValueError(f"lan_kind must be LAN_PACKET or LAN_TAP, got {lan_kind}")
        self.datapath = datapath
        datapath.engines += 1
        self.e = <engine_state *>calloc(1, sizeof(engine_state))
        if self.e == NULL:
            raise MemoryError("engine state")
        if engine_init(self.e, datapath.d, lan_fd, lan_kind, udp_fd, <uint16_t>listen_port, gso, gro,
                       &failed) != 0:
            raise OSError(errno, f"{failed.decode()} failed")
        for k in range(ENGINES_MAX):
            if datapath.engine_list[k] == NULL:
                datapath.engine_list[k] = self.e      # set_filter takes its tx_lock from now on
                break
        else:
            raise RuntimeError(f"at most {ENGINES_MAX} Engines per datapath")

    def __dealloc__(self):
        cdef int k
        if self.datapath is not None:
            self.datapath.engines -= 1
            for k in range(ENGINES_MAX):
                if self.datapath.engine_list[k] == self.e:
                    self.datapath.engine_list[k] = NULL
        if self.e != NULL:
            engine_free(self.e)
            self.e = NULL

    def add_port(self, int fd, int kind):
        """Another LAN port (before the pumps start); returns its index."""
        if kind not in (LAN_PACKET, LAN_TAP):
            raise ValueError(f"kind must be LAN_PACKET or LAN_TAP, got {kind}")
        if self.e.nports == PORTS_MAX:
            raise ValueError(f"at most {PORTS_MAX} LAN ports")
        self.e.port_fd[self.e.nports] = fd
        self.e.port_kind[self.e.nports] = kind
        self.e.nports += 1
        return self.e.nports - 1

    def make_resident(self):
        """Touch every buffer the pumps may use (engine_make_resident); returns their bytes. The
        daemon calls this once, after it forked its monitor (which so shares none of these
        pages) and before the pumps start."""
        cdef size_t n
        with nogil:
            n = engine_make_resident(self.e)
        return n

    @property
    def control_fd(self):
        """An eventfd that becomes readable when control packets wait in pop_control()."""
        return self.e.ctl_fd

    def set_peer(self, sockaddr, bint roam=False):
        """Send to this raw sockaddr (struct sockaddr_in or sockaddr_in6 bytes) from now on;
        `roam`: the peer was seen there (counted), rather than configured or resolved."""
        cdef const uint8_t[:] sa = sockaddr
        if not 16 <= sa.shape[0] <= SOCKADDR_LEN:
            raise ValueError("sockaddr must be a struct sockaddr_in or sockaddr_in6")
        pthread_mutex_lock(&self.e.peer_lock)
        if not udp_addr_equal(&sa[0], sa.shape[0], self.e.peer, self.e.peer_len):
            memcpy(self.e.peer, &sa[0], sa.shape[0])
            self.e.peer_len = <socklen_t>sa.shape[0]
            self.e.peer_gen += 1
            if roam:
                self.e.peer_roams += 1
        pthread_mutex_unlock(&self.e.peer_lock)

    def peer(self):
        """(raw sockaddr or None, generation, roams): where we send, and how often it moved."""
        pthread_mutex_lock(&self.e.peer_lock)
        addr = PyBytes_FromStringAndSize(<char *>self.e.peer, self.e.peer_len) if self.e.peer_len else None
        gen, roams = self.e.peer_gen, self.e.peer_roams
        pthread_mutex_unlock(&self.e.peer_lock)
        return addr, gen, roams

    cdef check_ports(self):
        cdef dp_state *d = self.datapath.d
        cdef int k
        for k in range(d.nsegs):
            if d.seg[k].port >= self.e.nports:
                raise ValueError(f"segment {k} is on LAN port {d.seg[k].port}; the Engine has {self.e.nports}")

    def run_tx(self):
        """Pump LAN -> tunnel in this thread until stop(); returns 0 or the LAN errno."""
        cdef int rc
        self.check_ports()
        pthread_setname_np(pthread_self(), b"etun-tx")     # as top -H and perf show it
        with nogil:
            rc = pump_tx(self.e)
        return rc

    def run_rx(self):
        """Pump tunnel -> LAN in this thread until stop(); returns 0 or the UDP errno."""
        cdef int rc
        self.check_ports()
        pthread_setname_np(pthread_self(), b"etun-rx")
        with nogil:
            rc = pump_rx(self.e)
        return rc

    @property
    def spin_us(self):
        return self.e.spin_us

    @spin_us.setter
    def spin_us(self, unsigned int value):
        self.e.spin_us = value

    def stall(self, int side):
        """Test hook: wedge pump `side` (PUMP_TX or PUMP_RX) on purpose. It stops turning, and so
        stops counting tx_loops / rx_loops and moving traffic, until stop(). The daemon calls
        this only with ETUN_TEST_HOOKS set, for the watchdog test."""
        if side not in (PUMP_TX, PUMP_RX):
            raise ValueError("side must be PUMP_TX or PUMP_RX")
        self.e.stall[side] = 1

    @property
    def standby(self):
        """Whether this gateway is the standby of a pair: every frame captured on the LAN and
        every frame opened from the tunnel is dropped (counted as standby), none is sent."""
        return bool(self.e.standby)

    @standby.setter
    def standby(self, bint value):
        self.e.standby = value

    def stop(self):
        cdef uint64_t one = 1
        self.e.stop = 1
        write(self.e.wake_fd, &one, sizeof(one))

    def pop_control(self):
        """Queued control packets as [(type, datagram, raw sockaddr, session id)], oldest
        first: admitted handshake and probe datagrams whole, SESSION messages opened, with the
        id of the receive session they came under (0 for the others)."""
        cdef uint64_t junk
        cdef int slot
        cdef engine_state *e = self.e
        read(e.ctl_fd, &junk, sizeof(junk))
        out = []
        pthread_mutex_lock(&e.ctl_lock)
        while e.ctl_count:
            slot = e.ctl_head
            out.append((e.ctl_type[slot],
                        PyBytes_FromStringAndSize(<char *>e.ctl_buf + <size_t>slot * CTL_MAX, e.ctl_len[slot]),
                        PyBytes_FromStringAndSize(<char *>e.ctl_from + slot * SOCKADDR_LEN, e.ctl_fromlen[slot]),
                        e.ctl_session[slot]))
            e.ctl_head = (e.ctl_head + 1) % CTL_SLOTS
            e.ctl_count -= 1
        pthread_mutex_unlock(&e.ctl_lock)
        return out

    def snapshot(self):
        """What the pumps know that counters do not: offloads in use and last activity."""
        cdef engine_state *e = self.e
        return {
            "gso": bool(e.gso),
            "gro": bool(e.gro),
            "gso_errno": e.gso_errno,
            "lan_error_port": e.err_port,
            "tx_parked": bool(e.tx_parked),
            "last_auth_ms": e.last_auth_ms,
            "last_send_ms": e.last_send_ms,
            "pumps": {name: e.pump_stats[i] for i, name in enumerate(PUMP_STAT_NAMES)},
        }
