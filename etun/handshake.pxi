# Handshake messages on the wire (PROTOCOL.md §5) and the Handshake the control plane drives.
#
# Handshake messages on the wire (PROTOCOL.md §5): the Noise messages of noise.pxi framed as INIT
# and RESP with their id, mac1 and mac2, and the Python-facing Handshake the control plane
# drives. The session keys a handshake ends with go straight into the datapath
# (Datapath.install_session); they never become Python objects.
#
#   INIT (124): b0 | 0 0 0 | id 4 | e 32 | AEAD(payload 1: 36) 52 | mac1 16 | mac2 16
#   RESP  (96): b0 | 0 0 0 | id 4 | e 32 | AEAD(payload 2: 24) 40 | mac1 16
#   COOKIE(52): b0 | 0 0 0 | id 4 | nonce 12 | AEAD(cookie 16) 32          (cookie.pxi)

cdef enum:
    HS_NEW = 0
    HS_STARTED = 1                # INIT written (initiator) or read (responder)
    HS_DONE = 2                   # keys split, ready for install_session()


cdef class Handshake:
    """One handshake, as initiator (initiate, then finish) or responder (respond, then reply)."""

    cdef noise_state s
    cdef Datapath dp
    cdef bint initiator
    cdef int stage
    cdef uint32_t hs_id
    cdef uint8_t mac1[MAC16_LEN]          # our INIT's mac1: a cookie reply is bound to it
    cdef uint8_t k1[SECRET_LEN]           # Split(): initiator -> responder
    cdef uint8_t k2[SECRET_LEN]           # ... responder -> initiator
    cdef uint8_t hash[SHA256_LEN]         # the handshake hash, for tests

    def __cinit__(self, Datapath dp):
        self.dp = dp

    def __dealloc__(self):
        self.forget()

    cdef void forget(self) noexcept:
        noise_wipe(&self.s)
        OPENSSL_cleanse(self.k1, SECRET_LEN)
        OPENSSL_cleanse(self.k2, SECRET_LEN)
        OPENSSL_cleanse(self.hash, SHA256_LEN)

    @property
    def id(self):
        """The initiation's id: an INIT's own, echoed by its RESP and COOKIE."""
        return self.hs_id

    @property
    def handshake_hash(self):
        """Noise's h once done (channel binding; tests compare it)."""
        if self.stage != HS_DONE:
            raise RuntimeError("the handshake is not done")
        return PyBytes_FromStringAndSize(<char *>self.hash, SHA256_LEN)

    cdef int fail(self, str what) except -1:
        self.forget()
        raise RuntimeError(crypto_error(what))

    cdef bytes frame(self, int ptype, size_t length):
        out = PyBytes_FromStringAndSize(NULL, length)
        cdef uint8_t *m = <uint8_t *>PyBytes_AS_STRING(out)
        memset(m, 0, length)
        m[0] = wire_first_byte(self.dp.d.level, ptype)
        pkt_put_be32(m + HS_ID_AT, self.hs_id)
        return out

    def initiate(self, payload, cookie=None, ephemeral=None):
        """The INIT datagram carrying `payload` (INIT_PAYLOAD_LEN bytes), with mac2 made from
        `cookie` (16 bytes, from a cookie reply) or zeros. `ephemeral`: tests only."""
        cdef const uint8_t[:] p = payload
        cdef const uint8_t[:] fixed
        cdef mac_state m
        cdef dp_state *d = self.dp.d
        cdef uint8_t *msg
        cdef int rc
        if self.stage != HS_NEW or p.shape[0] != INIT_PAYLOAD_LEN:
            raise ValueError(f"a fresh handshake and a {INIT_PAYLOAD_LEN}-byte payload")
        if crypto_random(<uint8_t *>&self.hs_id, 4) != 0 or noise_init(&self.s, d.psk) != 0:
            self.fail("starting a handshake")
        if ephemeral is not None:
            fixed = ephemeral
            rc = noise_ephemeral(&self.s, &fixed[0])
        else:
            rc = noise_ephemeral(&self.s, NULL)
        if rc != 0:
            self.fail("an ephemeral key")
        out = self.frame(TYPE_INIT, INIT_LEN)
        msg = <uint8_t *>PyBytes_AS_STRING(out)
        if (noise_send_e(&self.s, msg + HS_HEAD_LEN) != 0 or noise_encrypt_and_hash(
                &self.s, &p[0], INIT_PAYLOAD_LEN, msg + HS_HEAD_LEN + X25519_LEN) != 0):
            self.fail("writing the initiation")
        if crypto_mac16(&d.mac1, msg, INIT_LEN - 2 * MAC16_LEN, msg + INIT_LEN - 2 * MAC16_LEN) != 0:
            self.fail("mac1")
        memcpy(self.mac1, msg + INIT_LEN - 2 * MAC16_LEN, MAC16_LEN)
        if cookie is not None:
            key = bytes(cookie)
            if len(key) != MAC16_LEN:
                raise ValueError(f"a cookie is {MAC16_LEN} bytes")
            rc = crypto_mac_init(&m, <const uint8_t *>PyBytes_AS_STRING(key), MAC16_LEN)
            if rc == 0:
                rc = crypto_mac16(&m, msg, INIT_LEN - MAC16_LEN, msg + INIT_LEN - MAC16_LEN)
            OPENSSL_cleanse(&m, sizeof(mac_state))
            if rc != 0:
                self.fail("mac2")
        self.initiator = True
        self.stage = HS_STARTED
        # The rx pump lets answers to this initiation, and only them, through (admit.pxi).
        pthread_mutex_lock(&d.recv_lock)
        d.hs_expect = self.hs_id
        memcpy(d.hs_expect_mac1, self.mac1, MAC16_LEN)
        d.hs_expecting = True
        pthread_mutex_unlock(&d.recv_lock)
        return out

    def open_cookie(self, datagram):
        """The 16-byte cookie in a COOKIE answering our INIT; raises Dropped("auth") if it is
        not one."""
        cdef const uint8_t[:] msg = datagram
        cdef uint8_t cookie[MAC16_LEN]
        if not self.initiator or self.stage != HS_STARTED:
            raise Dropped("replay")
        if msg.shape[0] != COOKIE_LEN or pkt_be32(&msg[HS_ID_AT]) != self.hs_id:
            raise Dropped("malformed")
        if cookie_open(self.dp.d, &msg[0], self.mac1, cookie) != 0:
            raise Dropped("auth")
        out = PyBytes_FromStringAndSize(<char *>cookie, MAC16_LEN)
        OPENSSL_cleanse(cookie, MAC16_LEN)
        return out

    def respond(self, datagram):
        """Read an INIT (as responder): its payload; raises Dropped(reason) for one that is
        not an authentic initiation. No Diffie-Hellman work is done yet."""
        cdef const uint8_t[:] msg = datagram
        cdef uint8_t payload[INIT_PAYLOAD_LEN]
        cdef dp_state *d = self.dp.d
        if self.stage != HS_NEW:
            raise ValueError("a fresh handshake")
        if msg.shape[0] != INIT_LEN or wire_type(msg[0]) != TYPE_INIT or wire_version(msg[0]) != WIRE_VERSION:
            raise Dropped("malformed")
        if wire_level(msg[0]) != d.level:
            raise Dropped("level_mismatch")
        if not cookie_mac1_ok(d, &msg[0]):
            raise Dropped("auth")
        if noise_init(&self.s, d.psk) != 0:
            self.fail("starting a handshake")
        if (noise_receive_e(&self.s, &msg[HS_HEAD_LEN]) != 0 or noise_decrypt_and_hash(
                &self.s, &msg[HS_HEAD_LEN + X25519_LEN], INIT_PAYLOAD_LEN + AEAD_TAG_LEN, payload) != 0):
            self.forget()
            raise Dropped("auth")
        self.hs_id = pkt_be32(&msg[HS_ID_AT])
        self.stage = HS_STARTED
        out = PyBytes_FromStringAndSize(<char *>payload, INIT_PAYLOAD_LEN)
        OPENSSL_cleanse(payload, INIT_PAYLOAD_LEN)
        return out

    def reply(self, payload, ephemeral=None):
        """The RESP answering the INIT read by respond(), carrying `payload`
        (RESP_PAYLOAD_LEN bytes); the session keys are then ready for install_session()."""
        cdef const uint8_t[:] p = payload
        cdef const uint8_t[:] fixed
        cdef dp_state *d = self.dp.d
        cdef uint8_t *msg
        cdef int rc
        if self.initiator or self.stage != HS_STARTED or p.shape[0] != RESP_PAYLOAD_LEN:
            raise ValueError(f"a handshake that read an INIT, and a {RESP_PAYLOAD_LEN}-byte payload")
        if ephemeral is not None:
            fixed = ephemeral
            rc = noise_ephemeral(&self.s, &fixed[0])
        else:
            rc = noise_ephemeral(&self.s, NULL)
        if rc != 0:
            self.fail("an ephemeral key")
        out = self.frame(TYPE_RESP, RESP_LEN)
        msg = <uint8_t *>PyBytes_AS_STRING(out)
        if (noise_send_e(&self.s, msg + HS_HEAD_LEN) != 0 or noise_ee(&self.s) != 0
                or noise_encrypt_and_hash(&self.s, &p[0], RESP_PAYLOAD_LEN, msg + HS_HEAD_LEN + X25519_LEN) != 0):
            self.fail("writing the answer")
        if crypto_mac16(&d.mac1, msg, RESP_LEN - MAC16_LEN, msg + RESP_LEN - MAC16_LEN) != 0:
            self.fail("mac1")
        self.done()
        return out

    def finish(self, datagram):
        """Read the RESP to our INIT (as initiator): its payload; the session keys are then
        ready for install_session(). Raises Dropped(reason) for anything else."""
        cdef const uint8_t[:] msg = datagram
        cdef uint8_t payload[RESP_PAYLOAD_LEN]
        cdef noise_state trial
        cdef dp_state *d = self.dp.d
        if not self.initiator or self.stage != HS_STARTED:
            raise Dropped("replay")
        if msg.shape[0] != RESP_LEN or wire_type(msg[0]) != TYPE_RESP or pkt_be32(&msg[HS_ID_AT]) != self.hs_id:
            raise Dropped("malformed")
        if not cookie_mac1_ok(d, &msg[0]):
            raise Dropped("auth")
        # Read it on a copy of our state: a RESP that fails leaves our initiation as it was,
        # so the genuine answer behind it still completes. The copy shares our ephemeral key,
        # which only a success keeps and only forget() frees.
        trial = self.s
        if (noise_receive_e(&trial, &msg[HS_HEAD_LEN]) != 0 or noise_ee(&trial) != 0
                or noise_decrypt_and_hash(&trial, &msg[HS_HEAD_LEN + X25519_LEN],
                                          RESP_PAYLOAD_LEN + AEAD_TAG_LEN, payload) != 0):
            OPENSSL_cleanse(&trial, sizeof(noise_state))
            OPENSSL_cleanse(payload, RESP_PAYLOAD_LEN)
            raise Dropped("auth")
        self.s = trial
        OPENSSL_cleanse(&trial, sizeof(noise_state))
        pthread_mutex_lock(&d.recv_lock)
        if d.hs_expect == self.hs_id:
            d.hs_expecting = False
        pthread_mutex_unlock(&d.recv_lock)
        self.done()
        out = PyBytes_FromStringAndSize(<char *>payload, RESP_PAYLOAD_LEN)
        OPENSSL_cleanse(payload, RESP_PAYLOAD_LEN)
        return out

    cdef int done(self) except -1:
        """Split, then forget everything but the two keys: the ephemeral private key first."""
        if noise_split(&self.s, self.k1, self.k2) != 0:
            self.fail("Split")
        memcpy(self.hash, self.s.h, SHA256_LEN)
        noise_wipe(&self.s)
        self.stage = HS_DONE
        return 0
