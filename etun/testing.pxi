# Test-only entry points into the datapath's internals, for tests/ and fuzz/ and nothing else.
#
# The replay window alone, the send counter and segment map, software GRO and GSO on plain frames,
# one filter decision, reassembly state, one datagram opened from an exactly sized buffer, one
# frame through the capture path. etun's own modules never call these.

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


def send_counter(Datapath dp):
    """Counter of the next packet sealed in the current send session."""
    return dp.d.tx.counter


def segment_map(Datapath dp):
    """The send session's segment map (bytes, one per segment), or None without a send session."""
    return segment_map_of(dp.d)


def payload_max(int level, int max_packet):
    """P of PROTOCOL.md §2 for any level and max_packet, as frag.pxi computes it."""
    return frag_payload_max(level, max_packet)


def gro_merge(frames, Datapath holder=None):
    """Run the LAN-side merging over plain frames as one batch; returns the LAN messages as
    bytes (a merged run starts with its 10-byte virtio_net_hdr; a plain frame gets a zero one).
    `holder`: a level-none datapath to run it on, reused by a caller that merges many batches
    (building one costs more than merging); a new one if not given."""
    if holder is None:
        holder = Datapath(LEVEL_NONE)
    cdef engine_state *e
    cdef int i, m, k
    cdef msghdr *h
    keep = [bytes(f) for f in frames]
    if len(keep) > OUT_BATCH:
        raise ValueError(f"at most {OUT_BATCH} frames")
    e = scratch_engine(holder.d)
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
        rc = gso_seal(e, 0, 0, 0, 0)
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


def filter_check(Datapath dp, int direction, frame, int segment=0):
    """Decide one frame as the pump would (and count it); (allowed, rule index, None for the
    default, or the name of the guard preset that denied it)."""
    cdef const uint8_t[:] f = frame
    cdef int verdict
    check_direction(direction)
    verdict = filter_frame(dp.d.filt[segment][direction], &f[0] if f.shape[0] else NULL, f.shape[0])
    if verdict >= 0:
        return bool(verdict & 1), verdict >> 1
    if verdict <= -3:
        return False, GUARD_NAMES[-3 - verdict]
    return verdict == -1, None


def bridge_frame(Datapath dp, int direction, frame, unsigned long long now_ms, unsigned int segment=0):
    """One frame through the bridge as a pump would pass it, at a test's clock: DIR_TX, captured
    on the LAN; DIR_RX, from the tunnel. None to carry it, else the drop reason's name (counted)."""
    cdef const uint8_t[:] f = frame
    cdef int reason
    if f.shape[0] < MIN_FRAME_LEN:
        raise ValueError("a frame has at least 14 bytes")
    if direction == DIR_TX:
        reason = bridge_tx(dp.d, segment, &f[0], f.shape[0], now_ms)
    elif direction == DIR_RX:
        reason = bridge_rx(dp.d, segment, &f[0], f.shape[0], now_ms)
    else:
        raise ValueError("direction must be DIR_TX or DIR_RX")
    if reason:
        drop_count(dp.d, direction, reason, 1)
        return COUNTER_NAMES[reason]
    return None


def reassembly_expire(Datapath dp, now_ms=None):
    """Discard incomplete frames older than the reassembly timeout, as the rx pump does."""
    cdef dp_state *d = dp.d
    pthread_mutex_lock(&d.recv_lock)
    clock_advance(d, now_ms)
    open_expire(d)
    pthread_mutex_unlock(&d.recv_lock)


def reassembly_in_use(Datapath dp):
    """Reassembly slots holding a frame in progress (or in delivery)."""
    return reasm_in_use(&dp.d.reasm)


def reassembly_capacity(Datapath dp):
    """(small slots, large slots, bytes of buffers) fixed at construction."""
    t = &dp.d.reasm
    return t.cls[REASM_SMALL].count, t.cls[REASM_LARGE].count, t.arena_len


