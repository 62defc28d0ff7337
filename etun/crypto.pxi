# ChaCha20 and HMAC-SHA256 through libcrypto: key setup, the per-frame cipher pass, tags, HKDF-Expand.
#
# Every libcrypto call is checked on its own line. A failure returns -1 and leaves the name of the
# call in crypto_failed, which the Python-facing code puts in its error (crypto_error()).

cdef const char *crypto_failed = b"libcrypto"           # the call that failed last

cdef enum:
    SHA256_BLOCK = 64
    SHA256_LEN = 32
    HKDF_INFO_MAX = 128           # bytes of info crypto_hkdf_expand() takes


cdef inline int crypto_fail(const char *call) noexcept nogil:
    global crypto_failed
    crypto_failed = call
    return -1


cdef int crypto_mac_init(mac_state *m, const uint8_t *key, size_t keylen) noexcept nogil:
    """Absorb the HMAC pads (RFC 2104) once, so each packet costs only its own blocks."""
    cdef uint8_t k[SHA256_BLOCK]
    cdef uint8_t pad[SHA256_BLOCK]
    cdef int i, rc = -1
    memset(k, 0, SHA256_BLOCK)
    if keylen > SHA256_BLOCK:
        if SHA256(key, keylen, k) == NULL:
            return crypto_fail(b"SHA256")
    else:
        memcpy(k, key, keylen)
    for i in range(SHA256_BLOCK):
        pad[i] = k[i] ^ 0x36
    if SHA256_Init(&m.inner) != 1:
        crypto_fail(b"SHA256_Init")
    elif SHA256_Update(&m.inner, pad, SHA256_BLOCK) != 1:
        crypto_fail(b"SHA256_Update")
    else:
        for i in range(SHA256_BLOCK):
            pad[i] = k[i] ^ 0x5c
        if SHA256_Init(&m.outer) != 1:
            crypto_fail(b"SHA256_Init")
        elif SHA256_Update(&m.outer, pad, SHA256_BLOCK) != 1:
            crypto_fail(b"SHA256_Update")
        else:
            rc = 0
    OPENSSL_cleanse(k, SHA256_BLOCK)
    OPENSSL_cleanse(pad, SHA256_BLOCK)
    return rc


cdef inline int crypto_mac(const mac_state *m, const uint8_t *a, size_t alen,
                           const uint8_t *b, size_t blen, uint8_t *out32) noexcept nogil:
    """HMAC-SHA256 of a || b into out32 (SHA256_LEN bytes)."""
    cdef SHA256_CTX c
    cdef uint8_t inner[SHA256_LEN]
    memcpy(&c, &m.inner, sizeof(SHA256_CTX))
    if SHA256_Update(&c, a, alen) != 1:
        return crypto_fail(b"SHA256_Update")
    if blen and SHA256_Update(&c, b, blen) != 1:
        return crypto_fail(b"SHA256_Update")
    if SHA256_Final(inner, &c) != 1:
        return crypto_fail(b"SHA256_Final")
    memcpy(&c, &m.outer, sizeof(SHA256_CTX))
    if SHA256_Update(&c, inner, SHA256_LEN) != 1:
        return crypto_fail(b"SHA256_Update")
    if SHA256_Final(out32, &c) != 1:
        return crypto_fail(b"SHA256_Final")
    return 0


cdef inline bint crypto_tag_ok(const mac_state *m, const uint8_t *head, const uint8_t *body,
                               size_t blen, const uint8_t *tag) noexcept nogil:
    """Whether the 16-byte tag matches; constant time in the tag bytes."""
    cdef uint8_t want[SHA256_LEN]
    if crypto_mac(m, head, HEADER_LEN, body, blen, want) != 0:
        return False
    return CRYPTO_memcmp(want, tag, TAG_LEN) == 0


