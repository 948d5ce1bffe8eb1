/*
 * TEST-ONLY CODE: never part of a firmware. Part of esp_ota_linux, the layer that lets the
 * esp_ota_agent component run on ESP-IDF's linux target for tests (see ../README.md).
 *
 * Heap accounting. On the linux target heap_caps_get_minimum_free_size() returns a constant,
 * so the RAM an app (the agent) needs cannot be read from ESP-IDF. The linker sends every
 * malloc, calloc, realloc, free, aligned_alloc, strdup, strndup, asprintf and vasprintf call
 * of the program's own code (ESP-IDF components, mbedtls, the app; not glibc's internal
 * calls) to the __wrap_ functions below (-Wl,--wrap, see CMakeLists.txt). Each block gets a
 * 16-byte header in front of it: {u64 requested size, u64 tag}; the tag is a 48-bit magic
 * and, for aligned blocks, the distance to the real block. free() looks at the 8 bytes in
 * front of the pointer: for a block glibc allocated itself (asprintf inside glibc,
 * getaddrinfo, ...) those bytes are glibc's chunk size field, which never equals the magic,
 * so such blocks are passed to the real free() uncounted. realloc() of such a block stays
 * uncounted too.
 *
 * Counted: the requested sizes of the live blocks (in_use), its maximum since boot or the
 * last reset (peak), the number of allocations since boot and of live blocks. Task stacks
 * are counted apart (stacks): on linux FreeRTOS' StackType_t is 8 bytes, so ESP-IDF's
 * xTaskCreatePinnedToCore(depth) allocates depth * 8 bytes where a chip allocates depth
 * bytes, which would drown everything else; stacks_chip is what they take on a chip (the
 * sum of the live tasks' depths). A stack is the block xTaskCreatePinnedToCore asks for
 * (its call is wrapped too, and ..WithCaps: it marks the next allocation of that size in its
 * thread). A plain
 * pthread (all signals blocked, no FreeRTOS calls, so the FreeRTOS POSIX port never sees
 * it) writes <state dir>/heap.json every 200 ms, atomically (temporary file + rename), and
 * once more with "final": true when the program restarts:
 *
 *   {"boot": 2, "reset_reason": "ESP_RST_SW", "pid": 4242, "uptime_ms": 5120,
 *    "in_use": 48512, "peak": 90112, "peak_reset_at_ms": 3000, "peak_resets": 1,
 *    "allocations": 1532, "live_blocks": 311, "stacks": 180224, "stacks_chip": 22528,
 *    "final": false}
 *
 * boot/reset_reason as printed by the boot step; uptime_ms and peak_reset_at_ms are
 * milliseconds since this boot's start (peak_reset_at_ms 0: never reset). To reset the peak
 * from outside, create the file <state dir>/heap-reset: within 200 ms the thread sets peak
 * to in_use, deletes the file, increments peak_resets and writes heap.json at once (wait
 * for the file to disappear). Sizes are those of the 64-bit host: structures holding
 * pointers are larger than on the 32-bit chips, and glibc's per-block overhead is not
 * counted (nor is the chip's allocator overhead).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "olx_internal.h"

#define HEADER_SIZE 16u
#define MAGIC48 0x6f6c78686561ULL /* "olxhea": the tag's upper 48 bits */
#define TAG_OF(offset16) ((MAGIC48 << 16) | (uint64_t)(offset16))
#define IS_TAG(tag) (((tag) >> 16) == MAGIC48)
#define WRITE_PERIOD_MS 200
#define STACK_BIT (1ULL << 63) /* in the header's size word: the block is a task stack */

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *ptr, size_t size);
void __real_free(void *ptr);
void *__real_aligned_alloc(size_t alignment, size_t size);

void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *ptr, size_t size);
void __wrap_free(void *ptr);
void *__wrap_aligned_alloc(size_t alignment, size_t size);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
int __wrap_vasprintf(char **strp, const char *fmt, va_list ap);
int __wrap_asprintf(char **strp, const char *fmt, ...);

