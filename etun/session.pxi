# Sessions in the datapath: each direction's keys and the key indices they rotate through.
#
# Sessions in the datapath: the keys one handshake gave each direction, and the key indices the
# sessions rotate through (docs/PROTOCOL.md §4).
#
# Receive side: up to three sessions, by role. `current` carries the traffic; `previous` is the
# one before, kept for packets still in flight until PREVIOUS_GRACE_MS after the switch; `next`
# is a session we answered the peer's handshake for, which becomes current only when a packet
# under it authenticates (key confirmation: a replayed handshake message can install nothing
# that carries traffic). Each session holds the keys of key indices c - 1, c and c + 1 of its
# current index c, derived when an authenticated packet moves c; a forged packet can trigger no
# derivation. SESSION messages carry the sender's index in their header and are sealed under
# the session's own index-free keys, so a receiver that missed rotations catches up from them.
#
# Send side: `tx`, and `tx_next`, the send half of the session in `next`, switched to together.
#
#   index secret(i) = HKDF-Expand(index_root, "etun/v2 index" || be32(i), 32)   (from the key file)
#   data keys(S, i) = HKDF-Expand(HMAC(S, index secret(i)), "etun/v2 data", 64)  (S: Split output)
#   ctl keys(S)     = HKDF-Expand(S, "etun/v2 session", 64)

cdef const char *SESSION_INFO_INDEX = b"etun/v2 index"
cdef const char *SESSION_INFO_DATA = b"etun/v2 data"
cdef const char *SESSION_INFO_CTL = b"etun/v2 session"
cdef uint32_t SESSION_INDEX_MAX = 0xFFFFFFFF   # key_index is 4 bytes, and indices never wrap

cdef enum:
    PREVIOUS_GRACE_MS = 10000     # the previous session still opens packets this long


cdef int session_okm(const uint8_t *secret, const char *label, bint with_index, uint32_t index,
                     uint8_t *out, size_t outlen) noexcept nogil:
    """HKDF-Expand(secret, label [|| be32(index)], outlen)."""
    cdef uint8_t info[HKDF_INFO_MAX]
    cdef size_t n = strlen(label)
    memcpy(info, label, n)
    if with_index:
        pkt_put_be32(info + n, index)
        n += 4
    return crypto_hkdf_expand(secret, SECRET_LEN, info, n, out, outlen)


cdef int session_data_keys(const uint8_t *index_root, keyset *k, const uint8_t *secret,
                           uint32_t index) noexcept nogil:
    """Install the data keys of key index `index` of the session with secret S."""
    cdef uint8_t isec[SECRET_LEN]
    cdef uint8_t prk[SHA256_LEN]
    cdef uint8_t okm[2 * SECRET_LEN]
    cdef mac_state m
    cdef int rc = -1
    if session_okm(index_root, SESSION_INFO_INDEX, True, index, isec, SECRET_LEN) == 0:
        # HKDF-Extract(salt = S, ikm = index secret): fresh per handshake, and per index.
        if crypto_mac_init(&m, secret, SECRET_LEN) == 0 and crypto_mac(&m, isec, SECRET_LEN, NULL, 0, prk) == 0:
            if crypto_hkdf_expand(prk, SHA256_LEN, <const uint8_t *>SESSION_INFO_DATA,
                                  strlen(SESSION_INFO_DATA), okm, sizeof(okm)) == 0:
                rc = crypto_keys_set(k, okm, index)
    OPENSSL_cleanse(isec, SECRET_LEN)
    OPENSSL_cleanse(prk, SHA256_LEN)
    OPENSSL_cleanse(okm, sizeof(okm))
    OPENSSL_cleanse(&m, sizeof(mac_state))
    return rc


cdef int session_ctl_keys(keyset *k, const uint8_t *secret) noexcept nogil:
    cdef uint8_t okm[2 * SECRET_LEN]
    cdef int rc = session_okm(secret, SESSION_INFO_CTL, False, 0, okm, sizeof(okm))
    if rc == 0:
        rc = crypto_keys_set(k, okm, 0)
    OPENSSL_cleanse(okm, sizeof(okm))
    return rc


