/* 64-bit words the two pump threads share without a lock (the MAC table, bridge.pxi): loads and
 * stores that are never torn and keep their order (acquire / release), a compare-and-swap, and
 * a prefetch. */
#ifndef ETUN_ATOMIC_H
#define ETUN_ATOMIC_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static inline uint64_t atomic_load64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

static inline void atomic_store64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

static inline int atomic_cas64(uint64_t *p, uint64_t expected, uint64_t desired)
{
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* Ask for the cache line at p ahead of reading it, so two lookups' misses overlap. */
static inline void prefetch_line(const void *p) { __builtin_prefetch(p, 0, 3); }

/* n zeroed bytes for the MAC table: on a cache line (a bucket is one line), and in 2 MiB pieces
 * on 2 MiB boundaries, so transparent huge pages can back it (one TLB entry, not 256: the table
 * is read at random). NULL when out of memory; free() releases it. */
static inline void *table_calloc(size_t n)
{
    size_t huge = (size_t)2 << 20, whole = (n + huge - 1) / huge * huge;
    void *p = NULL;
    if (posix_memalign(&p, huge, whole) != 0)
        return NULL;
    madvise(p, whole, MADV_HUGEPAGE);          /* a hint: without THP the table works as well */
    return memset(p, 0, whole);
}

#endif
