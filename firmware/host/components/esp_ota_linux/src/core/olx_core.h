/*
 * TEST-ONLY CODE: never part of a firmware.
 *
 * esp_ota_linux lets the esp_ota_agent component run on ESP-IDF's linux target, where
 * app_update (esp_ota_ops), bootloader_support and esp_https_ota are not built, so that
 * the agent can be tested on a PC against the same conformance suite as the Python
 * simulator. This header is the layer's PURE logic: the rules of ESP-IDF v5.5's
 * bootloader_support (otadata entries, boot slot selection, esp_image_verify, the chip
 * checks) and the small helpers they need (CRC-32, SHA-256, partition table parsing).
 * It depends only on libc, so host_test/ can unit-test it without FreeRTOS or ESP-IDF.
 * The layouts below are ESP-IDF's (esp_flash_partitions.h, esp_app_format.h,
 * esp_app_desc.h); the sources cited next to each function are the ones mirrored.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define OLX_SECTOR_SIZE 4096u
#define OLX_SEQ_ERASED UINT32_MAX

/* CRC-32 and SHA-256 are ESP-IDF's own: esp_rom_crc32_le (as the bootloader computes
 * otadata CRCs) and mbedtls' SHA-256 (as esp_image_verify hashes an image). */
#include "esp_rom_crc.h"
#include "mbedtls/sha256.h"

/* ---- otadata (esp_flash_partitions.h, bootloader_common_loader.c, esp_ota_ops.c) ------ */

typedef enum {
    OLX_IMG_NEW = 0x0,
    OLX_IMG_PENDING_VERIFY = 0x1,
    OLX_IMG_VALID = 0x2,
    OLX_IMG_INVALID = 0x3,
    OLX_IMG_ABORTED = 0x4,
    OLX_IMG_UNDEFINED = 0xFFFFFFFFu,
} olx_img_state_t;

/* esp_ota_select_entry_t: the first 32 bytes of each of the two otadata sectors. */
typedef struct {
    uint32_t ota_seq;
    uint8_t seq_label[20];
    uint32_t ota_state;
    uint32_t crc; /* esp_rom_crc32_le(UINT32_MAX, &ota_seq, 4) */
} olx_otadata_entry_t;

_Static_assert(sizeof(olx_otadata_entry_t) == 32, "esp_ota_select_entry_t is 32 bytes");

/* bootloader_common_ota_select_crc */
uint32_t olx_otadata_crc(const olx_otadata_entry_t *e);
/* An entry with seq, state and the right crc; label erased (0xFF). */
olx_otadata_entry_t olx_otadata_make(uint32_t seq, uint32_t state);
/* bootloader_common_ota_select_invalid: erased seq, or state INVALID/ABORTED. */
bool olx_otadata_invalid(const olx_otadata_entry_t *e);
/* bootloader_common_ota_select_valid: not invalid and crc right. */
bool olx_otadata_valid(const olx_otadata_entry_t *e);
/* Erased seq or wrong crc: the bootloader's "initial state" test. */
bool olx_otadata_initial(const olx_otadata_entry_t *e);
/* esp_ota_ops.c check_invalid_otadata: a well-formed entry in state INVALID/ABORTED. */
bool olx_otadata_rolled_back(const olx_otadata_entry_t *e);
/* (seq - 1) % app_count in u32 arithmetic; app_count must be > 0. */
unsigned olx_otadata_slot(const olx_otadata_entry_t *e, unsigned app_count);
/* bootloader_common_select_otadata: index of the usable entry with the max (or min) seq,
 * -1 when neither is usable. */
int olx_select_otadata(const olx_otadata_entry_t two[2], const bool usable[2], bool max);
/* bootloader_common_get_active_otadata: the valid entry with the higher seq, or -1. */
int olx_active_otadata(const olx_otadata_entry_t two[2]);
/* esp_ota_ops.c get_last_invalid_otadata: of the rolled-back entries the one with the
 * LOWER seq (ESP-IDF selects with max=false), or -1. */
int olx_last_invalid_otadata(const olx_otadata_entry_t two[2]);
/* esp_rewrite_ota_data: the otadata sector to write and the entry to write there so that
 * `slot` boots next with `state` (NEW with rollback enabled). The sector is the one NOT
 * holding the active entry (sector 0 when none is active); the seq is the smallest
 * seq >= the active one that selects `slot`, slot + 1 when none is active. The label
 * and nothing else is kept from the entry that was in that sector, as ESP-IDF does. */
void olx_otadata_for_boot_slot(const olx_otadata_entry_t two[2], unsigned slot,
                               unsigned app_count, uint32_t state, int *out_sector,
                               olx_otadata_entry_t *out_entry);