cdef void session_keys_wipe(dp_state *d, int direction, keyset *k) noexcept nogil:
    if crypto_keys_wipe(k) != 0:
        drop_count(d, direction, DROP_CRYPTO_ERROR, 1)


# -- send side -------------------------------------------------------------------------------

cdef void session_tx_wipe(dp_state *d, tx_session *t) noexcept nogil:
    session_keys_wipe(d, DIR_TX, &t.ctl)
    session_keys_wipe(d, DIR_TX, &t.data)
    OPENSSL_cleanse(t.secret, SECRET_LEN)
    OPENSSL_cleanse(t.index_root, SECRET_LEN)
    t.live = False


cdef void session_tx_segments(dp_state *d, tx_session *t, uint32_t peer_gen) noexcept nogil:
    """The segment map a new send session starts with: the one in use, if the peer is the same
    instance (its segments cannot have changed); none for another instance until it names its
    segments (SESSION messages). Generation 0 is a peer without a control plane (bench and
    tests): its segments are ours, id for id."""
    cdef int s
    if peer_gen == 0:
        for s in range(SEGMENTS_MAX):
            t.seg_peer[s] = <uint8_t>s
    elif t != &d.tx and d.tx.peer_gen == peer_gen:
        memcpy(t.seg_peer, d.tx.seg_peer, SEGMENTS_MAX)
    elif t.peer_gen != peer_gen:
        memset(t.seg_peer, SEGMENT_NONE, SEGMENTS_MAX)
    t.peer_gen = peer_gen


cdef int session_tx_set(dp_state *d, tx_session *t, const uint8_t *secret, uint8_t peer_id,
                        uint32_t index, uint32_t peer_gen, uint64_t now_ms) noexcept nogil:
    """Fill a send session from its secret; the counter starts at 0 (the keys are new)."""
    session_tx_wipe(d, t)
    session_tx_segments(d, t, peer_gen)
    memcpy(t.secret, secret, SECRET_LEN)
    memcpy(t.index_root, d.index_root, SECRET_LEN)
    t.peer_id = peer_id
    t.index = index
    t.counter = 0
    t.born_ms = now_ms
    if d.level != LEVEL_NONE:
        if session_ctl_keys(&t.ctl, t.secret) != 0 or session_data_keys(t.index_root, &t.data, t.secret, index) != 0:
            session_tx_wipe(d, t)
            return -1
    t.live = True
    return 0


cdef void session_tx_move(dp_state *d, tx_session *dst, tx_session *src) noexcept nogil:
    """dst takes src's session (its keys' contexts are swapped, not copied); src is emptied."""
    cdef EVP_CIPHER_CTX *c1 = dst.ctl.cipher
    cdef EVP_CIPHER_CTX *c2 = dst.data.cipher
    session_tx_wipe(d, dst)
    memcpy(dst, src, sizeof(tx_session))
    src.ctl.cipher = c1
    src.data.cipher = c2
    src.live = False
    OPENSSL_cleanse(src.secret, SECRET_LEN)
    OPENSSL_cleanse(src.index_root, SECRET_LEN)
    OPENSSL_cleanse(&src.ctl.mac, sizeof(mac_state))
    OPENSSL_cleanse(&src.data.mac, sizeof(mac_state))
    src.ctl.live = src.data.live = False


# -- receive side ----------------------------------------------------------------------------

cdef inline bint session_in_role(const dp_state *d, int k) noexcept nogil:
    return k == d.rx_cur or k == d.rx_prev or k == d.rx_next


cdef int session_rx_free_slot(const dp_state *d) noexcept nogil:
    cdef int k
    for k in range(RX_SESSIONS):
        if not session_in_role(d, k):
            return k
    return -1


