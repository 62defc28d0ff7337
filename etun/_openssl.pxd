# Extern-only libcrypto declarations: just what the datapath calls, nothing more.
# SHA256_* are deprecated in OpenSSL 3 but remain the fastest way to reuse precomputed
# HMAC inner/outer states (the EVP_MAC path costs a provider dispatch per packet).

cdef extern from "openssl/evp.h" nogil:
    ctypedef struct EVP_CIPHER_CTX:
        pass
    ctypedef struct EVP_CIPHER:
        pass
    ctypedef struct ENGINE:
        pass
    EVP_CIPHER_CTX *EVP_CIPHER_CTX_new()
    void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX *ctx)
    const EVP_CIPHER *EVP_chacha20()
    int EVP_EncryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *impl,
                           const unsigned char *key, const unsigned char *iv)
    int EVP_EncryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl,
                          const unsigned char *inp, int inl)

cdef extern from "openssl/sha.h" nogil:
    ctypedef struct SHA256_CTX:
        pass
    int SHA256_Init(SHA256_CTX *c)
    int SHA256_Update(SHA256_CTX *c, const void *data, size_t length)
    int SHA256_Final(unsigned char *md, SHA256_CTX *c)
    unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md)

cdef extern from "openssl/crypto.h" nogil:
    int CRYPTO_memcmp(const void *a, const void *b, size_t length)
    void OPENSSL_cleanse(void *ptr, size_t length)
    const char *OpenSSL_version(int t)
    int OPENSSL_VERSION

cdef extern from "openssl/err.h" nogil:
    unsigned long ERR_get_error()
    void ERR_error_string_n(unsigned long e, char *buf, size_t length)