/* The state name as esp_ota_img_states_t names it, lower case ("pending_verify"), or
 * "0x..." for other values (buf must hold 11 bytes; returned when used). */
const char *olx_img_state_name(uint32_t state, char buf[11]);

/* ---- app images (esp_app_format.h, esp_app_desc.h, esp_image_format.c) ------------------ */

#define OLX_IMAGE_MAGIC 0xE9u
#define OLX_IMAGE_MAX_SEGMENTS 16u
#define OLX_APP_DESC_MAGIC 0xABCD5432u
#define OLX_APP_DESC_OFFSET 32u /* 24-byte image header + 8-byte first segment header */
#define OLX_CHIP_REV_UNSET 0xFFFFu

typedef struct __attribute__((packed)) {
    uint8_t magic;
    uint8_t segment_count;
    uint8_t spi_mode;
    uint8_t spi_speed_size;
    uint32_t entry_addr;
    uint8_t wp_pin;
    uint8_t spi_pin_drv[3];
    uint16_t chip_id;
    uint8_t min_chip_rev;
    uint16_t min_chip_rev_full;
    uint16_t max_chip_rev_full;
    uint8_t reserved[4];
    uint8_t hash_appended;
} olx_image_header_t;

_Static_assert(sizeof(olx_image_header_t) == 24, "esp_image_header_t is 24 bytes");

/* esp_app_desc_t, 256 bytes. */
typedef struct {
    uint32_t magic_word;
    uint32_t secure_version;
    uint32_t reserv1[2];
    char version[32];
    char project_name[32];
    char time[16];
    char date[16];
    char idf_ver[32];
    uint8_t app_elf_sha256[32];
    uint16_t min_efuse_blk_rev_full;
    uint16_t max_efuse_blk_rev_full;
    uint8_t mmu_page_size;
    uint8_t reserv3[3];
    uint32_t reserv2[18];
} olx_app_desc_t;

_Static_assert(sizeof(olx_app_desc_t) == 256, "esp_app_desc_t is 256 bytes");

typedef enum {
    OLX_IMG_OK = 0,
    OLX_IMG_ERR_READ,              /* the flash read failed */
    OLX_IMG_ERR_MAGIC,             /* first byte is not 0xE9 */
    OLX_IMG_ERR_CHIP_ID,           /* image built for another chip */
    OLX_IMG_ERR_CHIP_REV,          /* chip revision outside the image's min/max */
    OLX_IMG_ERR_SEGMENT_COUNT,     /* more than 16 segments */
    OLX_IMG_ERR_NO_APP_DESC,       /* no esp_app_desc_t (magic) at offset 32 */
    OLX_IMG_ERR_SEGMENT_LENGTH,    /* a segment length not a multiple of 4 (or >= 16 MB) */
    OLX_IMG_ERR_TOO_LONG,          /* a segment, the checksum or the hash past the partition */
    OLX_IMG_ERR_CHECKSUM,          /* XOR checksum mismatch */
    OLX_IMG_ERR_SHA256,            /* appended SHA-256 mismatch */
} olx_img_result_t;

const char *olx_img_result_name(olx_img_result_t r);

/* Reads len bytes at offset (relative to the partition start); returns 0 on success. */
typedef int (*olx_read_fn)(void *ctx, uint32_t offset, void *buf, size_t len);

typedef struct {
    uint16_t chip_id;        /* esp_chip_id_t of the emulated chip (ESP32 = 0) */
    uint16_t chip_revision;  /* major * 100 + minor */
} olx_chip_t;

typedef struct {
    olx_image_header_t header;
    olx_app_desc_t app;
    uint32_t image_len;      /* through the checksum byte, plus 32 if the hash is appended */
    uint8_t checksum;
} olx_image_info_t;

/* esp_image_verify(ESP_IMAGE_VERIFY) of the image at the start of a partition of
 * part_size bytes, in ESP-IDF's order: header magic, the chip (id, then revision against
 * min/max; skipped if chip is NULL), segment count <= 16, then (as the simulator's parser
 * does) the app descriptor magic at offset 32, then every segment header (length a
 * multiple of 4 and < 16 MB, data inside the partition), the XOR checksum of the segment
 * data (seed 0xEF) in the last byte of the 16-byte block, and the SHA-256 over bytes
 * 0..checksum byte when hash_appended == 1; the whole image must fit in the partition.
 * msg (may be NULL) receives a one-line reason. info (may be NULL) is filled on success. */
olx_img_result_t olx_image_verify(olx_read_fn read, void *ctx, uint32_t part_size,
                                  const olx_chip_t *chip, olx_image_info_t *info,
                                  char *msg, size_t msg_size);

