# The Noise handshake NNpsk0 with X25519, ChaCha20-Poly1305 and SHA-256: state, messages, Split().
#
# The Noise handshake Noise_NNpsk0_25519_ChaChaPoly_SHA256 (noiseprotocol.org, revision 34):
# the symmetric state (ck, h, k, n), the two messages, and Split(). Every secret lives in a
# noise_state and is wiped by noise_wipe(); the ephemeral private key never leaves libcrypto.
#
#   NNpsk0:  -> psk, e        initiator: MixKeyAndHash(psk); e (MixHash, MixKey); payload 1
#            <- e, ee         responder: e (MixHash, MixKey); MixKey(DH(e, re)); payload 2
#
# With a PSK every `e` is also mixed into the key (Noise §9.2), so message 1's payload is
# encrypted and authenticated under the PSK before any Diffie-Hellman: a responder rejects a
# stranger's message 1 without X25519 work. Message 2 follows the ephemeral-ephemeral DH, which
# is what gives the session keys forward secrecy.

cdef const char *NOISE_NAME = b"Noise_NNpsk0_25519_ChaChaPoly_SHA256"
cdef const char *NOISE_PROLOGUE = b"etun/v2"        # PROTOCOL.md §5.1


cdef int noise_hash(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
                    uint8_t *out) noexcept nogil:
    """SHA-256 of a || b."""
    cdef SHA256_CTX c
    if SHA256_Init(&c) != 1:
        return crypto_fail(b"SHA256_Init")
    if SHA256_Update(&c, a, alen) != 1:
        return crypto_fail(b"SHA256_Update")
    if blen and SHA256_Update(&c, b, blen) != 1:
        return crypto_fail(b"SHA256_Update")
    if SHA256_Final(out, &c) != 1:
        return crypto_fail(b"SHA256_Final")
    return 0


cdef int noise_hkdf(const uint8_t *ck, const uint8_t *ikm, size_t ikmlen, uint8_t *out1,
                    uint8_t *out2, uint8_t *out3) noexcept nogil:
    """Noise's HKDF (§4.3): two outputs, or three when out3 is not NULL."""
    cdef mac_state m
    cdef uint8_t temp[SHA256_LEN]
    cdef uint8_t buf[SHA256_LEN + 1]
    cdef int rc = -1
    if crypto_mac_init(&m, ck, SHA256_LEN) != 0 or crypto_mac(&m, ikm, ikmlen, NULL, 0, temp) != 0:
        OPENSSL_cleanse(&m, sizeof(mac_state))
        return -1
    OPENSSL_cleanse(&m, sizeof(mac_state))
    if crypto_mac_init(&m, temp, SHA256_LEN) == 0:
        buf[0] = 1
        if crypto_mac(&m, buf, 1, NULL, 0, out1) == 0:
            memcpy(buf, out1, SHA256_LEN)
            buf[SHA256_LEN] = 2
            if crypto_mac(&m, buf, SHA256_LEN + 1, NULL, 0, out2) == 0:
                rc = 0
                if out3 != NULL:
                    memcpy(buf, out2, SHA256_LEN)
                    buf[SHA256_LEN] = 3
                    rc = crypto_mac(&m, buf, SHA256_LEN + 1, NULL, 0, out3)
    OPENSSL_cleanse(&m, sizeof(mac_state))
    OPENSSL_cleanse(temp, SHA256_LEN)
    OPENSSL_cleanse(buf, sizeof(buf))
    return rc


cdef inline int noise_mix_hash(noise_state *s, const uint8_t *data, size_t length) noexcept nogil:
    return noise_hash(s.h, SHA256_LEN, data, length, s.h)


cdef int noise_mix_key(noise_state *s, const uint8_t *ikm, size_t length) noexcept nogil:
    cdef uint8_t ck[SHA256_LEN]
    cdef int rc = noise_hkdf(s.ck, ikm, length, ck, s.k, NULL)
    if rc == 0:
        memcpy(s.ck, ck, SHA256_LEN)
        s.n = 0
        s.has_k = True
    OPENSSL_cleanse(ck, SHA256_LEN)
    return rc


