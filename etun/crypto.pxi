# ChaCha20 and HMAC-SHA256 through libcrypto: key setup, the per-frame cipher pass, tags, HKDF-Expand.

cdef const char *CRYPTO_INDEX_INFO = b"etun/v1 index"   # PROTOCOL.md §4.1
cdef enum:
    CRYPTO_INDEX_INFO_LEN = 13


cdef int crypto_mac_init(mac_state *m, const uint8_t *key, size_t keylen) noexcept nogil:
    """Absorb the HMAC pads (RFC 2104) once, so each packet costs only its own blocks."""
    cdef uint8_t k[64]
    cdef uint8_t pad[64]
    cdef int i, ok
    memset(k, 0, 64)
    if keylen > 64:
        if SHA256(key, keylen, k) == NULL:
            return -1
    else:
        memcpy(k, key, keylen)
    for i in range(64):
        pad[i] = k[i] ^ 0x36
    ok = SHA256_Init(&m.inner) & SHA256_Update(&m.inner, pad, 64)
    for i in range(64):
        pad[i] = k[i] ^ 0x5c
    ok &= SHA256_Init(&m.outer) & SHA256_Update(&m.outer, pad, 64)
    OPENSSL_cleanse(k, 64)
    OPENSSL_cleanse(pad, 64)
    return 0 if ok == 1 else -1


cdef inline int crypto_mac(const mac_state *m, const uint8_t *a, size_t alen,
                           const uint8_t *b, size_t blen, uint8_t *out32) noexcept nogil:
    """HMAC-SHA256 of a || b into out32 (32 bytes)."""
    cdef SHA256_CTX c
    cdef uint8_t inner[32]
    cdef int ok
    memcpy(&c, &m.inner, sizeof(SHA256_CTX))
    ok = SHA256_Update(&c, a, alen)
    if blen:
        ok &= SHA256_Update(&c, b, blen)
    ok &= SHA256_Final(inner, &c)
    memcpy(&c, &m.outer, sizeof(SHA256_CTX))
    ok &= SHA256_Update(&c, inner, 32) & SHA256_Final(out32, &c)
    return 0 if ok == 1 else -1


cdef inline bint crypto_tag_ok(const mac_state *m, const uint8_t *head, const uint8_t *body,
                               size_t blen, const uint8_t *tag) noexcept nogil:
    """Whether the 16-byte tag matches; constant time in the tag bytes."""
    cdef uint8_t want[32]
    if crypto_mac(m, head, HEADER_LEN, body, blen, want) != 0:
        return False
    return CRYPTO_memcmp(want, tag, TAG_LEN) == 0


cdef int crypto_hkdf_expand(const uint8_t *prk, size_t prklen, const uint8_t *info, size_t infolen,
                            uint8_t *out, size_t outlen) noexcept nogil:
    """HKDF-Expand (RFC 5869 §2.3) with HMAC-SHA256; info up to 128 bytes, out up to 255 blocks."""
    cdef mac_state m
    cdef uint8_t buf[32 + 128 + 1]
    cdef uint8_t t[32]
    cdef size_t tlen = 0, done = 0, take
    cdef int block = 1
    if infolen > 128 or outlen > 255 * 32:
        return -1
    if crypto_mac_init(&m, prk, prklen) != 0:
        return -1
    while done < outlen:
        memcpy(buf, t, tlen)
        memcpy(buf + tlen, info, infolen)
        buf[tlen + infolen] = <uint8_t>block
        if crypto_mac(&m, buf, tlen + infolen + 1, NULL, 0, t) != 0:
            return -1
        tlen = 32
        take = outlen - done if outlen - done < 32 else 32
        memcpy(out + done, t, take)
        done += take
        block += 1
    OPENSSL_cleanse(t, 32)
    OPENSSL_cleanse(buf, sizeof(buf))
    OPENSSL_cleanse(&m, sizeof(mac_state))
    return 0


cdef int crypto_keys_derive(keyset *k, const uint8_t *secret, uint32_t index) noexcept nogil:
    """Install the ChaCha20 and HMAC keys of `index` under a session secret (PROTOCOL.md §4.1)."""
    cdef uint8_t info[CRYPTO_INDEX_INFO_LEN + 4]
    cdef uint8_t okm[64]
    cdef uint8_t iv[16]
    cdef int rc = -1
    k.live = False
    memcpy(info, CRYPTO_INDEX_INFO, CRYPTO_INDEX_INFO_LEN)
    wire_put_be32(info + CRYPTO_INDEX_INFO_LEN, index)
    memset(iv, 0, 16)
    if crypto_hkdf_expand(secret, KEY_LEN, info, sizeof(info), okm, 64) == 0:
        if EVP_EncryptInit_ex(k.cipher, EVP_chacha20(), NULL, okm, iv) == 1:
            if crypto_mac_init(&k.mac, okm + 32, 32) == 0:
                k.index = index
                k.live = True
                rc = 0
    OPENSSL_cleanse(okm, 64)
    return rc


cdef void crypto_keys_wipe(keyset *k) noexcept nogil:
    cdef uint8_t zero[32]
    cdef uint8_t iv[16]
    memset(zero, 0, 32)
    memset(iv, 0, 16)
    k.live = False
    OPENSSL_cleanse(&k.mac, sizeof(mac_state))
    if k.cipher != NULL:
        # Overwrite the expanded key schedule inside the context.
        EVP_EncryptInit_ex(k.cipher, EVP_chacha20(), NULL, zero, iv)


cdef inline int crypto_xor(keyset *k, uint64_t base, const uint8_t *inp, uint8_t *out,
                           uint32_t length) noexcept nogil:
    """ChaCha20 over a whole frame with nonce = key_index || base (PROTOCOL.md §3.1).

    The length is rounded up to whole 64-byte blocks, which spares libcrypto its partial-block
    path: callers guarantee TAILROOM readable bytes after `inp` and writable bytes after `out`.
    """
    cdef uint8_t iv[16]
    cdef int outl
    memset(iv, 0, 4)                  # block counter 0, little-endian
    wire_put_be32(iv + 4, k.index)
    wire_put_be64(iv + 8, base)
    if EVP_EncryptInit_ex(k.cipher, NULL, NULL, NULL, iv) != 1:
        return -1
    if EVP_EncryptUpdate(k.cipher, out, &outl, inp,
                         <int>((length + CHACHA_BLOCK - 1) & ~(CHACHA_BLOCK - 1))) != 1:
        return -1
    return 0
