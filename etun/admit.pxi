# The admission gate: which handshake, cookie and probe packets reach the control plane.
#
# The admission gate: which handshake, cookie and probe packets the rx pump hands to the control
# plane, decided before any Diffie-Hellman work (PROTOCOL.md §5.3, §7). Every check is cheap and
# comes in order of cost, and no budget is one a stranger can empty for the peer:
#
#   initiations (INIT): exact length -> our level -> mac1 (key file) -> not one seen lately (a
#       replay, dropped before it costs any budget) -> not under load: in; under load (more than
#       HS_PER_SEC a second, and for UNDER_LOAD_MS after): a valid mac2 (a cookie for this very
#       address and port) and that address's own budget, else a cookie reply goes back and the
#       message is dropped (under_load)
#   answers (RESP, COOKIE): exact length, our level, mac1 (RESP), the id of the initiation we
#       are waiting on -- a recorded answer to an earlier one costs nothing -- and a COOKIE that
#       opens under that initiation's mac1, then ANSWERS_PER_SEC, a budget for RESPs and one for
#       COOKIEs
#   probes and their replies: authentic ones (a tag under the probe key), not admitted before
#       (a ring of their tags), a probe's time within PROBE_AGE_MAX_MS of our wall clock, within
#       their address's budget and PROBE_PER_SEC (replies: PROBE_REPLIES_PER_SEC, a budget of
#       their own); others within FOREIGN_PER_SEC, a budget of their own

cdef enum:
    ADMIT = 1                     # admit_packet(): hand it to the control plane


cdef bint admit_init_seen(dp_state *d, const uint8_t *mac1) noexcept nogil:
    """Whether an initiation with this (verified) mac1 came lately; if not, remember it. mac1
    covers the whole message before it, so a copy of an INIT has its mac1 and a new INIT a new,
    unpredictable one: a recording replayed is dropped before it costs any budget, and no
    stranger can fill a slot with the mac1 of an INIT yet to come. One slot per value, chosen by
    its first bytes: a replay that finds its slot taken over by another INIT gets through to the
    load gate and the timestamp check, as it would without this table."""
    cdef uint8_t *slot = &d.init_seen[(pkt_be16(mac1) % INIT_SEEN_SLOTS) * MAC16_LEN]
    if memcmp(slot, mac1, MAC16_LEN) == 0:
        return True
    memcpy(slot, mac1, MAC16_LEN)
    return False


cdef int admit_init(engine_state *e, const uint8_t *pkt, uint32_t length, const uint8_t *src,
                    uint32_t srclen, uint64_t now) noexcept nogil:
    cdef dp_state *d = e.dp
    cdef uint8_t reply[COOKIE_LEN]
    cdef bint calm
    if length != INIT_LEN:
        return -DROP_MALFORMED
    if wire_level(pkt[0]) != d.level:
        open_refused(d, DROP_LEVEL_MISMATCH, pkt[0], src, srclen)
        return -DROP_LEVEL_MISMATCH
    if not cookie_mac1_ok(d, pkt):
        open_refused(d, DROP_AUTH, pkt[0], src, srclen)
        return -DROP_AUTH
    if admit_init_seen(d, pkt + INIT_LEN - 2 * MAC16_LEN):
        return -DROP_REPLAY
    calm = bucket_take(&d.hs_load, now, HS_PER_SEC, HS_BURST)
    if not calm:
        d.under_load_until_ms = now + UNDER_LOAD_MS
    if calm and now >= d.under_load_until_ms:
        return ADMIT
    if cookie_mac2_ok(d, pkt, src, srclen, now):
        if srclimit_take(d.hs_sources, d.srclimit_seed, src, srclen, now, SOURCE_PER_SEC, SOURCE_BURST):
            return ADMIT
        return -DROP_RATE_LIMIT
    # Under load and no cookie for this address: ask for one. The reply is smaller than the
    # message (no amplifier) and goes only where the message claims to come from.
    if cookie_reply(d, pkt, src, srclen, now, reply) == 0:
        if udp_sendto(e.udp_fd, reply, COOKIE_LEN, MSG_DONTWAIT, src, srclen) == COOKIE_LEN:
            d.ctr[DIR_TX][C_CONTROL] += 1
    return -DROP_UNDER_LOAD


cdef bint admit_cookie_opens(dp_state *d, const uint8_t *pkt) noexcept nogil:
    """Whether a COOKIE opens under the mac1 of our initiation in flight: only the responder
    we sent it to could seal it (an AEAD check, no Diffie-Hellman work)."""
    cdef uint8_t cookie[MAC16_LEN]
    cdef bint ok = cookie_open(d, pkt, d.hs_expect_mac1, cookie) == 0
    OPENSSL_cleanse(cookie, MAC16_LEN)
    return ok


