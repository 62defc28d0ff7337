# The loops behind `etun bench`: seal, open and libcrypto's own bound, timed in process.
#
# The loops behind `etun bench`: seal, open and libcrypto's own bound, in process, GIL released,
# no I/O. Each runs batches of 256 frames until `seconds` passed and returns (frames, elapsed).

cdef enum:
    BENCH_BATCH = 256             # frames between two clock reads
    BENCH_LOCAL_OUI = 0x021000    # MACs bench_learn() puts in the table as local ...
    BENCH_REMOTE_OUI = 0x022000   # ... and as remote


cdef inline void bench_mac(uint8_t *at, uint32_t oui, uint32_t i) noexcept nogil:
    """MAC number i under oui, written at `at` (i < 2**24)."""
    at[0] = <uint8_t>(oui >> 16)
    at[1] = <uint8_t>(oui >> 8)
    at[2] = <uint8_t>oui
    at[3] = <uint8_t>(i >> 16)
    at[4] = <uint8_t>(i >> 8)
    at[5] = <uint8_t>i


def bench_learn(Datapath dp, unsigned int count):
    """Fill the MAC table of segment 0 with count MACs, half local, half remote, as traffic
    would; frames made by bench_seal/bench_open (bridge_macs = count) go between them."""
    cdef uint8_t mac[6]
    cdef uint32_t i
    cdef uint64_t now = clock_ms()
    for i in range(count // 2):
        bench_mac(mac, BENCH_LOCAL_OUI, i)
        bridge_learn(dp.d, 0, DIR_TX, mac, now, False, NULL)
        bench_mac(mac, BENCH_REMOTE_OUI, i)
        bridge_learn(dp.d, 0, DIR_RX, mac, now, False, NULL)


def bench_frame_macs(unsigned int i, unsigned int count):
    """The 12 address bytes bench_open's frame i carries: to local MAC i, from remote MAC i."""
    cdef uint8_t head[12]
    bench_mac(head, BENCH_LOCAL_OUI, i % (count // 2))
    bench_mac(head + 6, BENCH_REMOTE_OUI, i % (count // 2))
    return PyBytes_FromStringAndSize(<char *>head, 12)


cdef void bench_prefetch(dp_state *d, uint32_t k, uint32_t half) noexcept nogil:
    """bridge_prefetch() for the next TX_BATCH frames bench_seal() makes, from frame k on."""
    cdef uint8_t head[12]
    cdef int j
    for j in range(TX_BATCH):
        bench_mac(head, BENCH_REMOTE_OUI, k)
        bench_mac(head + 6, BENCH_LOCAL_OUI, k)
        bridge_prefetch(d, head)
        k = k + 1 if k + 1 < half else 0


def bench_seal(Datapath dp, int frame_len, double seconds, bint filtered=False, unsigned int bridge_macs=0):
    """Seal frames of `frame_len` bytes for about `seconds`. `filtered`: pass each frame
    through the nic_ingress filter first, as the pump does. `bridge_macs`: the table holds
    that many MACs (bench_learn), and each frame, from local MAC i to remote MAC i (i running
    through them), passes the bridge first, the clock read once per batch as the pump reads it
    once per round."""
    cdef dp_state *d = dp.d
    cdef filter_table *filt = d.filt[0][FILTER_NIC_INGRESS]
    cdef pkt_ref pkts[MAX_FRAGS]
    cdef uint64_t frames = 0
    cdef int i, b, n = 0
    cdef uint32_t k = 0, half = bridge_macs // 2
    cdef uint64_t now = clock_ms()
    cdef double t0, t1 = 0.0
    if not MIN_FRAME_LEN <= frame_len <= MAX_FRAME_LEN:
        raise ValueError("frame_len out of range")
    if not d.tx.live:
        raise RuntimeError("no send session")
    if bridge_macs and half == 0:
        raise ValueError("bridge_macs: at least 2")
    for i in range(frame_len):
        dp.work_tx[i] = <uint8_t>(i * 7)
        dp.work_rx[i] = <uint8_t>(i * 7)
    with nogil:
        pthread_mutex_lock(&d.send_lock)
        t0 = clock_s()
        while True:
            for b in range(BENCH_BATCH):
                # The filter reads a pristine copy: seal_frame encrypts work_tx in place.
                if filtered and not filter_allows(filt, dp.work_rx, frame_len):
                    continue
                if half and b % TX_BATCH == 0:
                    bench_prefetch(d, k, half)             # as lan_capture_packet() does per batch
                if half:
                    bench_mac(dp.work_rx, BENCH_REMOTE_OUI, k)
                    bench_mac(dp.work_rx + 6, BENCH_LOCAL_OUI, k)
                    k = k + 1 if k + 1 < half else 0
                    if bridge_tx(d, 0, dp.work_rx, frame_len, now) != 0:
                        continue
                n = seal_frame(d, dp.work_tx, frame_len, TYPE_FRAME, 0, pkts)
            frames += BENCH_BATCH
            t1 = clock_s()
            now = clock_ms()
            if n < 0 or t1 - t0 >= seconds:
                break
        pthread_mutex_unlock(&d.send_lock)
    if n < 0:
        raise RuntimeError(f"seal failed: {COUNTER_NAMES[-n]}")
    return frames, t1 - t0


def bench_seal_trunk(Datapath dp, int frame_len, double seconds):
    """bench_seal for frames that carry a VLAN tag of each of the datapath's segments in turn
    (VLAN 10, 11, ...): the segment selection finds and takes the tag off, then the segment's
    filter, the seal and its counts, as lan_prepare() and the tx round do."""
    cdef dp_state *d = dp.d
    cdef pkt_ref pkts[MAX_FRAGS]
    cdef uint64_t frames = 0
    cdef int i, n = 0, s = 0, shift
    cdef uint32_t flen
    cdef uint8_t pcp
    cdef uint8_t *start
    cdef uint8_t heads[SEGMENTS_MAX * 16]
    cdef double t0, t1 = 0.0
    if not MIN_FRAME_LEN + VLAN_TAG_LEN <= frame_len <= MAX_FRAME_LEN:
        raise ValueError("frame_len out of range")
    if not d.tx.live:
        raise RuntimeError("no send session")
    for i in range(frame_len):
        dp.work_tx[i] = <uint8_t>(i * 7)
    for s in range(d.nsegs):
        memset(heads + s * 16, 2, 12)
        pkt_put_be16(heads + s * 16 + 12, ETH_P_8021Q)
        pkt_put_be16(heads + s * 16 + 14, <uint16_t>(d.seg[s].vid[0] if d.seg[s].ntags else 0))
    s = 0
    with nogil:
        pthread_mutex_lock(&d.send_lock)
        t0 = clock_s()
        while True:
            for _ in range(BENCH_BATCH):
                memcpy(dp.work_tx, heads + s * 16, 16)       # the next segment's tag, MACs in front
                s = s + 1 if s + 1 < d.nsegs else 0
                flen = frame_len
                shift = 0
                i = segment_select(d, 0, dp.work_tx, flen, &pcp)
                if i < 0:
                    continue
                start = segment_strip(d, i, dp.work_tx, &flen, &shift)
                if not filter_allows(d.filt[i][FILTER_NIC_INGRESS], start, flen):
                    continue
                n = seal_frame(d, start, flen, TYPE_FRAME, segment_byte(d.tx.seg_peer[i], pcp), pkts)
                segment_count(d, DIR_TX, i, flen)
            frames += BENCH_BATCH
            t1 = clock_s()
            if n < 0 or t1 - t0 >= seconds:
                break
        pthread_mutex_unlock(&d.send_lock)
    if n < 0:
        raise RuntimeError(f"seal failed: {COUNTER_NAMES[-n]}")
    return frames, t1 - t0


def bench_crypto_bound(Datapath dp, int frame_len, double seconds):
    """libcrypto's own cost for one frame at this level, with nothing of etun around it:
    one ChaCha20 pass over the frame and one HMAC per fragment."""
    cdef dp_state *d = dp.d
    cdef keyset *k = &d.tx.data
    cdef uint8_t head[HEADER_LEN]
    cdef uint8_t nonce[CHACHA_NONCE_LEN]
    cdef uint8_t tag[SHA256_LEN]
    cdef uint32_t n, q, r, i, off
    cdef uint64_t frames = 0
    cdef double t0, t1 = 0.0
    cdef int j, rc = 0
    if not MIN_FRAME_LEN <= frame_len <= MAX_FRAME_LEN or not d.tx.live:
        raise ValueError("frame_len out of range, or no send session")
    memset(head, 0, HEADER_LEN)
    memset(nonce, 0, CHACHA_NONCE_LEN)
    n = frag_count(frame_len, d.payload_max)
    q = frame_len // n
    r = frame_len % n
    with nogil:
        t0 = clock_s()
        while rc == 0:
            for j in range(BENCH_BATCH):
                if d.level == LEVEL_ENCRYPT:
                    wire_put_be48(nonce + NONCE_HEAD_LEN, frames + j)
                    rc = crypto_xor(k, nonce, dp.work_tx, dp.work_tx, frame_len)
                    if rc != 0:
                        break
                if d.level != LEVEL_NONE:
                    off = 0
                    for i in range(n):
                        rc = crypto_mac(&k.mac, head, HEADER_LEN, dp.work_tx + off, q + (i < r), tag)
                        if rc != 0:
                            break
                        off += q + (i < r)
                    if rc != 0:
                        break
            frames += BENCH_BATCH
            t1 = clock_s()
            if t1 - t0 >= seconds:
                break
    if rc != 0:
        raise RuntimeError(crypto_error("the libcrypto bound"))
    return frames, t1 - t0


cdef int bench_deliver(dp_state *d, frame_ref *out, int n, uint64_t now, bint bridged, bint counted) noexcept nogil:
    """What pump_deliver() does with a batch of opened frames, short of writing them: the
    bridge's word (which counts the frames it keeps) or, without it, the count; then let them
    go. Returns the frames kept."""
    cdef int i, kept = n
    if bridged:
        kept = pump_rx_bridge(d, out, n, now)
    elif counted:
        for i in range(n):
            segment_count(d, DIR_RX, segment_id(out[i].segment), out[i].length)
    for i in range(kept):
        open_release(d, &out[i])
    return kept


def bench_open(Datapath dp, datagrams, double seconds, bint filtered=False, bint bridged=False):
    """Open the given datagrams over and over for about `seconds`, in batches as the rx pump
    does (OUT_BATCH frames, each opened into its own buffer, delivered together).

    The replay windows are reset between rounds, which is the only thing the real datapath
    would not do. `filtered`: pass each frame through its segment's tunnel_ingress filter, count
    it for the segment and make the tags the segment pushes, as the rx pump does; `bridged`:
    each batch through the bridge too (the clock read once per round of datagrams, as the rx
    pump does).
    """
    cdef dp_state *d = dp.d
    cdef Py_ssize_t count = len(datagrams), total = 0, j
    cdef uint8_t *arena
    cdef uint32_t *offs
    cdef uint32_t *lens
    cdef frame_ref *out
    cdef uint8_t *scratch
    cdef uint64_t frames = 0
    cdef int rc = 0, k, i, bad = 0, s, nb = 0
    cdef uint8_t tags[VLAN_PATH_MAX * VLAN_TAG_LEN]
    cdef uint64_t now
    cdef double t0, t1 = 0.0
    for dg in datagrams:
        total += len(dg) + TAILROOM
    arena = <uint8_t *>calloc(total + TAILROOM, 1)
    offs = <uint32_t *>malloc(count * sizeof(uint32_t))
    lens = <uint32_t *>malloc(count * sizeof(uint32_t))
    out = <frame_ref *>malloc(OUT_BATCH * sizeof(frame_ref))
    scratch = <uint8_t *>malloc(<size_t>OUT_BATCH * SCRATCH_LEN)
    if arena == NULL or offs == NULL or lens == NULL or out == NULL or scratch == NULL:
        free(arena)
        free(offs)
        free(lens)
        free(out)
        free(scratch)
        raise MemoryError("bench arena")
    total = 0
    for j, dg in enumerate(datagrams):
        memcpy(arena + total, <const char *>dg, len(dg))
        offs[j] = <uint32_t>total
        lens[j] = <uint32_t>len(dg)
        total += len(dg) + TAILROOM
    with nogil:
        pthread_mutex_lock(&d.recv_lock)
        t0 = clock_s()
        while True:
            for k in range(RX_SESSIONS):
                replay_reset(&d.rx[k].ctl_window)
                for i in range(RX_INDICES):
                    replay_reset(&d.rx[k].idx[i].window)
            now = clock_ms()
            for j in range(count):
                rc = open_packet(d, arena + offs[j], lens[j], &out[nb], scratch + <size_t>nb * SCRATCH_LEN, NULL, 0)
                if rc == OPEN_FRAME:
                    s = segment_id(out[nb].segment)
                    if s >= d.nsegs or (filtered and not filter_allows(d.filt[s][FILTER_TUNNEL_INGRESS],
                                                                       out[nb].data, out[nb].length)):
                        open_release(d, &out[nb])
                        continue
                    if filtered:
                        segment_tags(&d.seg[s], segment_pcp(out[nb].segment), tags)
                    nb += 1
                    # A batch ends at OUT_BATCH frames, or sooner when its frames took every
                    # reassembly slot of their class, as in pump_rx_round().
                    if nb == OUT_BATCH or reasm_class_spent(&d.reasm, out[nb - 1].slot):
                        frames += bench_deliver(d, out, nb, now, bridged, filtered)
                        nb = 0
                elif rc < 0:
                    bad = -rc
            frames += bench_deliver(d, out, nb, now, bridged, filtered)
            nb = 0
            t1 = clock_s()
            if bad or t1 - t0 >= seconds:
                break
        pthread_mutex_unlock(&d.recv_lock)
    free(arena)
    free(offs)
    free(lens)
    free(out)
    free(scratch)
    if bad:
        raise RuntimeError(f"open failed: {COUNTER_NAMES[bad]}")
    return frames, t1 - t0
