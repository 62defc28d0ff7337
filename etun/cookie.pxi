# mac1, mac2 and cookie replies (PROTOCOL.md §5.3), after WireGuard's.
#
# mac1, mac2 and cookie replies (PROTOCOL.md §5.3), after WireGuard's: what lets a responder under
# a flood of handshake messages spend no Diffie-Hellman work on senders that cannot receive at
# the address they send from.
#
#   mac1   = HMAC-SHA256-128(mac1_key, message up to mac1)        mac1_key from the key file
#   cookie = HMAC-SHA256-128(cookie secret, source address || port)   secret: random, 2 minutes
#   mac2   = HMAC-SHA256-128(cookie, INIT up to mac2)             zeros without a cookie
#   reply  = head (the INIT's id) | nonce 12 | ChaCha20-Poly1305(cookie_key, nonce, cookie,
#            ad = the INIT's mac1)

cdef enum:
    COOKIE_ADDR_MAX = 19          # family, IPv4 (4) or IPv6 (16) address, port (2)


cdef int cookie_address(const uint8_t *sa, uint32_t salen, uint8_t *out) noexcept nogil:
    """The exact source a cookie binds: family, address (v4-mapped ones as IPv4), port. Its
    length, or -1 for no usable address."""
    cdef uint16_t family
    if salen < 8:
        return -1
    family = srclimit_family(sa)
    if family == AF_INET:
        out[0] = 4
        memcpy(out + 1, sa + 4, 4)
        memcpy(out + 5, sa + 2, 2)
        return 7
    if family == AF_INET6 and salen >= 24:
        if memcmp(sa + 8, b"\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0:
            out[0] = 4
            memcpy(out + 1, sa + 20, 4)
            memcpy(out + 5, sa + 2, 2)
            return 7
        out[0] = 6
        memcpy(out + 1, sa + 8, 16)
        memcpy(out + 17, sa + 2, 2)
        return COOKIE_ADDR_MAX
    return -1


cdef int cookie_for(dp_state *d, const uint8_t *sa, uint32_t salen, uint64_t now_ms,
                    uint8_t *cookie) noexcept nogil:
    """The cookie of a source address under the current secret, drawn anew every 2 minutes."""
    cdef uint8_t addr[COOKIE_ADDR_MAX]
    cdef mac_state m
    cdef int n = cookie_address(sa, salen, addr), rc
    if n < 0:
        return -1
    if d.cookie_secret_ms == 0 or now_ms >= d.cookie_secret_ms + COOKIE_SECRET_MS:
        if crypto_random(d.cookie_secret, SECRET_LEN) != 0:
            return -1
        d.cookie_secret_ms = now_ms if now_ms else 1
    rc = crypto_mac_init(&m, d.cookie_secret, SECRET_LEN)
    if rc == 0:
        rc = crypto_mac16(&m, addr, n, cookie)
    OPENSSL_cleanse(&m, sizeof(mac_state))
    return rc


cdef inline uint32_t cookie_mac1_at(uint8_t ptype) noexcept nogil:
    """Where mac1 starts: an INIT ends in mac1 and mac2, a RESP in mac1 alone."""
    return INIT_LEN - 2 * MAC16_LEN if ptype == TYPE_INIT else RESP_LEN - MAC16_LEN


cdef bint cookie_mac1_ok(dp_state *d, const uint8_t *msg) noexcept nogil:
    """A handshake message's mac1, over every byte before it (its length was checked)."""
    cdef uint32_t at = cookie_mac1_at(wire_type(msg[0]))
    cdef uint8_t want[MAC16_LEN]
    if crypto_mac16(&d.mac1, msg, at, want) != 0:
        return False
    return CRYPTO_memcmp(want, msg + at, MAC16_LEN) == 0


cdef bint cookie_mac2_ok(dp_state *d, const uint8_t *msg, const uint8_t *sa, uint32_t salen,
                         uint64_t now_ms) noexcept nogil:
    """Whether an INIT's mac2 was made with the cookie of the address it came from."""
    cdef uint8_t cookie[MAC16_LEN]
    cdef uint8_t want[MAC16_LEN]
    cdef mac_state m
    cdef bint ok = False
    if cookie_for(d, sa, salen, now_ms, cookie) != 0:
        return False
    if crypto_mac_init(&m, cookie, MAC16_LEN) == 0 and crypto_mac16(&m, msg, INIT_LEN - MAC16_LEN, want) == 0:
        ok = CRYPTO_memcmp(want, msg + INIT_LEN - MAC16_LEN, MAC16_LEN) == 0
    OPENSSL_cleanse(&m, sizeof(mac_state))
    OPENSSL_cleanse(cookie, MAC16_LEN)
    return ok


cdef int cookie_reply(dp_state *d, const uint8_t *msg, const uint8_t *sa, uint32_t salen,
                      uint64_t now_ms, uint8_t *out) noexcept nogil:
    """The COOKIE_LEN-byte reply to an INIT: less than half its size (no amplifier)."""
    cdef uint8_t cookie[MAC16_LEN]
    cdef int rc
    if cookie_for(d, sa, salen, now_ms, cookie) != 0:
        return -1
    out[0] = wire_first_byte(d.level, TYPE_COOKIE)
    memset(out + 1, 0, 3)
    memcpy(out + HS_ID_AT, msg + HS_ID_AT, 4)    # the INIT's id, so its sender knows it
    rc = crypto_random(out + HS_HEAD_LEN, COOKIE_NONCE_LEN)
    if rc == 0:
        rc = crypto_aead(True, d.cookie_key, out + HS_HEAD_LEN, msg + INIT_LEN - 2 * MAC16_LEN, MAC16_LEN,
                         cookie, MAC16_LEN, out + HS_HEAD_LEN + COOKIE_NONCE_LEN)
    OPENSSL_cleanse(cookie, MAC16_LEN)
    return rc


cdef int cookie_open(dp_state *d, const uint8_t *reply, const uint8_t *mac1_sent,
                     uint8_t *cookie) noexcept nogil:
    """The cookie in a reply to our message whose mac1 was mac1_sent; -1 if it is not one."""
    return crypto_aead(False, d.cookie_key, reply + HS_HEAD_LEN, mac1_sent, MAC16_LEN,
                       reply + HS_HEAD_LEN + COOKIE_NONCE_LEN, MAC16_LEN + AEAD_TAG_LEN, cookie)
