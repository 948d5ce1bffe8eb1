/*
 * Helpers shared by the unit tests: a stand-in for esp_err_to_name and the check that a
 * renderer is exact at every buffer size.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#pragma once

#include <stddef.h>
#include "esp_err.h"

/** esp_err_to_name for the codes the tests use; "UNKNOWN ERROR" for the others. */
const char *test_err_name(esp_err_t code);

/** Renders a document of the test's choosing into buf; returns its length or 0. */
typedef size_t (*test_render_fn)(char *buf, size_t cap, const void *arg);

/**
 * Render into a heap buffer of exactly `cap` bytes for every cap from 0 to the full
 * length + 1 (AddressSanitizer stops any write past it) and check: 0 until the document
 * and its NUL fit, then the document itself; always NUL-terminated (cap > 0), always a
 * prefix of the document. Fails the running Unity test otherwise.
 */
void test_every_capacity(test_render_fn render, const void *arg, const char *expected);
