# Control packets from the rx pump to the Python control plane: a locked ring and an eventfd.
#
# Control packets from the rx pump to the Python control plane -- admitted handshake and probe
# datagrams, and opened SESSION messages with the id of the session they came under: a small
# locked ring and an eventfd to wake the control loop. A full ring drops, counted.

cdef void ctlq_push(engine_state *e, uint8_t ptype, const uint8_t *pkt, uint32_t length,
                    uint8_t session, const uint8_t *name, socklen_t namelen) noexcept nogil:
    cdef int slot
    cdef uint64_t one = 1
    if length > CTL_MAX or namelen > SOCKADDR_LEN:
        drop_datagram(e.dp, DROP_MALFORMED, name, namelen)
        return
    pthread_mutex_lock(&e.ctl_lock)
    if e.ctl_count == CTL_SLOTS:
        pthread_mutex_unlock(&e.ctl_lock)
        drop_datagram(e.dp, DROP_CONTROL_QUEUE, name, namelen)
        return
    slot = (e.ctl_head + e.ctl_count) % CTL_SLOTS
    memcpy(e.ctl_buf + <size_t>slot * CTL_MAX, pkt, length)
    e.ctl_len[slot] = length
    e.ctl_type[slot] = ptype
    e.ctl_session[slot] = session
    memcpy(e.ctl_from + slot * SOCKADDR_LEN, name, namelen)
    e.ctl_fromlen[slot] = namelen
    e.ctl_count += 1
    pthread_mutex_unlock(&e.ctl_lock)
    e.dp.ctr[DIR_RX][C_CONTROL] += 1
    write(e.ctl_fd, &one, sizeof(one))