cdef void session_rx_wipe(dp_state *d, int *role) noexcept nogil:
    cdef rx_session *s
    cdef int j
    if role[0] < 0:
        return
    s = &d.rx[role[0]]
    session_keys_wipe(d, DIR_RX, &s.ctl)
    for j in range(RX_INDICES):
        session_keys_wipe(d, DIR_RX, &s.idx[j].keys)
    OPENSSL_cleanse(s.secret, SECRET_LEN)
    OPENSSL_cleanse(s.index_root, SECRET_LEN)
    s.live = False
    role[0] = -1


cdef int session_rx_advance(dp_state *d, rx_session *s, uint32_t index) noexcept nogil:
    """Make `index` the session's current key index, holding index - 1, index and index + 1
    (keys already held are kept, the others derived). Only ever after a packet authenticated."""
    cdef uint32_t want[RX_INDICES]
    cdef bint have[RX_INDICES]
    cdef bint used[RX_INDICES]
    cdef int j, k, n = 0
    s.cur = index
    if d.level == LEVEL_NONE:
        return 0
    # index - 1 below 0 and index + 1 past 2^32 - 1 do not exist: indices never wrap.
    if index > 0:
        want[n] = index - 1
        n += 1
    want[n] = index
    n += 1
    if index < SESSION_INDEX_MAX:
        want[n] = index + 1
        n += 1
    for j in range(RX_INDICES):
        used[j] = False
        have[j] = False
    for j in range(n):
        for k in range(RX_INDICES):
            if not used[k] and s.idx[k].keys.live and s.idx[k].keys.index == want[j]:
                used[k] = True
                have[j] = True
                break
    for k in range(RX_INDICES):
        if not used[k] and s.idx[k].keys.live:
            session_keys_wipe(d, DIR_RX, &s.idx[k].keys)
    for j in range(n):
        if have[j]:
            continue
        for k in range(RX_INDICES):
            if not used[k]:
                used[k] = True
                replay_reset(&s.idx[k].window)
                if session_data_keys(s.index_root, &s.idx[k].keys, s.secret, want[j]) != 0:
                    drop_count(d, DIR_RX, DROP_CRYPTO_ERROR, 1)
                    return -1
                break
    return 0


cdef int session_rx_install(dp_state *d, const uint8_t *secret, uint8_t id, uint32_t index,
                            bint confirmed, uint64_t now_ms) noexcept nogil:
    """A receive session from a handshake: current at once when we initiated it (the peer's
    answer proved it holds the keys), else next until a packet under it authenticates."""
    cdef int k, j
    cdef rx_session *s
    session_rx_wipe(d, &d.rx_next)
    if confirmed:
        session_rx_wipe(d, &d.rx_prev)
    k = session_rx_free_slot(d)
    if k < 0:
        return -1
    s = &d.rx[k]
    memcpy(s.secret, secret, SECRET_LEN)
    memcpy(s.index_root, d.index_root, SECRET_LEN)
    s.id = id
    d.rx_gen += 1
    s.gen = d.rx_gen
    s.born_ms = now_ms
    s.confirmed = confirmed
    replay_reset(&s.ctl_window)
    for j in range(RX_INDICES):
        replay_reset(&s.idx[j].window)
    s.live = True
    # Every key first, a role only then: a session that fails to derive (libcrypto) is wiped
    # whole and never opens a packet.
    if (d.level != LEVEL_NONE and session_ctl_keys(&s.ctl, s.secret) != 0) \
            or session_rx_advance(d, s, index) != 0:
        session_rx_wipe(d, &k)
        return -1
    if confirmed:
        d.rx_prev = d.rx_cur
        d.rx_cur = k
        d.prev_until_ms = now_ms + PREVIOUS_GRACE_MS
    else:
        d.rx_next = k
    return 0


cdef void session_confirm(dp_state *d) noexcept nogil:
    """A packet under `next` authenticated: the peer holds its keys. It becomes current on
    both sides of the datapath; the current one becomes previous. Caller holds recv_lock."""
    session_rx_wipe(d, &d.rx_prev)
    d.rx_prev = d.rx_cur
    d.rx_cur = d.rx_next
    d.rx_next = -1
    d.rx[d.rx_cur].confirmed = True
    d.prev_until_ms = d.now_ms + PREVIOUS_GRACE_MS
    d.confirmed_ms = d.now_ms
    pthread_mutex_lock(&d.send_lock)          # lock order: recv_lock, then send_lock
    if d.tx_next.live:
        session_tx_move(d, &d.tx, &d.tx_next)
    pthread_mutex_unlock(&d.send_lock)