cdef int crypto_hkdf_expand(const uint8_t *prk, size_t prklen, const uint8_t *info, size_t infolen,
                            uint8_t *out, size_t outlen) noexcept nogil:
    """HKDF-Expand (RFC 5869 §2.3) with HMAC-SHA256; info up to HKDF_INFO_MAX bytes, out up to
    255 blocks."""
    cdef mac_state m
    cdef uint8_t buf[SHA256_LEN + HKDF_INFO_MAX + 1]
    cdef uint8_t t[SHA256_LEN]
    cdef size_t tlen = 0, done = 0, take
    cdef int block = 1, rc = 0
    if infolen > HKDF_INFO_MAX or outlen > 255 * SHA256_LEN:
        return crypto_fail(b"HKDF-Expand (length)")
    if crypto_mac_init(&m, prk, prklen) != 0:
        return -1
    while done < outlen:
        memcpy(buf, t, tlen)
        memcpy(buf + tlen, info, infolen)
        buf[tlen + infolen] = <uint8_t>block
        rc = crypto_mac(&m, buf, tlen + infolen + 1, NULL, 0, t)
        if rc != 0:
            break
        tlen = SHA256_LEN
        take = outlen - done if outlen - done < SHA256_LEN else SHA256_LEN
        memcpy(out + done, t, take)
        done += take
        block += 1
    OPENSSL_cleanse(t, SHA256_LEN)
    OPENSSL_cleanse(buf, sizeof(buf))
    OPENSSL_cleanse(&m, sizeof(mac_state))
    return rc


cdef int crypto_keys_set(keyset *k, const uint8_t *okm, uint32_t index) noexcept nogil:
    """Install a key index's ChaCha20 key (okm[0:32]) and HMAC key (okm[32:64])."""
    cdef uint8_t iv[16]
    k.live = False
    memset(iv, 0, 16)
    if EVP_EncryptInit_ex(k.cipher, EVP_chacha20(), NULL, okm, iv) != 1:
        return crypto_fail(b"EVP_EncryptInit_ex")
    if crypto_mac_init(&k.mac, okm + SECRET_LEN, SECRET_LEN) != 0:
        return -1
    k.index = index
    k.live = True
    return 0


cdef int crypto_keys_wipe(keyset *k) noexcept nogil:
    """Forget a key index: its MAC pads, and the ChaCha20 key schedule inside the context."""
    cdef uint8_t zero[SECRET_LEN]
    cdef uint8_t iv[16]
    memset(zero, 0, SECRET_LEN)
    memset(iv, 0, 16)
    k.live = False
    OPENSSL_cleanse(&k.mac, sizeof(mac_state))
    if k.cipher != NULL and EVP_EncryptInit_ex(k.cipher, EVP_chacha20(), NULL, zero, iv) != 1:
        # Cannot fail for a context that held ChaCha20 before; if it ever did, the old key
        # schedule would stay in memory, so say so rather than pretend.
        return crypto_fail(b"EVP_EncryptInit_ex")
    return 0


cdef inline int crypto_xor(keyset *k, const uint8_t *nonce, const uint8_t *inp, uint8_t *out,
                           uint32_t length) noexcept nogil:
    """ChaCha20 over a whole frame with a 12-byte nonce (PROTOCOL.md §3.1: header bytes 4..15
    of the frame's first fragment).

    The length is rounded up to whole 64-byte blocks, which spares libcrypto its partial-block
    path: callers guarantee TAILROOM readable bytes after `inp` and writable bytes after `out`.
    """
    cdef uint8_t iv[16]
    cdef int outl
    memset(iv, 0, 4)                  # block counter 0, little-endian
    memcpy(iv + 4, nonce, CHACHA_NONCE_LEN)
    if EVP_EncryptInit_ex(k.cipher, NULL, NULL, NULL, iv) != 1:
        return crypto_fail(b"EVP_EncryptInit_ex")
    if EVP_EncryptUpdate(k.cipher, out, &outl, inp,
                         <int>((length + CHACHA_BLOCK - 1) & ~(CHACHA_BLOCK - 1))) != 1:
        return crypto_fail(b"EVP_EncryptUpdate")
    return 0


cdef enum:
    AEAD_NONCE_LEN = 12
    AEAD_TAG_LEN = 16
    AEAD_MAX = 256                # the longest plaintext crypto_aead_*() takes (handshake payloads)