cdef int admit_answer(dp_state *d, const uint8_t *pkt, uint32_t length, uint32_t want,
                      const uint8_t *src, uint32_t srclen, uint64_t now) noexcept nogil:
    """A RESP or COOKIE: only for the initiation we wait on."""
    if length != want:
        return -DROP_MALFORMED
    if wire_level(pkt[0]) != d.level:
        open_refused(d, DROP_LEVEL_MISMATCH, pkt[0], src, srclen)
        return -DROP_LEVEL_MISMATCH
    if wire_type(pkt[0]) == TYPE_RESP and not cookie_mac1_ok(d, pkt):
        open_refused(d, DROP_AUTH, pkt[0], src, srclen)
        return -DROP_AUTH
    if not d.hs_expecting or pkt_be32(pkt + HS_ID_AT) != d.hs_expect:
        return -DROP_REPLAY                   # late, or recorded: not for our initiation
    if wire_type(pkt[0]) == TYPE_COOKIE and not admit_cookie_opens(d, pkt):
        open_refused(d, DROP_AUTH, pkt[0], src, srclen)
        return -DROP_AUTH                     # forged by one who saw our INIT: costs no budget
    if bucket_take(&d.answers_in if wire_type(pkt[0]) == TYPE_RESP else &d.cookies_in, now, ANSWERS_PER_SEC,
                   ANSWERS_PER_SEC):
        return ADMIT
    return -DROP_RATE_LIMIT


cdef bint admit_probe_authentic(dp_state *d, const uint8_t *pkt, uint32_t length) noexcept nogil:
    """A verify-peer packet whose tag verifies under the probe key, whatever level it claims: a
    prober with our key file but another level learns of the mismatch (PROTOCOL.md §7)."""
    if wire_level(pkt[0]) == LEVEL_NONE:
        return False
    return crypto_tag_ok(&d.probe_mac, pkt, pkt + HEADER_LEN, length - HEADER_LEN - TAG_LEN,
                         pkt + length - TAG_LEN)


cdef bint admit_probe_seen(const dp_state *d, const uint8_t *tag) noexcept nogil:
    """Whether an authentic probe or reply with this tag was admitted lately: a recording
    replayed, from any address, costs nobody's budget. A probe is refused once 5 minutes old
    (admit_probe_timely), so a replay gets past this ring only if more than PROBE_SEEN_SLOTS
    (1,024) authentic probes were admitted in those 5 minutes: verify-peer sends a handful."""
    cdef uint32_t k
    for k in range(PROBE_SEEN_SLOTS):
        if memcmp(&d.probe_seen[k * TAG_LEN], tag, TAG_LEN) == 0:
            return True
    return False


cdef void admit_probe_remember(dp_state *d, const uint8_t *tag) noexcept nogil:
    memcpy(&d.probe_seen[d.probe_seen_next * TAG_LEN], tag, TAG_LEN)
    d.probe_seen_next = (d.probe_seen_next + 1) % PROBE_SEEN_SLOTS


cdef bint admit_probe_timely(const uint8_t *pkt, uint32_t length) noexcept nogil:
    """Whether an authentic PROBE's wall-clock time is within PROBE_AGE_MAX_MS of ours: an older
    recording is refused however many probes came since."""
    cdef uint64_t sent, now
    if length < PROBE_TIME_AT + 8 + TAG_LEN:
        return False
    sent = pkt_be64(pkt + PROBE_TIME_AT)
    now = clock_wall_ms()
    return (now - sent if now >= sent else sent - now) <= PROBE_AGE_MAX_MS


cdef int admit_packet(engine_state *e, const uint8_t *pkt, uint32_t length, const uint8_t *src,
                      uint32_t srclen) noexcept nogil:
    """ADMIT, or -DROP_* for a handshake, cookie or probe packet (open_packet() checked its
    version). Caller holds recv_lock."""
    cdef dp_state *d = e.dp
    cdef uint8_t ptype = wire_type(pkt[0])
    cdef uint64_t now = d.now_ms
    if e.standby and ptype != TYPE_PROBE_REPLY:
        return -DROP_STANDBY                 # a standby talks to nobody: not even a cookie reply
    if ptype == TYPE_INIT:
        return admit_init(e, pkt, length, src, srclen, now)
    if ptype == TYPE_RESP:
        return admit_answer(d, pkt, length, RESP_LEN, src, srclen, now)
    if ptype == TYPE_COOKIE:
        return admit_answer(d, pkt, length, COOKIE_LEN, src, srclen, now)
    # A probe or a reply: the smallest etun sends is PROBE_MIN_LEN, the largest below max_packet.
    if length < PROBE_MIN_LEN or length > CTL_MAX:
        return -DROP_MALFORMED
    if not admit_probe_authentic(d, pkt, length):
        return ADMIT if bucket_take(&d.foreign_in, now, FOREIGN_PER_SEC, FOREIGN_PER_SEC) else -DROP_RATE_LIMIT
    if admit_probe_seen(d, pkt + length - TAG_LEN):
        return -DROP_REPLAY
    if ptype == TYPE_PROBE_REPLY:
        if not bucket_take(&d.replies_in, now, PROBE_REPLIES_PER_SEC, PROBE_REPLIES_PER_SEC):
            return -DROP_RATE_LIMIT
    elif not admit_probe_timely(pkt, length):
        return -DROP_REPLAY
    elif not srclimit_take(d.probe_sources, d.srclimit_seed, src, srclen, now, PROBE_SOURCE_PER_SEC,
                           PROBE_SOURCE_PER_SEC) or not bucket_take(&d.probe_in, now, PROBE_PER_SEC,
                                                                    PROBE_PER_SEC):
        return -DROP_RATE_LIMIT
    admit_probe_remember(d, pkt + length - TAG_LEN)
    return ADMIT
