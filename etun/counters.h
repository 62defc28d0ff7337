/* The datapath's counter and statistic names: C enums and status names from one table each. */
/* The datapath's counter and statistic names: one table each, from which both the C enums and
 * the name strings `etun status` shows are generated, so the two can never drift apart. */
#ifndef ETUN_COUNTERS_H
#define ETUN_COUNTERS_H

/* Per-direction traffic counters, then every drop reason (docs/STATUS.md explains each). */
#define ETUN_TRAFFIC(X)                                                                       \
    X(FRAMES, frames)           /* frames carried (tx: sealed and sent; rx: delivered) */     \
    X(BYTES, bytes)             /* bytes of those frames */                                   \
    X(PACKETS, packets)         /* tunnel packets (tx: sent; rx: received, before checks) */  \
    X(FRAGMENTS, fragments)     /* tunnel packets carrying part of a multi-packet frame */    \
    X(REASSEMBLED, reassembled) /* multi-packet frames completed */                           \
    X(CONTROL, control)         /* control packets passed to the control plane */             \
    X(SUPERFRAMES, superframes) /* GSO super-frames cut (tx) or merged (rx) by etun */

#define ETUN_DROPS(X)                                                                         \
    X(MALFORMED, malformed)                                                                   \
    X(LEVEL_MISMATCH, level_mismatch)                                                         \
    X(NO_SESSION, no_session)                                                                 \
    X(KEY_INDEX, key_index)                                                                   \
    X(AUTH, auth)                                                                             \
    X(REPLAY, replay)                                                                         \
    X(FRAG_INCONSISTENT, frag_inconsistent)                                                   \
    X(FRAG_TIMEOUT, frag_timeout)                                                             \
    X(FRAG_EVICTED, frag_evicted)                                                             \
    X(RUNT, runt)                                                                             \
    X(OVERSIZED, oversized)                                                                   \
    X(FILTER, filter)                                                                         \
    X(SEND_ERROR, send_error)                                                                 \
    X(SOCKET_OVERFLOW, socket_overflow)                                                       \
    X(OWN_TUNNEL, own_tunnel)                                                                 \
    X(CRYPTO_ERROR, crypto_error)                                                             \
    X(CONTROL_QUEUE, control_queue)                                                           \
    X(INTERNAL, internal)       /* an invariant of etun's own failed: a bug, please report */ \
    X(VERSION, version)         /* another etun protocol version (an older or newer peer) */  \
    X(UNDER_LOAD, under_load)   /* a handshake without a cookie while under load: cookie sent */ \
    X(RATE_LIMIT, rate_limit)   /* over its source's (or everyone's) budget */                \
    X(BAD_OFFLOAD, bad_offload) /* a virtio_net_hdr from the peer that does not fit its frame */ \
    X(UNSELECTED_VLAN, unselected_vlan) /* a LAN frame of a VLAN no segment selects */        \
    X(UNKNOWN_SEGMENT, unknown_segment) /* for a segment the peer lacks (or has not named yet) */ \
    X(STANDBY, standby)         /* a frame met while this gateway is the standby of a pair */ \
    X(LOCAL_DESTINATION, local_destination) /* unicast to a MAC last seen on this LAN (bridge) */ \
    X(LOOP, loop)               /* not carried while a bridging loop is held off (bridge) */  \
    X(STORM, storm)             /* flooded frames over [bridge] storm_limit a second */

/* How well the two pumps batch (docs/STATUS.md, "pumps"). */
#define ETUN_PUMP_STATS(X)                                                                    \
    X(TX_WAKEUPS, tx_wakeups)   /* tx rounds (either pump): LAN reads that returned frames */ \
    X(TX_SLEEPS, tx_sleeps)     /* tx pump: polls with nothing read, or 100 ms parked */      \
    X(UDP_SENDS, udp_sends)     /* tx rounds: sendmmsg calls */                               \
    X(UDP_MESSAGES, udp_messages) /* ... messages they carried (a GSO train is one) */        \
    X(RX_WAKEUPS, rx_wakeups)   /* rx pump: UDP reads that returned datagrams */              \
    X(RX_SLEEPS, rx_sleeps)     /* ... polls because the socket had nothing */                \
    X(RX_DATAGRAMS, rx_datagrams) /* ... datagrams read (a GRO train counts each) */          \
    X(LAN_SENDS, lan_sends)     /* ... sendmmsg/writev calls to the LAN */                    \
    X(TX_SERVED_BY_RX, tx_served_by_rx) /* tx rounds the rx pump ran, the tx pump parked */ \
    X(TX_LOOPS, tx_loops)       /* tx pump: turns of its loop, idle ones too (the watchdog's */ \
    X(RX_LOOPS, rx_loops)       /*   heartbeat: a wedged pump stops counting) */

#define ETUN_ENUM_C(id, name) C_##id,
#define ETUN_ENUM_DROP(id, name) DROP_##id,
#define ETUN_ENUM_PUMP(id, name) PUMP_##id,
#define ETUN_NAME(id, name) #name,

enum { ETUN_TRAFFIC(ETUN_ENUM_C) ETUN_DROPS(ETUN_ENUM_DROP) N_COUNTERS };
enum { FIRST_DROP_REASON = DROP_MALFORMED };
enum { ETUN_PUMP_STATS(ETUN_ENUM_PUMP) N_PUMP_STATS };

static const char *const etun_counter_names[N_COUNTERS] = {
    ETUN_TRAFFIC(ETUN_NAME) ETUN_DROPS(ETUN_NAME)
};
static const char *const etun_pump_stat_names[N_PUMP_STATS] = { ETUN_PUMP_STATS(ETUN_NAME) };

#endif