cdef int noise_mix_key_and_hash(noise_state *s, const uint8_t *ikm, size_t length) noexcept nogil:
    cdef uint8_t ck[SHA256_LEN]
    cdef uint8_t th[SHA256_LEN]
    cdef int rc = noise_hkdf(s.ck, ikm, length, ck, th, s.k)
    if rc == 0:
        memcpy(s.ck, ck, SHA256_LEN)
        s.n = 0
        s.has_k = True
        rc = noise_mix_hash(s, th, SHA256_LEN)
    OPENSSL_cleanse(ck, SHA256_LEN)
    OPENSSL_cleanse(th, SHA256_LEN)
    return rc


cdef inline void noise_nonce(uint64_t n, uint8_t *nonce) noexcept nogil:
    """ChaChaPoly's nonce (§12.3): 32 bits of zeros, then n as 64 bits little-endian."""
    cdef int i
    memset(nonce, 0, 4)
    for i in range(8):
        nonce[4 + i] = <uint8_t>(n >> (8 * i))


cdef int noise_encrypt_and_hash(noise_state *s, const uint8_t *pt, size_t length,
                                uint8_t *out) noexcept nogil:
    """out: ciphertext || tag (length + 16 bytes). Every etun message has a key by now."""
    cdef uint8_t nonce[AEAD_NONCE_LEN]
    if not s.has_k:
        return crypto_fail(b"Noise EncryptAndHash (no key)")
    noise_nonce(s.n, nonce)
    if crypto_aead(True, s.k, nonce, s.h, SHA256_LEN, pt, length, out) != 0:
        return -1
    s.n += 1
    return noise_mix_hash(s, out, length + AEAD_TAG_LEN)


cdef int noise_decrypt_and_hash(noise_state *s, const uint8_t *ct, size_t length,
                                uint8_t *out) noexcept nogil:
    """out: the plaintext (length - 16 bytes); -1 when the tag does not verify (n unchanged)."""
    cdef uint8_t nonce[AEAD_NONCE_LEN]
    if not s.has_k:
        return crypto_fail(b"Noise DecryptAndHash (no key)")
    noise_nonce(s.n, nonce)
    if crypto_aead(False, s.k, nonce, s.h, SHA256_LEN, ct, length, out) != 0:
        return -1
    s.n += 1
    return noise_mix_hash(s, ct, length)


cdef int noise_init(noise_state *s, const uint8_t *psk) noexcept nogil:
    """InitializeSymmetric(name), MixHash(prologue), then the psk token (psk0: first)."""
    cdef size_t namelen = strlen(NOISE_NAME)
    memset(s, 0, sizeof(noise_state))
    # The name is longer than HASHLEN (36 > 32 bytes): h = HASH(name), not the padded name.
    if noise_hash(<const uint8_t *>NOISE_NAME, namelen, NULL, 0, s.h) != 0:
        return -1
    memcpy(s.ck, s.h, SHA256_LEN)
    if noise_mix_hash(s, <const uint8_t *>NOISE_PROLOGUE, strlen(NOISE_PROLOGUE)) != 0:
        return -1
    return noise_mix_key_and_hash(s, psk, SECRET_LEN)


