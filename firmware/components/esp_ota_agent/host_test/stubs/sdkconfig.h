/*
 * The sdkconfig.h ESP-IDF headers include (esp_err.h -> esp_compiler.h), for the host
 * unit tests, which have no ESP-IDF build and need no option.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#pragma once