def handshake_keys(Handshake hs):
    """A finished handshake's Split() outputs (k1, k2), before install_session() takes them:
    for the cross-check against an independent Noise implementation. Never called by etun."""
    if hs.stage != HS_DONE:
        raise ValueError("the handshake is not done")
    return (PyBytes_FromStringAndSize(<char *>hs.k1, SECRET_LEN),
            PyBytes_FromStringAndSize(<char *>hs.k2, SECRET_LEN))


def vnet_ok(packet):
    """Whether the rx pump would pass a FRAME_VNET payload (virtio_net_hdr + frame) to the LAN."""
    cdef const uint8_t[:] p = packet
    if p.shape[0] < VNET_HDR_LEN + MIN_FRAME_LEN:
        raise ValueError("shorter than a FRAME_VNET payload")
    return lan_vnet_ok(&p[0], p.shape[0])


def cookie_reply_for(Datapath dp, init, sockaddr):
    """The COOKIE the rx pump sends under load for an INIT from `sockaddr` (raw bytes)."""
    cdef const uint8_t[:] m = init
    cdef const uint8_t[:] sa = sockaddr
    cdef uint8_t out[COOKIE_LEN]
    if m.shape[0] != INIT_LEN:
        raise ValueError("not an INIT")
    if cookie_reply(dp.d, &m[0], &sa[0], sa.shape[0], clock_ms(), out) != 0:
        raise RuntimeError(crypto_error("a cookie reply"))
    return PyBytes_FromStringAndSize(<char *>out, COOKIE_LEN)


def mac2_ok_for(Datapath dp, init, sockaddr):
    """Whether an INIT's mac2 holds the cookie of `sockaddr`, as the rx pump checks it."""
    cdef const uint8_t[:] m = init
    cdef const uint8_t[:] sa = sockaddr
    if m.shape[0] != INIT_LEN:
        raise ValueError("not an INIT")
    return cookie_mac2_ok(dp.d, &m[0], &sa[0], sa.shape[0], clock_ms())


cdef engine_state *scratch_state = NULL


cdef engine_state *scratch_engine(dp_state *d) except NULL:
    """A zeroed engine state on `d`, with no socket, for the helpers below that run one piece of
    a pump (the admission gate, gro_plan): the same allocation every call, zeroed again, as a
    new one per call cost more than the work itself (it is mostly the pumps' buffers: in the
    sanitizer build, fresh pages every time). Callers hold the GIL while they use it and run
    no Python code that could call another helper meanwhile."""
    global scratch_state
    if scratch_state == NULL:
        scratch_state = <engine_state *>malloc(sizeof(engine_state))
        if scratch_state == NULL:
            raise MemoryError("engine state")
    memset(scratch_state, 0, sizeof(engine_state))
    scratch_state.dp = d
    scratch_state.udp_fd = -1
    return scratch_state


