/* 64-bit words the two pump threads share without a lock (the MAC table, bridge.pxi): loads and
 * stores that are never torn and keep their order (acquire / release), a compare-and-swap, and
 * a prefetch. */
#ifndef ETUN_ATOMIC_H
#define ETUN_ATOMIC_H

#include <stdint.h>

static inline uint64_t atomic_load64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

static inline void atomic_store64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

static inline int atomic_cas64(uint64_t *p, uint64_t expected, uint64_t desired)
{
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* Ask for the cache line at p ahead of reading it, so two lookups' misses overlap. */
static inline void prefetch_line(const void *p) { __builtin_prefetch(p, 0, 3); }

#endif
