# Test-only entry points into the datapath's internals, for tests/ and nothing else: the replay
# window alone, software GRO and GSO on plain frames, one filter decision, reassembly state.
# etun's own modules never call these.

cdef class ReplayWindow:
    """The datapath's RFC 6479 window on its own, for the replay table test."""

    cdef replay_window w

    def __cinit__(self):
        replay_reset(&self.w)

    def accept(self, unsigned long long counter):
        """Whether `counter` is accepted (and now remembered)."""
        return replay_accept(&self.w, counter)

    def reset(self):
        """Forget every counter, as new keys do."""
        replay_reset(&self.w)


def payload_max(int level, int max_packet):
    """P of PROTOCOL.md §2 for any level and max_packet, as frag.pxi computes it."""
    return frag_payload_max(level, max_packet)


def gro_merge(frames):
    """Run the LAN-side merging over plain frames as one batch; returns the LAN messages as
    bytes (a merged run starts with its 10-byte virtio_net_hdr; a plain frame gets a zero one)."""
    cdef Datapath holder = Datapath(LEVEL_NONE)
    cdef engine_state *e = <engine_state *>calloc(1, sizeof(engine_state))
    cdef int i, m, k
    cdef msghdr *h
    if e == NULL:
        raise MemoryError("engine state")
    keep = [bytes(f) for f in frames]
    try:
        if len(keep) > OUT_BATCH:
            raise ValueError(f"at most {OUT_BATCH} frames")
        e.dp = holder.d
        for i, f in enumerate(keep):
            e.out[i].data = <uint8_t *><const char *>f
            e.out[i].length = len(f)
            e.out[i].ftype = TYPE_FRAME
            e.out[i].slot = -1
        e.nout = len(keep)
        m = gro_plan(e)
        out = []
        for i in range(m):
            h = &e.lan_out[i].msg_hdr
            out.append(b"".join(PyBytes_FromStringAndSize(<char *>h.msg_iov[k].iov_base, h.msg_iov[k].iov_len)
                                for k in range(h.msg_iovlen)))
        return out
    finally:
        free(e)


def gso_split(packet):
    """Cut a virtio_net_hdr + super-frame as a tx round would: gso_parse() and gso_seal() at
    level none, then the frames read back from the sealed datagrams."""
    cdef Datapath dp = Datapath(LEVEL_NONE, MAX_PACKET_MAX)
    cdef engine_state *e = <engine_state *>calloc(1, sizeof(engine_state))
    cdef const char *failed = NULL
    cdef const uint8_t[:] p = packet
    cdef bytearray frame
    cdef uint32_t n
    cdef int i, rc
    if e == NULL:
        raise MemoryError("engine state")
    try:
        if engine_init(e, dp.d, -1, LAN_PACKET, -1, 0, False, False, &failed) != 0:
            raise OSError(errno, f"{failed.decode()} failed")
        if p.shape[0] <= VNET_HDR_LEN:
            raise ValueError("too short")
        n = p.shape[0] - VNET_HDR_LEN
        frame = bytearray(n + TAILROOM)
        memcpy(<uint8_t *>frame, &p[VNET_HDR_LEN], n)
        if gso_parse(e, 0, <uint8_t *>frame, n, &p[0], 0) != 0:
            raise ValueError("not a super-frame etun cuts")
        dp.set_send_session()
        e.cap_data[0] = <uint8_t *>frame
        e.cap_len[0] = n
        pthread_mutex_lock(&dp.d.send_lock)
        rc = gso_seal(e, 0, 0)
        pthread_mutex_unlock(&dp.d.send_lock)
        if rc < 0:
            raise RuntimeError(f"gso_seal: {COUNTER_NAMES[-rc]}")
        out = []
        for i in range(e.npkts):
            body = PyBytes_FromStringAndSize(<char *>e.pkts[i].body, e.pkts[i].body_len)
            if e.pkts[i].meta[2] == 0:                # frag_index 0 starts a frame
                out.append(body)
            else:
                out[len(out) - 1] += body
        return out
    finally:
        engine_free(e)


def filter_check(Datapath dp, int direction, frame):
    """Decide one frame as the pump would (and count it); (allowed, rule index or None)."""
    cdef const uint8_t[:] f = frame
    cdef int verdict
    check_direction(direction)
    verdict = filter_frame(dp.d.filt[direction], &f[0] if f.shape[0] else NULL, f.shape[0])
    if verdict >= 0:
        return bool(verdict & 1), verdict >> 1
    return verdict == -1, None


def reassembly_expire(Datapath dp, now_ms=None):
    """Discard incomplete frames older than the reassembly timeout, as the rx pump does."""
    cdef dp_state *d = dp.d
    pthread_mutex_lock(&d.recv_lock)
    advance_clock(d, now_ms)
    open_expire(d)
    pthread_mutex_unlock(&d.recv_lock)


def reassembly_in_use(Datapath dp):
    """Reassembly slots holding a frame in progress (or in delivery)."""
    return reasm_in_use(&dp.d.reasm)


def reassembly_capacity(Datapath dp):
    """(small slots, large slots, bytes of buffers) fixed at construction."""
    t = &dp.d.reasm
    return (t.cls[0].count, t.cls[1].count,
            t.cls[0].count * SMALL_BUF_LEN + t.cls[1].count * LARGE_BUF_LEN)
