/*
 * TEST-ONLY CODE: never part of a firmware. Part of esp_ota_linux, the layer that lets the
 * esp_ota_agent component run on ESP-IDF's linux target for tests (see ../README.md).
 *
 * The boot step and the restart.
 *
 * A GCC constructor runs before main() (so before the FreeRTOS scheduler starts) and does
 * what a chip's second-stage bootloader does: it reads the configuration from the
 * environment, opens <ESP_OTA_LINUX_STATE_DIR>/flash.bin, parses the partition table at
 * 0x8000, selects the app slot from otadata exactly as ESP-IDF's bootloader does with
 * CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE (and CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK when
 * ESP_OTA_LINUX_ANTI_ROLLBACK is 1), updating otadata and the eFuse file as it does, and
 * "starts" the selected image: its esp_app_desc_t becomes esp_app_get_description(), and
 * esp_partition is pointed at the flash file. It reads and writes the flash file directly
 * (pread/pwrite), as a bootloader reads flash directly. An image whose version is listed in
 * ESP_OTA_LINUX_CRASH_VERSIONS panics right there (before it could confirm itself): the
 * step restarts with reset reason ESP_RST_PANIC, and the next boot rolls it back.
 *
 * A restart (esp_restart(), through a shutdown handler that runs after the app's own
 * handlers) closes every file descriptor above 2 (the app's sockets go away), keeps the
 * device off for ESP_OTA_LINUX_REBOOT_DELAY_MS, and re-executes /proc/self/exe with the
 * original argv in the same process (same PID), the reset reason in the environment.
 *
 * Exit codes of the boot step: 2 bad configuration (no state dir, no flash file, bad
 * partition table, bad variable), 3 no bootable app, 4 boot loop (8 consecutive panics).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "esp_private/partition_linux.h"
#include "esp_rom_md5.h"
#include "esp_system.h"
#include "sdkconfig.h"

#include "esp_ota_linux.h"
#include "olx_internal.h"

#define BOOT_LOOP_LIMIT 8
#define ENV_RESET_REASON "ESP_OTA_LINUX_RESET_REASON"
#define ENV_BOOT_COUNT "ESP_OTA_LINUX_BOOT_COUNT"
#define ENV_PANIC_COUNT "ESP_OTA_LINUX_PANIC_COUNT"

olx_state_t g_olx;

bool olx_chip_lookup(const char *name); /* chip_linux.c */

/* libgcov's dump, present when the program is linked with --coverage (ESP-IDF's nvs_flash
 * does that on linux; CMakeLists.txt pulls it in with -u): execv() would drop the counters
 * of the image that restarts, so they are written first, as exit() would. */
extern void __gcov_dump(void) __attribute__((weak));

static void fatal(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

static void fatal(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(OLX_LOG_PREFIX, stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void say(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, OLX_LOG_PREFIX "%s\n", line);
}

int esp_ota_linux_chip_id(void)
{
    return g_olx.chip_id;
}

const char *esp_ota_linux_state_dir(void)
{
    return g_olx.state_dir;
}

unsigned esp_ota_linux_boot_count(void)
{
    return g_olx.boot_count;
}

/* ---- configuration --------------------------------------------------------------------- */

static unsigned long env_number(const char *name, unsigned long dflt, unsigned long max)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0') {
        return dflt;
    }
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    if (errno != 0 || *end != '\0' || n > max || v[0] == '-') {
        fatal(2, "%s=%s is not a number from 0 to %lu", name, v, max);
    }
    return n;
}