cdef int crypto_aead(bint seal, const uint8_t *key, const uint8_t *nonce, const uint8_t *ad,
                     size_t adlen, const uint8_t *inp, size_t length, uint8_t *out) noexcept nogil:
    """ChaCha20-Poly1305 (RFC 8439): seal `length` bytes into out (ciphertext || 16-byte tag), or
    open `length` bytes of ciphertext || tag into out (length - 16 bytes of plaintext). Returns 0,
    or -1 when the tag does not verify or libcrypto fails. Only for handshake-sized messages."""
    cdef EVP_CIPHER_CTX *ctx
    cdef int outl = 0, rc = -1
    cdef size_t n = length if seal else length - AEAD_TAG_LEN
    if length > AEAD_MAX + (0 if seal else AEAD_TAG_LEN) or (not seal and length < AEAD_TAG_LEN):
        return crypto_fail(b"ChaCha20-Poly1305 (length)")
    ctx = EVP_CIPHER_CTX_new()
    if ctx == NULL:
        return crypto_fail(b"EVP_CIPHER_CTX_new")
    if seal:
        if EVP_EncryptInit_ex(ctx, EVP_chacha20_poly1305(), NULL, key, nonce) != 1:
            crypto_fail(b"EVP_EncryptInit_ex")
        elif adlen and EVP_EncryptUpdate(ctx, NULL, &outl, ad, <int>adlen) != 1:
            crypto_fail(b"EVP_EncryptUpdate")
        elif n and EVP_EncryptUpdate(ctx, out, &outl, inp, <int>n) != 1:
            crypto_fail(b"EVP_EncryptUpdate")
        elif EVP_EncryptFinal_ex(ctx, out + n, &outl) != 1:
            crypto_fail(b"EVP_EncryptFinal_ex")
        elif EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, AEAD_TAG_LEN, out + n) != 1:
            crypto_fail(b"EVP_CIPHER_CTX_ctrl")
        else:
            rc = 0
    else:
        if EVP_DecryptInit_ex(ctx, EVP_chacha20_poly1305(), NULL, key, nonce) != 1:
            crypto_fail(b"EVP_DecryptInit_ex")
        elif adlen and EVP_DecryptUpdate(ctx, NULL, &outl, ad, <int>adlen) != 1:
            crypto_fail(b"EVP_DecryptUpdate")
        elif n and EVP_DecryptUpdate(ctx, out, &outl, inp, <int>n) != 1:
            crypto_fail(b"EVP_DecryptUpdate")
        elif EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, AEAD_TAG_LEN, <void *>(inp + n)) != 1:
            crypto_fail(b"EVP_CIPHER_CTX_ctrl")
        elif EVP_DecryptFinal_ex(ctx, out + n, &outl) != 1:
            # The tag does not verify: wipe whatever plaintext was produced.
            OPENSSL_cleanse(out, n)
            crypto_fail(b"ChaCha20-Poly1305 tag")
        else:
            rc = 0
    EVP_CIPHER_CTX_free(ctx)
    return rc


cdef inline int crypto_mac16(const mac_state *m, const uint8_t *data, size_t length,
                             uint8_t *out16) noexcept nogil:
    """HMAC-SHA256-128 (RFC 4868) of data: mac1, mac2, cookies, probe tags."""
    cdef uint8_t full[SHA256_LEN]
    if crypto_mac(m, data, length, NULL, 0, full) != 0:
        return -1
    memcpy(out16, full, TAG_LEN)
    return 0


cdef int crypto_random(uint8_t *out, int length) noexcept nogil:
    if RAND_bytes(out, length) != 1:
        return crypto_fail(b"RAND_bytes")
    return 0


cdef str crypto_openssl_error(str call):
    """The pending libcrypto error as one line naming the call that failed."""
    cdef char buf[256]
    cdef unsigned long e = ERR_get_error()
    if e == 0:
        return f"{call} failed"
    ERR_error_string_n(e, buf, sizeof(buf))
    return f"{call} failed: {buf.decode(errors='replace')}"


cdef str crypto_error(str what):
    """An error line for a crypto.pxi function that failed: `what`, and the libcrypto call."""
    return f"{what}: " + crypto_openssl_error(crypto_failed.decode())


cdef bytes crypto_secret(object secret, str what):
    """`secret` as bytes, if it is SECRET_LEN bytes (a key, a session secret); else ValueError."""
    if not isinstance(secret, (bytes, bytearray)) or len(secret) != SECRET_LEN:
        raise ValueError(f"{what} must be {SECRET_LEN} bytes")
    return bytes(secret)