def open_exact(Datapath dp, datagram, now_ms=None, source=None):
    """Datapath.open() from a buffer of exactly the datagram's length + TAILROOM (open_packet()'s
    contract) instead of the 64 KiB staging buffer, so that a sanitizer build (fuzz/) sees any
    read past the datagram. Returns what open() returns.

    With `source` (a raw sockaddr, b"" for none) a handshake or probe packet also takes the rx
    pump's admission gate (admit.pxi) as if it came from there: it comes back only if admitted;
    else it is dropped and counted as the pump counts it, and last_drop names why. A cookie
    reply the gate sends under load goes nowhere here (there is no socket)."""
    cdef dp_state *d = dp.d
    cdef const uint8_t[:] view = datagram
    cdef const uint8_t[:] src
    cdef Py_ssize_t length = view.shape[0]
    cdef uint8_t *buf
    cdef engine_state *e = NULL
    cdef frame_ref f
    cdef int rc
    if length > UDP_DATAGRAM_MAX:
        raise ValueError(f"a UDP datagram holds at most {UDP_DATAGRAM_MAX} bytes")
    if source is not None:
        if len(source) > SOCKADDR_LEN:
            raise ValueError(f"a sockaddr holds at most {SOCKADDR_LEN} bytes")
        # The gate reads the address and the cookie secret only; a zeroed copy beyond them.
        src = bytes(source).ljust(SOCKADDR_LEN, b"\0")
        e = scratch_engine(d)
    buf = <uint8_t *>malloc(length + TAILROOM)
    if buf == NULL:
        raise MemoryError("datagram buffer")
    if length:
        memcpy(buf, &view[0], length)
    memset(buf + length, 0, TAILROOM)
    result = []
    pthread_mutex_lock(&d.recv_lock)
    try:
        clock_advance(d, now_ms)
        open_expire(d)
        rc = open_packet(d, buf, <uint32_t>length, &f, dp.scratch, NULL, 0)
        if rc == OPEN_FRAME:
            result.append((f.ftype, PyBytes_FromStringAndSize(<char *>f.data, f.length)))
            open_release(d, &f)
        elif rc == OPEN_CONTROL and e != NULL:
            rc = admit_packet(e, buf, <uint32_t>length, &src[0], len(source))
            if rc == ADMIT:
                result.append((wire_type(buf[0]), bytes(datagram)))
            else:
                drop_datagram(d, -rc, &src[0], len(source))
                d.last_drop = -rc
        elif rc == OPEN_CONTROL:
            result.append((wire_type(buf[0]), bytes(datagram)))
    finally:
        pthread_mutex_unlock(&d.recv_lock)
        free(buf)
    return result


cdef class LanCapture:
    """The capture path of one pump on its own, for fuzz/ and tests: a message as the AF_PACKET
    socket reads it (virtio_net_hdr + frame, with the auxdata the kernel attaches) goes through
    VLAN tag restore, lan_prepare() and, for a super-frame, gso_seal(). The engine's buffers are
    made once; each message sits in a buffer of its own size (plus the slot's head room and
    TAILROOM), so a sanitizer build sees any access outside it.

    LanCapture(dp): `dp` needs a send session at level none or auth (segments are read back
    from the sealed datagrams).
    """

    cdef engine_state *e
    cdef Datapath dp

    def __cinit__(self, Datapath dp):
        cdef const char *failed = NULL
        self.dp = dp
        self.e = <engine_state *>calloc(1, sizeof(engine_state))
        if self.e == NULL:
            raise MemoryError("engine state")
        if engine_init(self.e, dp.d, -1, LAN_PACKET, -1, 0, False, False, &failed) != 0:
            raise OSError(errno, f"{failed.decode()} failed")

    def __dealloc__(self):
        if self.e != NULL:
            engine_free(self.e)           # frees the engine_state too

    def capture(self, packet, unsigned int aux_status=0, unsigned int aux_tpid=0,
                unsigned int aux_tci=0, unsigned int listen_port=5555):
        """("dropped", None), ("frame" | "frame_vnet", what would be sealed) or
        ("segments", [frames cut from the super-frame]); ("segments_flushed", [the last ones]) when
        the cut needed a flush on the way (there is no socket here: the earlier ones are gone)."""
        cdef engine_state *e = self.e
        cdef dp_state *d = self.dp.d
        cdef const uint8_t[:] p = packet
        cdef Py_ssize_t n = p.shape[0]
        cdef uint8_t *buf = NULL
        cdef uint8_t *frame
        cdef uint8_t vnet[VNET_HDR_LEN]
        cdef uint32_t flen
        cdef tpacket_auxdata aux
        cdef int i, rc, shift = 0
        cdef uint32_t nseg = 0
        if n < VNET_HDR_LEN or n - VNET_HDR_LEN > MAX_FRAME_LEN:
            raise ValueError(f"a vnet header and a frame of at most {MAX_FRAME_LEN} bytes")
        if d.level == LEVEL_ENCRYPT:
            raise ValueError("segments are read back from their datagrams: use level none or auth")
        # The slot layout of lan.pxi: spare room for a tag, the vnet header, the frame, TAILROOM.
        buf = <uint8_t *>malloc(FRAME_AT + (n - VNET_HDR_LEN) + TAILROOM)
        if buf == NULL:
            raise MemoryError("capture buffer")
        try:
            memset(buf, 0, FRAME_AT - VNET_HDR_LEN)
            memcpy(buf + FRAME_AT - VNET_HDR_LEN, &p[0], n)
            memset(buf + FRAME_AT + (n - VNET_HDR_LEN), 0, TAILROOM)
            memcpy(vnet, &p[0], VNET_HDR_LEN)
            frame = buf + FRAME_AT
            flen = <uint32_t>(n - VNET_HDR_LEN)
            memset(&aux, 0, sizeof(aux))
            aux.tp_status = aux_status
            aux.tp_vlan_tpid = <uint16_t>aux_tpid
            aux.tp_vlan_tci = <uint16_t>aux_tci
            frame = lan_restore_tag(frame, &flen, &aux, &shift)
            e.listen_port = <uint16_t>listen_port
            e.npkts = 0
            e.seg_used = 0
            pthread_mutex_lock(&d.send_lock)
            lan_prepare(e, 0, 0, frame, flen, vnet, shift)
            rc = 0
            if e.cap_data[0] != NULL and e.cap_type[0] == CAP_SUPERFRAME:
                nseg = gso_segments(e.cap_len[0] - e.gso_hdr[0], e.gso_mss[0])
                rc = gso_seal(e, 0, 0, 0, 0)
            pthread_mutex_unlock(&d.send_lock)
            if e.cap_data[0] == NULL:
                return "dropped", None
            if e.cap_type[0] != CAP_SUPERFRAME:
                kind = "frame" if e.cap_type[0] == CAP_FRAME else "frame_vnet"
                return kind, PyBytes_FromStringAndSize(<char *>e.cap_data[0], e.cap_len[0])
            if rc < 0:
                raise RuntimeError(f"gso_seal: {COUNTER_NAMES[-rc]}")
            out = []
            for i in range(e.npkts):
                body = PyBytes_FromStringAndSize(<char *>e.pkts[i].body, e.pkts[i].body_len)
                if e.pkts[i].meta[2] == 0:                # frag_index 0 starts a frame
                    out.append(body)
                else:
                    out[len(out) - 1] += body
            return ("segments" if len(out) == nseg else "segments_flushed"), out
        finally:
            free(buf)