static void read_config(void)
{
    const char *dir = getenv("ESP_OTA_LINUX_STATE_DIR");
    if (dir == NULL || *dir == '\0') {
        fatal(2, "ESP_OTA_LINUX_STATE_DIR is not set: it names the folder holding flash.bin "
                 "(this program is the test-only linux build of an ESP-IDF firmware)");
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fatal(2, "ESP_OTA_LINUX_STATE_DIR=%s is not a folder", dir);
    }
    if (snprintf(g_olx.state_dir, sizeof(g_olx.state_dir), "%s", dir) >= (int)sizeof(g_olx.state_dir) ||
        snprintf(g_olx.flash_path, sizeof(g_olx.flash_path), "%s/flash.bin", dir) >= (int)sizeof(g_olx.flash_path)) {
        fatal(2, "ESP_OTA_LINUX_STATE_DIR is too long");
    }

    const char *chip = getenv("ESP_OTA_LINUX_CHIP");
    if (chip == NULL || *chip == '\0') {
        chip = "esp32";
    }
    if (!olx_chip_lookup(chip)) {
        fatal(2, "ESP_OTA_LINUX_CHIP=%s is not a chip this layer knows (esp32, esp32s2, esp32s3, "
                 "esp32c2, esp32c3, esp32c5, esp32c6, esp32c61, esp32h2, esp32p4)", chip);
    }

    const char *rev = getenv("ESP_OTA_LINUX_CHIP_REVISION");
    g_olx.chip_revision = 301;
    if (rev != NULL && *rev != '\0') {
        const char *p = (rev[0] == 'v' || rev[0] == 'V') ? rev + 1 : rev;
        unsigned major = 0, minor = 0;
        int used = 0;
        if (strchr(p, '.') != NULL) {
            if (sscanf(p, "%u.%u%n", &major, &minor, &used) != 2 || p[used] != '\0' || minor > 99 || major > 655) {
                fatal(2, "ESP_OTA_LINUX_CHIP_REVISION=%s is not a revision (301 or v3.1)", rev);
            }
            g_olx.chip_revision = (uint16_t)(major * 100 + minor);
        } else {
            g_olx.chip_revision = (uint16_t)env_number("ESP_OTA_LINUX_CHIP_REVISION", 301, 65535);
        }
    }

    const char *mac = getenv("ESP_OTA_LINUX_MAC");
    static const uint8_t default_mac[6] = {0x02, 0x12, 0x34, 0x56, 0x78, 0xab};
    memcpy(g_olx.mac, default_mac, sizeof(default_mac));
    if (mac != NULL && *mac != '\0') {
        unsigned b[6];
        int used = 0;
        if (sscanf(mac, "%2x:%2x:%2x:%2x:%2x:%2x%n", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &used) != 6 ||
            mac[used] != '\0') {
            fatal(2, "ESP_OTA_LINUX_MAC=%s is not a MAC address like 24:0a:c4:00:00:01", mac);
        }
        for (int i = 0; i < 6; i++) {
            g_olx.mac[i] = (uint8_t)b[i];
        }
    }

    const char *ar = getenv("ESP_OTA_LINUX_ANTI_ROLLBACK");
    if (ar == NULL || *ar == '\0' || strcmp(ar, "1") == 0) {
        g_olx.anti_rollback = true;
    } else if (strcmp(ar, "0") == 0) {
        g_olx.anti_rollback = false;
    } else {
        fatal(2, "ESP_OTA_LINUX_ANTI_ROLLBACK=%s: use 1 or 0", ar);
    }
    g_olx.reboot_delay_ms = (uint32_t)env_number("ESP_OTA_LINUX_REBOOT_DELAY_MS", 200, 3600000);

    /* Internal variables: set by the layer's own re-exec, absent on a fresh start. */
    const char *reason = getenv(ENV_RESET_REASON);
    g_olx.reset_reason = ESP_RST_POWERON;
    if (reason != NULL && !olx_reset_reason_parse(reason, &g_olx.reset_reason)) {
        fatal(2, "%s=%s is not a reset reason", ENV_RESET_REASON, reason);
    }
    g_olx.boot_count = (unsigned)env_number(ENV_BOOT_COUNT, 0, 1000000000) + 1;
    g_olx.panic_count = (unsigned)env_number(ENV_PANIC_COUNT, 0, BOOT_LOOP_LIMIT);
    unsetenv(ENV_RESET_REASON);
    unsetenv(ENV_BOOT_COUNT);
    unsetenv(ENV_PANIC_COUNT);
}

/* Is version one of the comma-separated ESP_OTA_LINUX_CRASH_VERSIONS? */
static bool crash_version(const char *version)
{
    const char *list = getenv("ESP_OTA_LINUX_CRASH_VERSIONS");
    if (list == NULL) {
        return false;
    }
    size_t vlen = strlen(version);
    const char *p = list;
    while (*p != '\0') {
        while (*p == ',' || isspace((unsigned char)*p)) {
            p++;
        }
        const char *start = p;
        while (*p != '\0' && *p != ',') {
            p++;
        }
        const char *end = p;
        while (end > start && isspace((unsigned char)end[-1])) {
            end--;
        }
        if ((size_t)(end - start) == vlen && vlen > 0 && strncmp(start, version, vlen) == 0) {
            return true;
        }
    }
    return false;
}

/* ---- the bootloader on the flash file --------------------------------------------------- */

typedef struct {
    int fd;
    olx_image_info_t info;   /* of the last image that loaded */
} boot_ctx_t;