static int64_t s_in_use;
static int64_t s_peak;
static uint64_t s_allocations;
static int64_t s_live_blocks;
static int64_t s_stacks;        /* bytes of live task stacks, as allocated here */
static int64_t s_stacks_chip;   /* the same stacks' depths: their size on a chip */
/* The stack size an xTaskCreatePinnedToCore of this thread is about to allocate. */
static __thread size_t s_stack_request;

static void count_alloc(size_t size)
{
    int64_t now = __atomic_add_fetch(&s_in_use, (int64_t)size, __ATOMIC_RELAXED);
    __atomic_add_fetch(&s_allocations, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&s_live_blocks, 1, __ATOMIC_RELAXED);
    int64_t peak = __atomic_load_n(&s_peak, __ATOMIC_RELAXED);
    while (now > peak && !__atomic_compare_exchange_n(&s_peak, &peak, now, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}

static void count_free(size_t size)
{
    __atomic_sub_fetch(&s_in_use, (int64_t)size, __ATOMIC_RELAXED);
    __atomic_sub_fetch(&s_live_blocks, 1, __ATOMIC_RELAXED);
}

static void *finish(void *base, size_t size, size_t offset)
{
    uint8_t *user = (uint8_t *)base + offset + HEADER_SIZE;
    uint64_t *h = (uint64_t *)(void *)(user - HEADER_SIZE);
    h[1] = TAG_OF(offset / 16);
    if (s_stack_request != 0 && size == s_stack_request) {
        s_stack_request = 0;
        h[0] = size | STACK_BIT;
        __atomic_add_fetch(&s_stacks, (int64_t)size, __ATOMIC_RELAXED);
        __atomic_add_fetch(&s_stacks_chip, (int64_t)(size / sizeof(StackType_t)), __ATOMIC_RELAXED);
        return user;
    }
    h[0] = size;
    count_alloc(size);
    return user;
}

BaseType_t __real_xTaskCreatePinnedToCore(TaskFunction_t code, const char *const name,
                                          const configSTACK_DEPTH_TYPE depth, void *const parameters,
                                          UBaseType_t priority, TaskHandle_t *const created,
                                          const BaseType_t core);
BaseType_t __wrap_xTaskCreatePinnedToCore(TaskFunction_t code, const char *const name,
                                          const configSTACK_DEPTH_TYPE depth, void *const parameters,
                                          UBaseType_t priority, TaskHandle_t *const created,
                                          const BaseType_t core);

BaseType_t __wrap_xTaskCreatePinnedToCore(TaskFunction_t code, const char *const name,
                                          const configSTACK_DEPTH_TYPE depth, void *const parameters,
                                          UBaseType_t priority, TaskHandle_t *const created,
                                          const BaseType_t core)
{
    s_stack_request = (size_t)depth * sizeof(StackType_t);
    BaseType_t result = __real_xTaskCreatePinnedToCore(code, name, depth, parameters, priority, created, core);
    s_stack_request = 0;
    return result;
}

/* esp_http_server creates its task with this one (the stack in the memory of its choice). */
BaseType_t __real_xTaskCreatePinnedToCoreWithCaps(TaskFunction_t code, const char *const name,
                                                  const configSTACK_DEPTH_TYPE depth, void *const parameters,
                                                  UBaseType_t priority, TaskHandle_t *const created,
                                                  const BaseType_t core, UBaseType_t caps);
BaseType_t __wrap_xTaskCreatePinnedToCoreWithCaps(TaskFunction_t code, const char *const name,
                                                  const configSTACK_DEPTH_TYPE depth, void *const parameters,
                                                  UBaseType_t priority, TaskHandle_t *const created,
                                                  const BaseType_t core, UBaseType_t caps);

BaseType_t __wrap_xTaskCreatePinnedToCoreWithCaps(TaskFunction_t code, const char *const name,
                                                  const configSTACK_DEPTH_TYPE depth, void *const parameters,
                                                  UBaseType_t priority, TaskHandle_t *const created,
                                                  const BaseType_t core, UBaseType_t caps)
{
    s_stack_request = (size_t)depth * sizeof(StackType_t);
    BaseType_t result = __real_xTaskCreatePinnedToCoreWithCaps(code, name, depth, parameters, priority,
                                                               created, core, caps);
    s_stack_request = 0;
    return result;
}

/* The tag in front of ptr if ptr is one of ours, else 0. */
static uint64_t tag_of(const void *ptr)
{
    uint64_t tag = ((const uint64_t *)ptr)[-1];
    return IS_TAG(tag) ? tag : 0;
}

void *__wrap_malloc(size_t size)
{
    if (size > SIZE_MAX - HEADER_SIZE) {
        errno = ENOMEM;
        return NULL;
    }
    void *base = __real_malloc(size + HEADER_SIZE);
    return base != NULL ? finish(base, size, 0) : NULL;
}

void *__wrap_calloc(size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total) || total > SIZE_MAX - HEADER_SIZE) {
        errno = ENOMEM;
        return NULL;
    }
    void *base = __real_calloc(1, total + HEADER_SIZE);
    return base != NULL ? finish(base, total, 0) : NULL;
}

