# Known-answer primitives: the datapath's own ChaCha20, HMAC-SHA256 and HKDF-Expand, for Python.
#
# Known-answer primitives: the datapath's own ChaCha20, HMAC-SHA256 and HKDF-Expand, callable
# from Python so the start-up self-test (selftest.py) and the RFC vectors (tests/) check exactly
# the code that carries traffic. Not per packet.

def chacha20(key, nonce, data, unsigned int counter=0):
    """RFC 8439 ChaCha20 of `data` under a 32-byte key, 12-byte nonce and block counter."""
    cdef EVP_CIPHER_CTX *ctx
    cdef uint8_t iv[16]
    cdef int outl = 0
    cdef const uint8_t[:] inp = data
    cdef Py_ssize_t n = inp.shape[0]
    key = crypto_secret(key, "key")
    if len(nonce) != 12:
        raise ValueError("nonce must be 12 bytes")
    pkt_put_le32(iv, counter)                  # the block counter is little-endian (RFC 8439 §2.4)
    nonce_bytes = bytes(nonce)
    memcpy(iv + 4, <const char *>nonce_bytes, 12)
    out = PyBytes_FromStringAndSize(NULL, n)
    ctx = EVP_CIPHER_CTX_new()
    if ctx == NULL:
        raise MemoryError(crypto_openssl_error("EVP_CIPHER_CTX_new"))
    try:
        if EVP_EncryptInit_ex(ctx, EVP_chacha20(), NULL, <const uint8_t *>PyBytes_AS_STRING(key), iv) != 1:
            raise RuntimeError(crypto_openssl_error("EVP_EncryptInit_ex"))
        if n and EVP_EncryptUpdate(ctx, <uint8_t *>PyBytes_AS_STRING(out), &outl, &inp[0], <int>n) != 1:
            raise RuntimeError(crypto_openssl_error("EVP_EncryptUpdate"))
    finally:
        EVP_CIPHER_CTX_free(ctx)
    return out


def hmac_sha256(key, data):
    """HMAC-SHA256 (RFC 2104) through the datapath's precomputed-pad path; 32 bytes."""
    cdef mac_state m
    cdef uint8_t out[SHA256_LEN]
    cdef const uint8_t[:] k = bytes(key)
    cdef const uint8_t[:] msg = bytes(data)
    if crypto_mac_init(&m, &k[0] if k.shape[0] else NULL, k.shape[0]) != 0:
        raise RuntimeError(crypto_error("HMAC key setup"))
    if crypto_mac(&m, &msg[0] if msg.shape[0] else NULL, msg.shape[0], NULL, 0, out) != 0:
        raise RuntimeError(crypto_error("HMAC"))
    return PyBytes_FromStringAndSize(<char *>out, SHA256_LEN)


def hkdf_expand(prk, info, int length):
    """HKDF-Expand with SHA-256 (RFC 5869 §2.3), as the datapath derives per-index keys."""
    cdef const uint8_t[:] p = bytes(prk)
    cdef const uint8_t[:] i = bytes(info)
    if not 0 < length <= 255 * SHA256_LEN or i.shape[0] > HKDF_INFO_MAX or p.shape[0] == 0:
        raise ValueError(f"hkdf_expand: length 1..{255 * SHA256_LEN}, info up to {HKDF_INFO_MAX} "
                         "bytes, non-empty prk")
    out = PyBytes_FromStringAndSize(NULL, length)
    if crypto_hkdf_expand(&p[0], p.shape[0], &i[0] if i.shape[0] else NULL, i.shape[0],
                          <uint8_t *>PyBytes_AS_STRING(out), length) != 0:
        raise RuntimeError(crypto_error("HKDF-Expand"))
    return out