static const olx_partition_info_t *partition_of_index(int index)
{
    const olx_partition_table_t *t = &g_olx.table;
    if (index == OLX_FACTORY_INDEX) {
        return t->factory >= 0 ? &t->entries[t->factory] : NULL;
    }
    if (index >= 0 && (unsigned)index < t->app_count) {
        return &t->entries[t->ota[index]];
    }
    return NULL;
}

static int pread_all(int fd, void *buf, size_t len, uint64_t offset)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)offset);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        p += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

static int pwrite_all(int fd, const void *buf, size_t len, uint64_t offset)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)offset);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        p += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

typedef struct {
    int fd;
    uint32_t base;
} part_reader_t;

static int read_part(void *ctx, uint32_t offset, void *buf, size_t len)
{
    part_reader_t *r = ctx;
    return pread_all(r->fd, buf, len, (uint64_t)r->base + offset);
}

static bool boot_read_otadata(void *ctx, olx_otadata_entry_t two[2])
{
    boot_ctx_t *b = ctx;
    const olx_partition_info_t *ota = &g_olx.table.entries[g_olx.table.otadata];
    return pread_all(b->fd, &two[0], sizeof(two[0]), ota->offset) == 0 &&
           pread_all(b->fd, &two[1], sizeof(two[1]), (uint64_t)ota->offset + OLX_SECTOR_SIZE) == 0;
}

static void boot_write_otadata(void *ctx, int sector, const olx_otadata_entry_t *entry)
{
    /* write_otadata: erase the sector, then program the entry at its start */
    boot_ctx_t *b = ctx;
    const olx_partition_info_t *ota = &g_olx.table.entries[g_olx.table.otadata];
    uint8_t buf[OLX_SECTOR_SIZE];
    memset(buf, 0xFF, sizeof(buf));
    memcpy(buf, entry, sizeof(*entry));
    if (pwrite_all(b->fd, buf, sizeof(buf), (uint64_t)ota->offset + (uint64_t)sector * OLX_SECTOR_SIZE) != 0) {
        fatal(2, "cannot write otadata[%d] in %s: %s", sector, g_olx.flash_path, strerror(errno));
    }
}

static bool read_desc(int fd, int index, olx_app_desc_t *desc)
{
    const olx_partition_info_t *p = partition_of_index(index);
    return p != NULL && pread_all(fd, desc, sizeof(*desc), (uint64_t)p->offset + OLX_APP_DESC_OFFSET) == 0 &&
           desc->magic_word == OLX_APP_DESC_MAGIC;
}

static bool boot_secure_version_ok(void *ctx, int index)
{
    boot_ctx_t *b = ctx;
    olx_app_desc_t desc;
    if (!read_desc(b->fd, index, &desc)) {
        say("bootloader: Failed to get partition description (index %d)", index);
        return false;
    }
    return olx_efuse_check_secure_version(desc.secure_version);
}

static void boot_update_anti_rollback(void *ctx, int index)
{
    boot_ctx_t *b = ctx;
    olx_app_desc_t desc;
    if (!read_desc(b->fd, index, &desc)) {
        say("bootloader: Failed to get partition description (index %d)", index);
        return;
    }
    uint32_t before = olx_efuse_read_secure_version();
    esp_err_t err = olx_efuse_update_secure_version(desc.secure_version);
    if (err != ESP_OK) {
        say("bootloader: eFuse secure_version not updated to %u (eFuse holds %u)", (unsigned)desc.secure_version,
            (unsigned)before);
    } else if (desc.secure_version > before) {
        say("bootloader: Anti-rollback is set. eFuse field is updated(%u).", (unsigned)desc.secure_version);
    }
}

static bool boot_try_load(void *ctx, int index)
{
    boot_ctx_t *b = ctx;
    const olx_partition_info_t *p = partition_of_index(index);
    if (p == NULL) {
        return false;
    }
    part_reader_t reader = {.fd = b->fd, .base = p->offset};
    olx_chip_t chip = {.chip_id = g_olx.chip_id, .chip_revision = g_olx.chip_revision};
    char msg[200];
    olx_img_result_t r = olx_image_verify(read_part, &reader, p->size, &chip, &b->info, msg, sizeof(msg));
    if (r != OLX_IMG_OK) {
        say("bootloader: %.16s: image does not load: %s", p->label, msg);
        return false;
    }
    return true;
}

static void boot_log(void *ctx, const char *line)
{
    (void)ctx;
    say("bootloader: %s", line);
}

static void md5(const void *data, size_t len, uint8_t out[16])
{
    md5_context_t ctx;
    esp_rom_md5_init(&ctx);
    esp_rom_md5_update(&ctx, data, (uint32_t)len);
    esp_rom_md5_final(out, &ctx);
}