cdef int session_rx_find(const dp_state *d, uint8_t id) noexcept nogil:
    """The slot of the live session the peer sends to under `id` (header byte 8), or -1."""
    if d.rx_cur >= 0 and d.rx[d.rx_cur].live and d.rx[d.rx_cur].id == id:
        return d.rx_cur
    if d.rx_next >= 0 and d.rx[d.rx_next].live and d.rx[d.rx_next].id == id:
        return d.rx_next
    if d.rx_prev >= 0 and d.rx[d.rx_prev].live and d.rx[d.rx_prev].id == id:
        return d.rx_prev
    return -1


cdef int session_rx_index(rx_session *s, uint32_t index) noexcept nogil:
    """The idx slot holding key index `index`, or -1."""
    cdef int j
    for j in range(RX_INDICES):
        if s.idx[j].keys.live and s.idx[j].keys.index == index:
            return j
    return -1


cdef void session_expire(dp_state *d) noexcept nogil:
    """The previous session's grace period ended: its keys go. Caller holds recv_lock."""
    if d.rx_prev >= 0 and d.now_ms >= d.prev_until_ms:
        session_rx_wipe(d, &d.rx_prev)


# -- for the control plane (Datapath's session methods): keys in, keys out, the roles --------

cdef session_set_static(dp_state *d, bytes psk, bytes mac1_key, bytes cookie_key, bytes probe_key,
                        bytes index_root):
    """The long-term secrets (each SECRET_LEN bytes), under both locks: the handshakes after
    this one use them. All or nothing: the HMAC states are made first, so a libcrypto failure
    leaves every old secret in place."""
    cdef mac_state mac1, probe_mac
    cdef int rc = crypto_mac_init(&mac1, <const uint8_t *>PyBytes_AS_STRING(mac1_key), SECRET_LEN)
    if rc == 0:
        rc = crypto_mac_init(&probe_mac, <const uint8_t *>PyBytes_AS_STRING(probe_key), SECRET_LEN)
    if rc == 0:
        pthread_mutex_lock(&d.recv_lock)
        pthread_mutex_lock(&d.send_lock)
        memcpy(d.psk, PyBytes_AS_STRING(psk), SECRET_LEN)
        memcpy(d.cookie_key, PyBytes_AS_STRING(cookie_key), SECRET_LEN)
        memcpy(d.index_root, PyBytes_AS_STRING(index_root), SECRET_LEN)
        d.mac1 = mac1
        d.probe_mac = probe_mac
        pthread_mutex_unlock(&d.send_lock)
        pthread_mutex_unlock(&d.recv_lock)
    OPENSSL_cleanse(&mac1, sizeof(mac_state))
    OPENSSL_cleanse(&probe_mac, sizeof(mac_state))
    if rc != 0:
        raise RuntimeError(crypto_error("HMAC key setup"))


cdef int session_install(dp_state *d, const uint8_t *send_secret, const uint8_t *recv_secret,
                         bint initiator, uint8_t local_id, uint8_t peer_id, uint32_t send_index,
                         uint32_t recv_index, uint32_t peer_gen) noexcept:
    """A finished handshake's two secrets in: the initiator's send session carries traffic at
    once, the responder's waits in tx_next for key confirmation. 0, or -1 (crypto_failed)."""
    cdef int rc
    pthread_mutex_lock(&d.recv_lock)
    clock_advance(d, None)
    rc = session_rx_install(d, recv_secret, local_id, recv_index, initiator, d.now_ms)
    if rc == 0:
        pthread_mutex_lock(&d.send_lock)
        if initiator:
            session_tx_wipe(d, &d.tx_next)
            rc = session_tx_set(d, &d.tx, send_secret, peer_id, send_index, peer_gen, d.now_ms)
        else:
            rc = session_tx_set(d, &d.tx_next, send_secret, peer_id, send_index, peer_gen, d.now_ms)
        pthread_mutex_unlock(&d.send_lock)
    pthread_mutex_unlock(&d.recv_lock)
    return rc


