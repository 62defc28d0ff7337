/* Lock-free words for the MAC table (bridge.pxi): untorn, ordered loads and stores, CAS, prefetch. */
/* The MAC table's memory (bridge.pxi) and the 64-bit words in it that the two pump threads share
 * without a lock: loads and stores that are never torn and keep their order (acquire /
 * release), a compare-and-swap, and a prefetch. */
#ifndef ETUN_ATOMIC_H
#define ETUN_ATOMIC_H

#include <stdint.h>
#include <sys/mman.h>

static inline uint64_t atomic_load64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

static inline void atomic_store64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

static inline int atomic_cas64(uint64_t *p, uint64_t expected, uint64_t desired)
{
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* Ask for the cache line at p ahead of reading it, so two lookups' misses overlap. */
static inline void prefetch_line(const void *p) { __builtin_prefetch(p, 0, 3); }

/* The MAC table's memory: n zeroed bytes on a page (so each bucket is one cache line). NULL when
 * out of memory. A daemon's engine makes it resident at start (resident.h). */
static inline void *table_alloc(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static inline void table_free(void *p, size_t n)
{
    if (p != NULL)
        munmap(p, n);
}

#endif