cdef int noise_ephemeral(noise_state *s, const uint8_t *fixed) noexcept nogil:
    """Generate our ephemeral key pair (or take `fixed`, 32 private bytes: tests only)."""
    cdef EVP_PKEY_CTX *ctx
    cdef size_t publen = X25519_LEN
    if fixed != NULL:
        s.e = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, fixed, X25519_LEN)
        if s.e == NULL:
            return crypto_fail(b"EVP_PKEY_new_raw_private_key")
    else:
        ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_X25519, NULL)
        if ctx == NULL:
            return crypto_fail(b"EVP_PKEY_CTX_new_id")
        if EVP_PKEY_keygen_init(ctx) != 1:
            EVP_PKEY_CTX_free(ctx)
            return crypto_fail(b"EVP_PKEY_keygen_init")
        if EVP_PKEY_keygen(ctx, &s.e) != 1:
            EVP_PKEY_CTX_free(ctx)
            return crypto_fail(b"EVP_PKEY_keygen")
        EVP_PKEY_CTX_free(ctx)
    if EVP_PKEY_get_raw_public_key(s.e, s.e_pub, &publen) != 1 or publen != X25519_LEN:
        return crypto_fail(b"EVP_PKEY_get_raw_public_key")
    return 0


cdef int noise_dh(noise_state *s, uint8_t *out) noexcept nogil:
    """X25519(e, re) into out; an all-zero result (a low-order point) is refused."""
    cdef EVP_PKEY *peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, s.re, X25519_LEN)
    cdef EVP_PKEY_CTX *ctx
    cdef size_t outlen = X25519_LEN
    cdef uint8_t acc = 0
    cdef int i, rc = -1
    if peer == NULL:
        return crypto_fail(b"EVP_PKEY_new_raw_public_key")
    ctx = EVP_PKEY_CTX_new(s.e, NULL)
    if ctx == NULL:
        crypto_fail(b"EVP_PKEY_CTX_new")
    elif EVP_PKEY_derive_init(ctx) != 1:
        crypto_fail(b"EVP_PKEY_derive_init")
    elif EVP_PKEY_derive_set_peer(ctx, peer) != 1:
        crypto_fail(b"EVP_PKEY_derive_set_peer")
    elif EVP_PKEY_derive(ctx, out, &outlen) != 1 or outlen != X25519_LEN:
        crypto_fail(b"EVP_PKEY_derive")
    else:
        for i in range(X25519_LEN):
            acc |= out[i]
        rc = 0 if acc else crypto_fail(b"X25519 (low-order point)")
    EVP_PKEY_CTX_free(ctx)
    EVP_PKEY_free(peer)
    return rc


cdef int noise_send_e(noise_state *s, uint8_t *out) noexcept nogil:
    """The `e` token, written: our ephemeral public key, hashed, and (PSK mode) mixed in."""
    memcpy(out, s.e_pub, X25519_LEN)
    if noise_mix_hash(s, s.e_pub, X25519_LEN) != 0:
        return -1
    return noise_mix_key(s, s.e_pub, X25519_LEN)


cdef int noise_receive_e(noise_state *s, const uint8_t *inp) noexcept nogil:
    """The `e` token, read."""
    memcpy(s.re, inp, X25519_LEN)
    if noise_mix_hash(s, s.re, X25519_LEN) != 0:
        return -1
    return noise_mix_key(s, s.re, X25519_LEN)


cdef int noise_ee(noise_state *s) noexcept nogil:
    """The `ee` token: MixKey(DH(e, re))."""
    cdef uint8_t dh[X25519_LEN]
    cdef int rc = noise_dh(s, dh)
    if rc == 0:
        rc = noise_mix_key(s, dh, X25519_LEN)
    OPENSSL_cleanse(dh, X25519_LEN)
    return rc


cdef int noise_split(noise_state *s, uint8_t *k1, uint8_t *k2) noexcept nogil:
    """Split(): k1 keys initiator -> responder, k2 responder -> initiator."""
    return noise_hkdf(s.ck, NULL, 0, k1, k2, NULL)


cdef void noise_wipe(noise_state *s) noexcept nogil:
    """Forget the handshake: the ephemeral private key (libcrypto clears it on free) and every
    secret of the symmetric state."""
    if s.e != NULL:
        EVP_PKEY_free(s.e)
        s.e = NULL
    OPENSSL_cleanse(s, sizeof(noise_state))