cdef session_set_send(dp_state *d, bytes secret, uint8_t peer_id, uint32_t index):
    """Send under a raw session secret (bench and tests: no handshake)."""
    cdef int rc
    pthread_mutex_lock(&d.send_lock)
    rc = session_tx_set(d, &d.tx, <const uint8_t *>PyBytes_AS_STRING(secret), peer_id, index, 0, clock_ms())
    pthread_mutex_unlock(&d.send_lock)
    if rc != 0:
        raise RuntimeError(crypto_error("deriving send keys"))


cdef session_set_recv(dp_state *d, bytes secret, uint8_t session_id, uint32_t index, bint confirmed):
    """Receive under a raw session secret (bench and tests: no handshake)."""
    cdef int rc
    pthread_mutex_lock(&d.recv_lock)
    clock_advance(d, None)
    rc = session_rx_install(d, <const uint8_t *>PyBytes_AS_STRING(secret), session_id, index, confirmed,
                            d.now_ms)
    pthread_mutex_unlock(&d.recv_lock)
    if rc != 0:
        raise RuntimeError(crypto_error("deriving receive keys"))


cdef session_rotate(dp_state *d):
    """The send side to its session's next key index (at level none only the number moves)."""
    cdef int rc = 0
    pthread_mutex_lock(&d.send_lock)
    if not d.tx.live:
        pthread_mutex_unlock(&d.send_lock)
        raise RuntimeError("no send session to rotate")
    if d.tx.index == SESSION_INDEX_MAX:
        # 2**32 rotations (16,000 years at the default rekey): the index space is spent.
        pthread_mutex_unlock(&d.send_lock)
        raise OverflowError("key index space exhausted")
    if d.level != LEVEL_NONE:
        rc = session_data_keys(d.tx.index_root, &d.tx.data, d.tx.secret, d.tx.index + 1)
    if rc == 0:
        d.tx.index += 1
    else:
        session_tx_wipe(d, &d.tx)
    pthread_mutex_unlock(&d.send_lock)
    if rc != 0:
        raise RuntimeError(crypto_error("deriving send keys"))


cdef void session_drop_all(dp_state *d, bint keep_next) noexcept:
    """Wipe every session both ways; `keep_next` spares the ones under way."""
    pthread_mutex_lock(&d.recv_lock)
    session_rx_wipe(d, &d.rx_prev)
    session_rx_wipe(d, &d.rx_cur)
    if not keep_next:
        session_rx_wipe(d, &d.rx_next)
    pthread_mutex_lock(&d.send_lock)
    session_tx_wipe(d, &d.tx)
    if not keep_next:
        session_tx_wipe(d, &d.tx_next)
    pthread_mutex_unlock(&d.send_lock)
    if not keep_next:
        d.hs_expecting = False
    pthread_mutex_unlock(&d.recv_lock)


cdef dict session_roles(dp_state *d):
    """What each receive role and the send side hold, as Datapath.sessions() shows it."""
    roles = {}
    pthread_mutex_lock(&d.recv_lock)
    try:                                       # a Python error here must not leave a pump locked out
        for name, k in (("current", d.rx_cur), ("previous", d.rx_prev), ("next", d.rx_next)):
            roles[name] = (d.rx[k].id, d.rx[k].born_ms, bool(d.rx[k].confirmed)) if k >= 0 else None
        pthread_mutex_lock(&d.send_lock)
        try:
            roles["sending"] = (d.tx.peer_id, d.tx.index, d.tx.born_ms) if d.tx.live else None
        finally:
            pthread_mutex_unlock(&d.send_lock)
        roles["confirmed_ms"] = d.confirmed_ms
    finally:
        pthread_mutex_unlock(&d.recv_lock)
    return roles