/* The app_elf_sha256_str that esp_app_get_elf_sha256() reports, from the booted image. */
static void set_elf_sha256_str(void)
{
    size_t size = CONFIG_APP_RETRIEVE_LEN_ELF_SHA + 1;
    for (size_t i = 0; i < size / 2; i++) {
        static const char hex[] = "0123456789abcdef";
        app_elf_sha256_str[2 * i] = hex[g_olx.app_desc.app_elf_sha256[i] >> 4];
        app_elf_sha256_str[2 * i + 1] = hex[g_olx.app_desc.app_elf_sha256[i] & 0xF];
    }
    app_elf_sha256_str[size - 1] = '\0';
}

static void olx_shutdown_handler(void)
{
    olx_reexec(ESP_RST_SW);
}

static void boot(int argc, char **argv)
{
    (void)argc;
    g_olx.argv = argv;
    read_config();

    int fd = open(g_olx.flash_path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        fatal(2, "cannot open the flash file %s: %s (create it before the first start: 0xFF-filled, "
                 "the partition table at 0x8000, the app in ota_0)", g_olx.flash_path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < (off_t)(OLX_PARTITION_TABLE_OFFSET + OLX_PARTITION_TABLE_MAX_LEN) ||
        st.st_size % OLX_SECTOR_SIZE != 0 || st.st_size > 0x40000000) {
        fatal(2, "flash file %s: its size (%lld bytes) is not a multiple of 4096 holding the partition table",
              g_olx.flash_path, (long long)st.st_size);
    }
    g_olx.flash_size = (uint32_t)st.st_size;
    uint8_t raw[OLX_PARTITION_TABLE_MAX_LEN];
    char msg[200];
    if (pread_all(fd, raw, sizeof(raw), OLX_PARTITION_TABLE_OFFSET) != 0) {
        fatal(2, "cannot read %s: %s", g_olx.flash_path, strerror(errno));
    }
    if (!olx_partition_table_parse(raw, sizeof(raw), g_olx.flash_size, md5, &g_olx.table, msg, sizeof(msg))) {
        fatal(2, "bad partition table in %s: %s", g_olx.flash_path, msg);
    }
    if (g_olx.table.app_count == 0 && g_olx.table.factory < 0) {
        fatal(2, "bad partition table in %s: no app partition", g_olx.flash_path);
    }
    if (g_olx.table.app_count > 0 && g_olx.table.otadata < 0) {
        fatal(2, "bad partition table in %s: OTA app slots but no otadata partition", g_olx.flash_path);
    }
    olx_efuse_load();

    boot_ctx_t ctx = {.fd = fd};
    olx_boot_ops_t ops = {
        .ctx = &ctx,
        .app_count = g_olx.table.app_count,
        .has_factory = g_olx.table.factory >= 0,
        .has_otadata = g_olx.table.otadata >= 0,
        .rollback_enabled = true,
        .anti_rollback = g_olx.anti_rollback,
        .read_otadata = boot_read_otadata,
        .write_otadata = boot_write_otadata,
        .secure_version_ok = boot_secure_version_ok,
        .update_anti_rollback = boot_update_anti_rollback,
        .try_load = boot_try_load,
        .log = boot_log,
    };
    olx_boot_result_t res;
    olx_boot_select(&ops, &res);
    const char *reason = olx_reset_reason_name(g_olx.reset_reason);
    if (res.index == OLX_NO_BOOTABLE_INDEX) {
        fatal(3, "boot %u (%s): no bootable app in %s (a real chip would reset forever)", g_olx.boot_count, reason,
              g_olx.flash_path);
    }
    const olx_partition_info_t *p = partition_of_index(res.index);
    g_olx.booted_index = res.index;
    g_olx.booted_address = p->offset;
    g_olx.booted_subtype = p->subtype;
    _Static_assert(sizeof(g_olx.app_desc) == sizeof(ctx.info.app), "esp_app_desc_t");
    memcpy(&g_olx.app_desc, &ctx.info.app, sizeof(g_olx.app_desc));

    /* The otadata entry for the booted slot, as esp_ota_get_state_partition finds it. */
    char state[64] = "no otadata entry";
    if (res.index == OLX_FACTORY_INDEX) {
        snprintf(state, sizeof(state), "factory app");
    } else {
        olx_otadata_entry_t two[2];
        if (boot_read_otadata(&ctx, two)) {
            for (int i = 0; i < 2; i++) {
                if (olx_otadata_slot(&two[i], g_olx.table.app_count) == (unsigned)res.index &&
                    two[i].crc == olx_otadata_crc(&two[i])) {
                    char buf[11];
                    snprintf(state, sizeof(state), "seq %u %s", (unsigned)two[i].ota_seq,
                             olx_img_state_name(two[i].ota_state, buf));
                    break;
                }
            }
        }
    }
    char version[33], project[33];
    snprintf(version, sizeof(version), "%.32s", g_olx.app_desc.version);
    snprintf(project, sizeof(project), "%.32s", g_olx.app_desc.project_name);
    say("boot %u (%s): %.16s %s, %s %s", g_olx.boot_count, reason, p->label, state, project, version);

    if (crash_version(version)) {
        say("boot %u: %s %s panics at start (ESP_OTA_LINUX_CRASH_VERSIONS): Guru Meditation Error, rebooting",
            g_olx.boot_count, project, version);
        if (g_olx.panic_count + 1 >= BOOT_LOOP_LIMIT) {
            fatal(4, "%u consecutive panics at boot: boot loop, giving up", g_olx.panic_count + 1);
        }
        close(fd);
        olx_reexec(ESP_RST_PANIC);
    }
    close(fd);

    esp_partition_file_mmap_ctrl_t *ctrl = esp_partition_get_file_mmap_ctrl_input();
    memset(ctrl, 0, sizeof(*ctrl));
    snprintf(ctrl->flash_file_name, sizeof(ctrl->flash_file_name), "%s", g_olx.flash_path);
    ctrl->flash_file_size = 0;
    ctrl->remove_dump = false;

    set_elf_sha256_str();
    /* Registered first, so it runs last: esp_restart() runs handlers from the highest index. */
    esp_err_t err = esp_register_shutdown_handler(olx_shutdown_handler);
    if (err != ESP_OK) {
        fatal(2, "esp_register_shutdown_handler failed: %s", esp_err_to_name(err));
    }
    g_olx.booted = true;
    olx_heap_start();
}

/* glibc calls the main program's constructors with (argc, argv, envp). */
__attribute__((constructor(101))) static void olx_boot_constructor(int argc, char **argv, char **envp)
{
    (void)envp;
    /* lwIP has no SIGPIPE: a write to a socket its peer closed returns an error there.
     * Linux would kill the device instead (esp_http_server sends without MSG_NOSIGNAL). */
    signal(SIGPIPE, SIG_IGN);
    boot(argc, argv);
}

/* ---- restart ------------------------------------------------------------------------------ */

void olx_reexec(esp_reset_reason_t reason)
{
    /* No FreeRTOS tick (SIGALRM) may switch tasks from here on: the device is going down. */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    fflush(stdout);
    fflush(stderr);
    if (g_olx.booted) {
        olx_heap_final();
    }
    if (__gcov_dump != NULL) {
        __gcov_dump();
    }
    unsigned next_panics = reason == ESP_RST_PANIC ? g_olx.panic_count + 1 : 0;
    say("restart (%s): the device is off for %u ms", olx_reset_reason_name(reason), (unsigned)g_olx.reboot_delay_ms);

    /* The app's sockets (a listening port), the flash file, everything but stdio. */
    close_range(3, ~0u, 0);
    struct timespec ts = {.tv_sec = g_olx.reboot_delay_ms / 1000, .tv_nsec = (long)(g_olx.reboot_delay_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    /* The FreeRTOS port's tick timer survives execve: stop it and drop a pending tick. */
    struct itimerval off = {0};
    setitimer(ITIMER_REAL, &off, NULL);
    signal(SIGALRM, SIG_IGN);
    signal(SIGALRM, SIG_DFL);
    signal(SIGUSR1, SIG_IGN); /* the port's SIG_RESUME */
    signal(SIGUSR1, SIG_DFL);

    char number[16];
    setenv(ENV_RESET_REASON, olx_reset_reason_name(reason), 1);
    snprintf(number, sizeof(number), "%u", g_olx.boot_count);
    setenv(ENV_BOOT_COUNT, number, 1);
    snprintf(number, sizeof(number), "%u", next_panics);
    setenv(ENV_PANIC_COUNT, number, 1);

    static char *fallback_argv[] = {"/proc/self/exe", NULL};
    char **argv = g_olx.argv != NULL ? g_olx.argv : fallback_argv;
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL); /* the new image starts with an empty mask */
    execv("/proc/self/exe", argv);
    fprintf(stderr, OLX_LOG_PREFIX "restart: execv(/proc/self/exe) failed: %s\n", strerror(errno));
    _exit(1);
}
