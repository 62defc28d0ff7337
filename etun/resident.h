/* A daemon's memory kept flat: pump buffers resident from the start, free heap pages given back. */
/* A daemon's memory kept flat: every buffer its pumps may ever use made resident when it starts
 * (engine.pxi), so its RSS is from the first second what the busiest hour would make it; and the
 * heap's free pages given back now and then (docs/PERFORMANCE.md, "Memory"). */
#ifndef ETUN_RESIDENT_H
#define ETUN_RESIDENT_H

#include <stddef.h>
#include <stdint.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#define ETUN_PAGE 4096    /* the smallest page Linux uses; touching more often costs nothing */

/* Write to every page of [p, p + n) without changing a byte (an atomic OR of zero), so that each
 * is backed by memory of its own rather than the shared zero page. Not instrumented: sanitizer
 * builds keep unused reassembly buffers poisoned, and this writes nothing. */
__attribute__((no_sanitize("address")))
static inline void touch_pages(void *p, size_t n)
{
    uint8_t *b = p;
    size_t off;
    if (p == NULL || n == 0)
        return;
    for (off = 0; off < n; off += ETUN_PAGE)
        __atomic_fetch_or(b + off, 0, __ATOMIC_RELAXED);
    __atomic_fetch_or(b + n - 1, 0, __ATOMIC_RELAXED);
}

/* Give the C heap's free pages back to the kernel. glibc keeps freed memory in the middle of its
 * heap: after a burst of control-plane work (a peer's restart, a reload) RSS would otherwise stay
 * at its high-water mark, a step at every event. Elsewhere a no-op. */
static inline void trim_heap(void)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

#endif