/* bootloader_common_check_chip_revision_validity's rule: revision >= min_rev_full and, if
 * check_max and max_rev_full is set (not 0 and not 0xFFFF), revision <= max_rev_full. */
bool olx_chip_revision_ok(uint16_t min_rev_full, uint16_t max_rev_full, unsigned revision,
                          bool check_max);

/* ---- partition table (esp_flash_partitions.h) ------------------------------------------ */

#define OLX_PARTITION_TABLE_OFFSET 0x8000u
#define OLX_PARTITION_TABLE_MAX_LEN 0xC00u
#define OLX_PARTITION_MAGIC 0x50AAu
#define OLX_PARTITION_MAGIC_MD5 0xEBEBu
#define OLX_MAX_PARTITIONS 95

typedef struct __attribute__((packed)) {
    uint16_t magic;
    uint8_t type;
    uint8_t subtype;
    uint32_t offset;
    uint32_t size;
    char label[16];
    uint32_t flags;
} olx_partition_info_t;

_Static_assert(sizeof(olx_partition_info_t) == 32, "esp_partition_info_t is 32 bytes");

#define OLX_PART_TYPE_APP 0x00u
#define OLX_PART_TYPE_DATA 0x01u
#define OLX_PART_SUBTYPE_FACTORY 0x00u
#define OLX_PART_SUBTYPE_OTA_0 0x10u
#define OLX_PART_SUBTYPE_DATA_OTA 0x00u

typedef struct {
    olx_partition_info_t entries[OLX_MAX_PARTITIONS];
    int count;
    int otadata;             /* index into entries, -1 if none */
    int factory;             /* index into entries, -1 if none */
    int ota[16];             /* indexes of ota_0.. (consecutive subtypes from ota_0) */
    unsigned app_count;      /* esp_ota_get_app_partition_count */
} olx_partition_table_t;

/* Computes the MD5 of len bytes into out[16] (the table's optional MD5 entry). */
typedef void (*olx_md5_fn)(const void *data, size_t len, uint8_t out[16]);

/* Parse the partition table binary (OLX_PARTITION_TABLE_MAX_LEN bytes read at 0x8000) of
 * a flash of flash_size bytes. Checks what esp_partition_table_verify checks (magic of
 * every entry up to the 0xFF end marker, the MD5 entry if present and md5 is not NULL)
 * and that every partition lies inside the flash and app/otadata rows are sector aligned.
 * Returns true on success; msg gets the reason otherwise. */
bool olx_partition_table_parse(const uint8_t *raw, size_t raw_len, uint32_t flash_size,
                               olx_md5_fn md5, olx_partition_table_t *out, char *msg,
                               size_t msg_size);

/* ---- the bootloader's choice of app (bootloader_utility.c) ----------------------------- */

#define OLX_FACTORY_INDEX (-1)
#define OLX_NO_BOOTABLE_INDEX (-2)

/* What the boot logic needs from the flash and the eFuse. Index -1 is factory, 0.. the
 * OTA slots. */
typedef struct {
    void *ctx;
    unsigned app_count;
    bool has_factory;
    bool has_otadata;        /* the table has an otadata partition */
    bool rollback_enabled;   /* CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE */
    bool anti_rollback;      /* CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK */
    bool (*read_otadata)(void *ctx, olx_otadata_entry_t two[2]);
    void (*write_otadata)(void *ctx, int sector, const olx_otadata_entry_t *entry);
    /* check_anti_rollback: the partition has an app descriptor whose secure_version is not
     * below the eFuse value (only called when anti_rollback). */
    bool (*secure_version_ok)(void *ctx, int index);
    /* update_anti_rollback: burn the partition's secure_version into the eFuse. */
    void (*update_anti_rollback)(void *ctx, int index);
    /* try_load_partition: the image verifies (olx_image_verify with the chip). */
    bool (*try_load)(void *ctx, int index);
    void (*log)(void *ctx, const char *line);
} olx_boot_ops_t;

typedef struct {
    int index;               /* the booted partition, or OLX_NO_BOOTABLE_INDEX */
    int start_index;         /* what otadata selected (bootloader_utility_get_selected_boot_partition) */
    int otadata_index;       /* the active otadata entry that selected it, -1 if none */
    bool first_boot;         /* the entry was NEW and is now PENDING_VERIFY, and it booted */
} olx_boot_result_t;

/* bootloader_utility_get_selected_boot_partition + bootloader_utility_load_boot_image. */
void olx_boot_select(const olx_boot_ops_t *ops, olx_boot_result_t *result);

#ifdef __cplusplus
}
#endif
