# A Datapath's state built and torn down.
#
# A Datapath's state built and torn down: every table, lock, buffer and cipher context allocated
# once when the Datapath is made, and every key wiped before the memory goes back.

cdef list datapath_keysets(dp_state *d):
    """Every keyset of the datapath, as addresses: each owns one cipher context."""
    cdef int k, j
    out = [<size_t>&d.tx.ctl, <size_t>&d.tx.data, <size_t>&d.tx_next.ctl, <size_t>&d.tx_next.data]
    for k in range(RX_SESSIONS):
        out.append(<size_t>&d.rx[k].ctl)
        for j in range(RX_INDICES):
            out.append(<size_t>&d.rx[k].idx[j].keys)
    return out


cdef datapath_init(Datapath dp, int level, int max_packet, uint64_t reassembly_bytes, int reassembly_timeout_ms):
    """Allocate and set up dp's state for checked arguments: no sessions, one segment carrying all
    of port 0 with allow-all filters, a passive bridge (it learns only) until [bridge] comes."""
    cdef dp_state *d
    dp.d = d = <dp_state *>calloc(1, sizeof(dp_state))
    dp.work_tx = <uint8_t *>calloc(1, MAX_PAYLOAD_LEN + TAILROOM)
    dp.work_rx = <uint8_t *>calloc(1, UDP_DATAGRAM_MAX + TAILROOM)
    dp.scratch = <uint8_t *>calloc(1, SCRATCH_LEN)
    if d == NULL or dp.work_tx == NULL or dp.work_rx == NULL or dp.scratch == NULL:
        raise MemoryError("datapath state")
    d.level = level
    d.max_packet = max_packet
    d.tag_len = TAG_LEN if level != LEVEL_NONE else 0
    d.payload_max = frag_payload_max(level, max_packet)
    d.rx_cur = d.rx_prev = d.rx_next = -1
    d.last_rx_session = -1
    d.now_ms = clock_ms()
    bucket_fill(&d.answers_in, ANSWERS_PER_SEC, ANSWERS_PER_SEC, d.now_ms)
    bucket_fill(&d.cookies_in, ANSWERS_PER_SEC, ANSWERS_PER_SEC, d.now_ms)
    bucket_fill(&d.hs_load, HS_PER_SEC, HS_BURST, d.now_ms)
    bucket_fill(&d.probe_in, PROBE_PER_SEC, PROBE_PER_SEC, d.now_ms)
    bucket_fill(&d.replies_in, PROBE_REPLIES_PER_SEC, PROBE_REPLIES_PER_SEC, d.now_ms)
    bucket_fill(&d.foreign_in, FOREIGN_PER_SEC, FOREIGN_PER_SEC, d.now_ms)
    if pthread_mutex_init(&d.send_lock, NULL) != 0:
        raise OSError("pthread_mutex_init(send_lock) failed")
    if pthread_mutex_init(&d.recv_lock, NULL) != 0:
        raise OSError("pthread_mutex_init(recv_lock) failed")
    if pthread_mutex_init(&d.trace_lock, NULL) != 0:
        raise OSError("pthread_mutex_init(trace_lock) failed")
    if pthread_mutex_init(&d.filter_lock, NULL) != 0:
        raise OSError("pthread_mutex_init(filter_lock) failed")
    d.hs_sources = <srclimit_entry *>calloc(SRCLIMIT_SLOTS, sizeof(srclimit_entry))
    d.probe_sources = <srclimit_entry *>calloc(SRCLIMIT_SLOTS, sizeof(srclimit_entry))
    if d.hs_sources == NULL or d.probe_sources == NULL:
        raise MemoryError("source budgets")
    if crypto_random(<uint8_t *>&d.srclimit_seed, sizeof(uint64_t)) != 0:
        raise RuntimeError(crypto_error("a hash seed"))
    for c in datapath_keysets(d):
        (<keyset *><size_t>c).cipher = EVP_CIPHER_CTX_new()
        if (<keyset *><size_t>c).cipher == NULL:
            raise MemoryError(crypto_openssl_error("EVP_CIPHER_CTX_new"))
    if reasm_init(&d.reasm, reassembly_bytes, reassembly_timeout_ms) != 0:
        raise MemoryError("reassembly table")
    d.macs = <bridge_entry *>table_alloc(BRIDGE_ENTRIES * sizeof(bridge_entry))
    if d.macs == NULL:
        raise MemoryError("MAC table")
    if pthread_mutex_init(&d.bridge_lock, NULL) != 0:
        raise OSError("pthread_mutex_init(bridge_lock) failed")
    if crypto_random(<uint8_t *>&d.bridge_seed, sizeof(uint64_t)) != 0:
        raise RuntimeError(crypto_error("a hash seed"))
    dp.filter_rules = {}
    d.nsegs = 1
    d.seg[0].carry_all = True
    bridge_configure(d, False, MAC_AGE_DEFAULT_S * 1000, LOOP_OFF, 0)
    filter_install(dp, FILTER_NIC_INGRESS, True, [], 0, 0)
    filter_install(dp, FILTER_TUNNEL_INGRESS, True, [], 0, 0)


cdef void datapath_free(Datapath dp):
    """Wipe every key and give back everything datapath_init() allocated."""
    cdef dp_state *d = dp.d
    cdef int k
    if d != NULL:
        for c in datapath_keysets(d):
            # Nothing to report a failed wipe to here; EVP_CIPHER_CTX_free cleanses the key
            # schedule as it frees the context, and OPENSSL_cleanse below takes the MAC pads.
            crypto_keys_wipe(<keyset *><size_t>c)
            EVP_CIPHER_CTX_free((<keyset *><size_t>c).cipher)
        reasm_free(&d.reasm)
        for k in range(SEGMENTS_MAX):
            filter_free(d.filt[k][FILTER_NIC_INGRESS])
            filter_free(d.filt[k][FILTER_TUNNEL_INGRESS])
        free(d.hs_sources)
        free(d.probe_sources)
        table_free(d.macs, BRIDGE_ENTRIES * sizeof(bridge_entry))
        pthread_mutex_destroy(&d.bridge_lock)
        pthread_mutex_destroy(&d.send_lock)
        pthread_mutex_destroy(&d.recv_lock)
        pthread_mutex_destroy(&d.trace_lock)
        pthread_mutex_destroy(&d.filter_lock)
        OPENSSL_cleanse(d, sizeof(dp_state))
        free(d)
        dp.d = NULL
    free(dp.work_tx)
    free(dp.work_rx)
    free(dp.scratch)
