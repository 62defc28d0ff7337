/* AddressSanitizer poisoning of buffers carved out of one allocation (the reassembly arena). */
/* AddressSanitizer poisoning of buffers carved out of one allocation (the reassembly arena), so
 * the sanitizer build of the fuzz targets (fuzz/build.sh) sees an overrun into a neighbouring
 * buffer as it sees one past a malloc'd block. In every other build these are no-ops. */
#ifndef ETUN_SANITIZER_H
#define ETUN_SANITIZER_H

#if defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define ETUN_ASAN 1
#  endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#  define ETUN_ASAN 1
#endif

#ifdef ETUN_ASAN
#  include <sanitizer/asan_interface.h>
#  define etun_poison(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#  define etun_unpoison(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#  define etun_poison(p, n) ((void)(p), (void)(n))
#  define etun_unpoison(p, n) ((void)(p), (void)(n))
#endif

#endif
