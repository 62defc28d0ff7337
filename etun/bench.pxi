# The loops behind `etun bench`: seal, open and libcrypto's own bound, in process, GIL released,
# no I/O. Each runs batches of 256 frames until `seconds` passed and returns (frames, elapsed).

cdef enum:
    BENCH_BATCH = 256             # frames between two clock reads


def bench_seal(Datapath dp, int frame_len, double seconds, bint filtered=False):
    """Seal frames of `frame_len` bytes for about `seconds`. `filtered`: pass each frame
    through the nic_ingress filter first, as the pump does."""
    cdef dp_state *d = dp.d
    cdef filter_table *filt = d.filt[FILTER_NIC_INGRESS]
    cdef pkt_ref pkts[MAX_FRAGS]
    cdef uint64_t frames = 0
    cdef int i, n = 0
    cdef double t0, t1 = 0.0
    if not MIN_FRAME_LEN <= frame_len <= MAX_FRAME_LEN:
        raise ValueError("frame_len out of range")
    if not d.send_ready:
        raise RuntimeError("no send session")
    for i in range(frame_len):
        dp.work_tx[i] = <uint8_t>(i * 7)
        dp.work_rx[i] = <uint8_t>(i * 7)
    with nogil:
        pthread_mutex_lock(&d.send_lock)
        t0 = clock_s()
        while True:
            for _ in range(BENCH_BATCH):
                # The filter reads a pristine copy: seal_frame encrypts work_tx in place.
                if filtered and not filter_allows(filt, dp.work_rx, frame_len):
                    continue
                n = seal_frame(d, dp.work_tx, frame_len, TYPE_FRAME, pkts)
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
    cdef keyset *k = &d.send_keys
    cdef uint8_t head[HEADER_LEN]
    cdef uint8_t tag[SHA256_LEN]
    cdef uint32_t n, q, r, i, off
    cdef uint64_t frames = 0
    cdef double t0, t1 = 0.0
    cdef int j, rc = 0
    if not MIN_FRAME_LEN <= frame_len <= MAX_FRAME_LEN or not d.send_ready:
        raise ValueError("frame_len out of range, or no send session")
    memset(head, 0, HEADER_LEN)
    n = frag_count(frame_len, d.payload_max)
    q = frame_len // n
    r = frame_len % n
    with nogil:
        t0 = clock_s()
        while rc == 0:
            for j in range(BENCH_BATCH):
                if d.level == LEVEL_ENCRYPT:
                    rc |= crypto_xor(k, frames + j, dp.work_tx, dp.work_tx, frame_len)
                if d.level != LEVEL_NONE:
                    off = 0
                    for i in range(n):
                        rc |= crypto_mac(&k.mac, head, HEADER_LEN, dp.work_tx + off, q + (i < r), tag)
                        off += q + (i < r)
            frames += BENCH_BATCH
            t1 = clock_s()
            if t1 - t0 >= seconds:
                break
    if rc != 0:
        raise RuntimeError(crypto_error("the libcrypto bound"))
    return frames, t1 - t0


def bench_open(Datapath dp, datagrams, double seconds, bint filtered=False):
    """Open the given datagrams over and over for about `seconds`.

    The replay windows are reset between rounds, which is the only thing the real datapath
    would not do. `filtered`: pass each frame through the tunnel_ingress filter.
    """
    cdef dp_state *d = dp.d
    cdef filter_table *filt = d.filt[FILTER_TUNNEL_INGRESS]
    cdef Py_ssize_t count = len(datagrams), total = 0, j
    cdef uint8_t *arena
    cdef uint32_t *offs
    cdef uint32_t *lens
    cdef frame_ref f
    cdef uint64_t frames = 0
    cdef int rc = 0, k, bad = 0
    cdef double t0, t1 = 0.0
    for dg in datagrams:
        total += len(dg) + TAILROOM
    arena = <uint8_t *>calloc(total + TAILROOM, 1)
    offs = <uint32_t *>malloc(count * sizeof(uint32_t))
    lens = <uint32_t *>malloc(count * sizeof(uint32_t))
    if arena == NULL or offs == NULL or lens == NULL:
        free(arena)
        free(offs)
        free(lens)
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
            for k in range(RX_SLOTS):
                replay_reset(&d.rxk[k].window)
            for j in range(count):
                rc = open_packet(d, arena + offs[j], lens[j], &f, dp.scratch, NULL, 0)
                if rc == OPEN_FRAME:
                    if not filtered or filter_allows(filt, f.data, f.length):
                        frames += 1
                    open_release(d, &f)
                elif rc < 0:
                    bad = -rc
            t1 = clock_s()
            if bad or t1 - t0 >= seconds:
                break
        pthread_mutex_unlock(&d.recv_lock)
    free(arena)
    free(offs)
    free(lens)
    if bad:
        raise RuntimeError(f"open failed: {COUNTER_NAMES[bad]}")
    return frames, t1 - t0
