# verify-peer packets on the wire (PROTOCOL.md §7): PROBE and PROBE_REPLY sealed and read.
#
# verify-peer packets on the wire (PROTOCOL.md §7): PROBE and PROBE_REPLY sealed and read for the
# control plane (probe.py), which runs the exchange; the rx pump only admits them (admit.pxi).
# A probe's header is its first byte and 15 zeros; at auth and encrypt a tag under the probe key
# follows the payload.

PROBE_TYPES = (TYPE_PROBE, TYPE_PROBE_REPLY)


cdef bytes probe_seal(const dp_state *d, int ptype, payload):
    """A datagram of type `ptype` (one of PROBE_TYPES) carrying `payload`."""
    cdef uint8_t head[HEADER_LEN]
    cdef uint8_t tag[SHA256_LEN]
    cdef const uint8_t[:] body = payload
    cdef Py_ssize_t blen = body.shape[0]
    memset(head, 0, HEADER_LEN)
    head[0] = wire_first_byte(d.level, ptype)
    out = PyBytes_FromStringAndSize(<char *>head, HEADER_LEN) + bytes(payload)
    if d.level == LEVEL_NONE:
        return out
    if crypto_mac(&d.probe_mac, head, HEADER_LEN, &body[0] if blen else NULL, blen, tag) != 0:
        raise RuntimeError(crypto_error("sealing a probe"))
    return out + PyBytes_FromStringAndSize(<char *>tag, TAG_LEN)


cdef tuple probe_read(const dp_state *d, datagram):
    """(level, ptype, payload, authenticated) of a probe datagram, as read_probe()
    returns it; Dropped("malformed") for a broken header."""
    cdef const uint8_t[:] dg = datagram
    cdef Py_ssize_t length = dg.shape[0]
    cdef int lvl, ptype, tag_len, k
    if length < HEADER_LEN or wire_version(dg[0]) != WIRE_VERSION or wire_level(dg[0]) == LEVEL_RESERVED:
        raise Dropped("malformed")
    lvl = wire_level(dg[0])
    ptype = wire_type(dg[0])
    tag_len = TAG_LEN if lvl != LEVEL_NONE else 0
    if ptype not in PROBE_TYPES or length < HEADER_LEN + tag_len:
        raise Dropped("malformed")
    for k in range(1, HEADER_LEN):
        if dg[k] != 0:
            raise Dropped("malformed")
    authentic = (lvl != LEVEL_NONE
                 and crypto_tag_ok(&d.probe_mac, &dg[0], &dg[HEADER_LEN], length - HEADER_LEN - TAG_LEN,
                                   &dg[length - TAG_LEN]))
    return lvl, ptype, bytes(dg[HEADER_LEN:length - tag_len]), authentic
