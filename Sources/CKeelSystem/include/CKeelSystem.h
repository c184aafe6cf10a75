#ifndef CKEEL_SYSTEM_H
#define CKEEL_SYSTEM_H

#include <stdlib.h>  // defines __GLIBC__ on glibc systems
#if defined(__GLIBC__)
#include <malloc.h>
#endif

/// Returns memory that glibc's allocator holds free (in every thread's arena) to the system.
/// A busy burst leaves arenas at their peak size long after the work is done; Swift's Glibc module
/// does not export malloc.h, hence this shim. Returns 1 if memory was released.
static inline int ckeel_release_free_heap(void) {
#if defined(__GLIBC__)
    return malloc_trim(0);
#else
    return 0;
#endif
}

/// Drops the clean, read-only file pages (code of the binary, Swift's runtime, Foundation, ICU data) from this
/// process's resident set and stops the kernel from mapping neighbouring pages around each fault (MADV_RANDOM), so
/// that what stays resident is what the process actually runs. The pages stay in the page cache, shared with every
/// process; touched again, they map back in from it. Returns the bytes of mappings advised, or -1.
long ckeel_release_clean_file_pages(void);

#endif