void *__wrap_aligned_alloc(size_t alignment, size_t size)
{
    if (alignment <= HEADER_SIZE) {
        return __wrap_malloc(size);
    }
    if ((alignment & (alignment - 1)) != 0 || alignment > (1u << 20) || size > SIZE_MAX - alignment - HEADER_SIZE) {
        errno = EINVAL;
        return NULL;
    }
    uint8_t *base = __real_malloc(size + alignment + HEADER_SIZE);
    if (base == NULL) {
        return NULL;
    }
    uintptr_t user = ((uintptr_t)base + HEADER_SIZE + alignment - 1) & ~(uintptr_t)(alignment - 1);
    return finish(base, size, user - HEADER_SIZE - (uintptr_t)base);
}

void __wrap_free(void *ptr)
{
    if (ptr == NULL) {
        return;
    }
    uint64_t tag = tag_of(ptr);
    if (tag == 0) {
        __real_free(ptr); /* allocated inside glibc */
        return;
    }
    uint64_t *h = (uint64_t *)ptr - 2;
    if ((h[0] & STACK_BIT) != 0) {
        size_t size = (size_t)(h[0] & ~STACK_BIT);
        __atomic_sub_fetch(&s_stacks, (int64_t)size, __ATOMIC_RELAXED);
        __atomic_sub_fetch(&s_stacks_chip, (int64_t)(size / sizeof(StackType_t)), __ATOMIC_RELAXED);
    } else {
        count_free((size_t)h[0]);
    }
    h[1] = 0; /* a second free of the same block is then passed on as foreign: glibc reports it */
    __real_free((uint8_t *)h - (tag & 0xFFFF) * 16);
}

void *__wrap_realloc(void *ptr, size_t size)
{
    if (ptr == NULL) {
        return __wrap_malloc(size);
    }
    uint64_t tag = tag_of(ptr);
    if (tag == 0) {
        return __real_realloc(ptr, size); /* allocated inside glibc: stays uncounted */
    }
    if (size == 0) {
        __wrap_free(ptr);
        return NULL;
    }
    uint64_t *h = (uint64_t *)ptr - 2;
    size_t old = (size_t)(h[0] & ~STACK_BIT);
    if ((tag & 0xFFFF) != 0 || (h[0] & STACK_BIT) != 0) { /* aligned, or a stack: move it */
        void *moved = __wrap_malloc(size);
        if (moved != NULL) {
            memcpy(moved, ptr, old < size ? old : size);
            __wrap_free(ptr);
        }
        return moved;
    }
    if (size > SIZE_MAX - HEADER_SIZE) {
        errno = ENOMEM;
        return NULL;
    }
    uint64_t *nh = __real_realloc(h, size + HEADER_SIZE);
    if (nh == NULL) {
        return NULL;
    }
    nh[0] = size;
    count_free(old);
    count_alloc(size);
    __atomic_sub_fetch(&s_allocations, 1, __ATOMIC_RELAXED); /* a resize is not a new allocation */
    return nh + 2;
}

char *__wrap_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = __wrap_malloc(n);
    if (p != NULL) {
        memcpy(p, s, n);
    }
    return p;
}

char *__wrap_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = __wrap_malloc(len + 1);
    if (p != NULL) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