def reset_datapath(Datapath dp, unsigned long long now_ms):
    """Put a datapath back in the state a new one starts in -- no sessions, an empty reassembly
    table, an admission gate that saw nothing, full budgets, zero counters, the clock at now_ms
    -- without allocating: a fuzz target (fuzz/) then opens thousands of inputs a second on one
    datapath, each from the same start. Filters and the key file's keys are kept."""
    cdef dp_state *d = dp.d
    cdef reasm_table *t = &d.reasm
    cdef int32_t i
    if dp.engines:
        raise RuntimeError("not under running pumps")
    pthread_mutex_lock(&d.recv_lock)
    session_rx_wipe(d, &d.rx_prev)
    session_rx_wipe(d, &d.rx_cur)
    session_rx_wipe(d, &d.rx_next)
    pthread_mutex_lock(&d.send_lock)
    session_tx_wipe(d, &d.tx)
    session_tx_wipe(d, &d.tx_next)
    pthread_mutex_unlock(&d.send_lock)
    d.rx_gen = 0
    # The reassembly table as reasm_init() leaves it: every slot free, in the same order.
    reasm_free_all(t)
    for i in range(<int32_t>(t.index_mask + 1)):
        t.index[i] = -1
    for i in range(t.nslots):
        t.slots[i].older = t.slots[i].newer = t.slots[i].hpos = -1
        etun_poison(t.slots[i].buf, reasm_buf_len(t.slots[i].cls))
    # The admission gate: nothing awaited, nothing seen, every budget full.
    d.hs_expecting = False
    d.under_load_until_ms = 0
    memset(d.init_seen, 0, sizeof(d.init_seen))
    memset(d.probe_seen, 0, sizeof(d.probe_seen))
    d.probe_seen_next = 0
    d.cookie_secret_ms = 0
    memset(d.hs_sources, 0, SRCLIMIT_SLOTS * sizeof(srclimit_entry))
    memset(d.probe_sources, 0, SRCLIMIT_SLOTS * sizeof(srclimit_entry))
    d.refused_len = 0
    d.refused_reason = 0
    d.confirmed_ms = d.prev_until_ms = 0
    d.last_rx_session = -1
    d.now_ms = now_ms
    bucket_fill(&d.answers_in, ANSWERS_PER_SEC, ANSWERS_PER_SEC, now_ms)
    bucket_fill(&d.cookies_in, ANSWERS_PER_SEC, ANSWERS_PER_SEC, now_ms)
    bucket_fill(&d.hs_load, HS_PER_SEC, HS_BURST, now_ms)
    bucket_fill(&d.probe_in, PROBE_PER_SEC, PROBE_PER_SEC, now_ms)
    bucket_fill(&d.replies_in, PROBE_REPLIES_PER_SEC, PROBE_REPLIES_PER_SEC, now_ms)
    bucket_fill(&d.foreign_in, FOREIGN_PER_SEC, FOREIGN_PER_SEC, now_ms)
    memset(d.ctr, 0, sizeof(d.ctr))
    memset(d.ctr_ctl, 0, sizeof(d.ctr_ctl))
    d.last_drop = 0
    pthread_mutex_unlock(&d.recv_lock)


