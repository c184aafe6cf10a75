#include "CKeelSystem.h"

#if defined(__linux__)
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

long ckeel_release_clean_file_pages(void) {
    // Read the whole map first: advising while reading would change what is being read.
    FILE *file = fopen("/proc/self/smaps", "r");
    if (!file) return -1;
    size_t capacity = 1 << 20, length = 0;
    char *text = malloc(capacity);
    if (!text) { fclose(file); return -1; }
    size_t got;
    while ((got = fread(text + length, 1, capacity - length - 1, file)) > 0) {
        length += got;
        if (length + 1 >= capacity) {
            char *grown = realloc(text, capacity * 2);
            if (!grown) { free(text); fclose(file); return -1; }
            text = grown;
            capacity *= 2;
        }
    }
    fclose(file);
    text[length] = 0;

    long released = 0;
    unsigned long start = 0, end = 0;
    char perms[5] = {0};
    int fileBacked = 0;
    long dirty = 0, anonymous = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        unsigned long a, b;
        char p[5];
        if (sscanf(line, "%lx-%lx %4s", &a, &b, p) == 3 && strchr(line, '-') < strchr(line, ' ')) {
            start = a; end = b; memcpy(perms, p, 5);
            fileBacked = strchr(line, '/') != NULL;
            dirty = anonymous = 0;
        } else if (strncmp(line, "Private_Dirty:", 14) == 0) {
            dirty += atol(line + 14);
        } else if (strncmp(line, "Shared_Dirty:", 13) == 0) {
            dirty += atol(line + 13);
        } else if (strncmp(line, "Anonymous:", 10) == 0) {
            anonymous = atol(line + 10);
        } else if (strncmp(line, "VmFlags:", 8) == 0) {
            // Only clean, read-only copies of files (code, read-only data): dropping them loses nothing, they come
            // back from the file when touched. Writable or written mappings (relocated data, the heap) are left alone.
            if (fileBacked && perms[0] == 'r' && perms[1] == '-' && perms[3] == 'p' && dirty == 0 && anonymous == 0 && end > start) {
                madvise((void *)start, end - start, MADV_RANDOM);
                if (madvise((void *)start, end - start, MADV_DONTNEED) == 0) released += (long)(end - start);
            }
        }
    }
    free(text);
    return released;
}
#else
long ckeel_release_clean_file_pages(void) { return 0; }
#endif