int __wrap_vasprintf(char **strp, const char *fmt, va_list ap)
{
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    if (n < 0) {
        return -1;
    }
    char *p = __wrap_malloc((size_t)n + 1);
    if (p == NULL) {
        return -1;
    }
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    *strp = p;
    return n;
}

int __wrap_asprintf(char **strp, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = __wrap_vasprintf(strp, fmt, ap);
    va_end(ap);
    return n;
}

/* ---- heap.json ------------------------------------------------------------------------------ */

static pthread_mutex_t s_write_lock = PTHREAD_MUTEX_INITIALIZER;
static struct timespec s_boot_time;
static int64_t s_peak_reset_at_ms;
static unsigned s_peak_resets;
static bool s_started;

static int64_t uptime_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)(now.tv_sec - s_boot_time.tv_sec) * 1000 + (now.tv_nsec - s_boot_time.tv_nsec) / 1000000;
}

/* Called with s_write_lock held. */
static void write_json(bool final)
{
    char path[PATH_MAX + 16], tmp[PATH_MAX + 24], text[512];
    snprintf(path, sizeof(path), "%s/heap.json", g_olx.state_dir);
    snprintf(tmp, sizeof(tmp), "%s/heap.json.tmp", g_olx.state_dir);
    int len = snprintf(text, sizeof(text),
                       "{\"boot\": %u, \"reset_reason\": \"%s\", \"pid\": %ld, \"uptime_ms\": %lld, "
                       "\"in_use\": %lld, \"peak\": %lld, \"peak_reset_at_ms\": %lld, \"peak_resets\": %u, "
                       "\"allocations\": %llu, \"live_blocks\": %lld, \"stacks\": %lld, "
                       "\"stacks_chip\": %lld, \"final\": %s}\n",
                       g_olx.boot_count, olx_reset_reason_name(g_olx.reset_reason), (long)getpid(),
                       (long long)uptime_ms(), (long long)__atomic_load_n(&s_in_use, __ATOMIC_RELAXED),
                       (long long)__atomic_load_n(&s_peak, __ATOMIC_RELAXED), (long long)s_peak_reset_at_ms,
                       s_peak_resets, (unsigned long long)__atomic_load_n(&s_allocations, __ATOMIC_RELAXED),
                       (long long)__atomic_load_n(&s_live_blocks, __ATOMIC_RELAXED),
                       (long long)__atomic_load_n(&s_stacks, __ATOMIC_RELAXED),
                       (long long)__atomic_load_n(&s_stacks_chip, __ATOMIC_RELAXED), final ? "true" : "false");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return;
    }
    bool ok = write(fd, text, (size_t)len) == len;
    ok = close(fd) == 0 && ok;
    if (ok) {
        rename(tmp, path);
    }
}

static void *heap_thread(void *arg)
{
    (void)arg;
    char reset_path[PATH_MAX + 16];
    snprintf(reset_path, sizeof(reset_path), "%s/heap-reset", g_olx.state_dir);
    for (;;) {
        pthread_mutex_lock(&s_write_lock);
        if (access(reset_path, F_OK) == 0) {
            __atomic_store_n(&s_peak, __atomic_load_n(&s_in_use, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
            s_peak_reset_at_ms = uptime_ms();
            s_peak_resets++;
            unlink(reset_path);
        }
        write_json(false);
        pthread_mutex_unlock(&s_write_lock);
        struct timespec ts = {.tv_sec = 0, .tv_nsec = WRITE_PERIOD_MS * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
    }
    return NULL;
}

void olx_heap_start(void)
{
    clock_gettime(CLOCK_MONOTONIC, &s_boot_time);
    /* The thread must never take a FreeRTOS tick (SIGALRM) or any other signal. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int err = pthread_create(&thread, &attr, heap_thread, NULL);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0) {
        fprintf(stderr, OLX_LOG_PREFIX "cannot start the heap statistics thread: %s\n", strerror(err));
        return;
    }
    s_started = true;
}

void olx_heap_final(void)
{
    if (!s_started) {
        return;
    }
    /* Kept locked: the thread writes nothing more before the re-exec ends it. */
    pthread_mutex_lock(&s_write_lock);
    write_json(true);
}