def segment_capture(Datapath dp, int port, frame):
    """A frame captured on LAN port `port`, tags in band: (segment or -1, pcp, the frame as it is
    sealed, without the tags that selected it). Moves the segment's outer TPID as capture does."""
    cdef const uint8_t[:] f = frame
    cdef uint32_t n = f.shape[0]
    cdef uint8_t *buf
    cdef uint8_t pcp = 0
    cdef int s, shift = 0
    cdef uint8_t *start
    if n < MIN_FRAME_LEN:
        raise ValueError("shorter than an Ethernet header")
    buf = <uint8_t *>malloc(n)
    if buf == NULL:
        raise MemoryError("frame")
    try:
        memcpy(buf, &f[0], n)
        s = segment_select(dp.d, port, buf, n, &pcp)
        if s < 0:
            return -1, 0, None
        start = segment_strip(dp.d, s, buf, &n, &shift)
        return s, pcp, PyBytes_FromStringAndSize(<char *>start, n)
    finally:
        free(buf)


def segment_admits_frame(Datapath dp, int segment, frame):
    """Whether the rx pump lets a frame from the tunnel into `segment` (segment_admits)."""
    cdef const uint8_t[:] f = frame
    check_segment(dp.d, segment)
    if f.shape[0] < MIN_FRAME_LEN:
        raise ValueError("shorter than an Ethernet header")
    return segment_admits(&dp.d.seg[segment], &f[0], f.shape[0])


def segment_inject(Datapath dp, int segment_byte, frame, int ftype=TYPE_FRAME):
    """An opened frame with header segment byte `segment_byte`, as the rx pump writes it to the
    LAN: (port, the bytes written after the 10-byte virtio_net_hdr, that header)."""
    cdef engine_state *e
    cdef msghdr *h
    cdef int k
    keep = bytes(frame)
    e = scratch_engine(dp.d)
    e.out[0].data = <uint8_t *><const char *>keep
    e.out[0].length = len(keep)
    e.out[0].ftype = ftype
    e.out[0].segment = segment_byte
    e.out[0].slot = -1
    e.nout = 1
    gro_plan(e)
    h = &e.lan_out[0].msg_hdr
    out = b"".join(PyBytes_FromStringAndSize(<char *>h.msg_iov[k].iov_base, h.msg_iov[k].iov_len)
                   for k in range(h.msg_iovlen))
    return e.msg_port[0], out[VNET_HDR_LEN:], out[:VNET_HDR_LEN]
