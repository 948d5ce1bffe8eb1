/*
 * TEST-ONLY (esp_ota_linux, never part of a firmware): two differences between a chip and
 * ESP-IDF's linux target that the device's code must not see.
 *
 * 1. No EINTR. FreeRTOS' POSIX port switches tasks from a SIGALRM handler installed
 *    without SA_RESTART, so on linux every blocking socket call of every task can fail
 *    with EINTR at each tick. lwIP never returns EINTR: esp-tls, esp_http_client and
 *    esp_http_server treat it as a broken connection (a download then "breaks" every few
 *    hundred milliseconds). These wraps retry, as the call would have gone on on a chip;
 *    select() and poll() keep their original deadline.
 * 2. esp_timer callbacks in a FreeRTOS task. On a chip they run in the esp_timer task;
 *    esp-protocols' linux esp_timer runs them on a std::thread, from which FreeRTOS' API
 *    must not be called (mdns' timer posts to a FreeRTOS queue: the port's scheduler state
 *    gets corrupted and asserts). Here they run in FreeRTOS' timer service task.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "esp_err.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/timers.h"

/* --- no EINTR ------------------------------------------------------------------------ */

ssize_t __real_read(int fd, void *buf, size_t count);
ssize_t __real_write(int fd, const void *buf, size_t count);
ssize_t __real_recv(int fd, void *buf, size_t len, int flags);
ssize_t __real_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *from, socklen_t *fromlen);
ssize_t __real_send(int fd, const void *buf, size_t len, int flags);
ssize_t __real_sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to, socklen_t tolen);
int __real_accept(int fd, struct sockaddr *addr, socklen_t *addrlen);
int __real_connect(int fd, const struct sockaddr *addr, socklen_t addrlen);
int __real_select(int nfds, fd_set *readfds, fd_set *writefds, fd_set *exceptfds, struct timeval *timeout);
int __real_poll(struct pollfd *fds, nfds_t nfds, int timeout);

ssize_t __wrap_read(int fd, void *buf, size_t count);
ssize_t __wrap_write(int fd, const void *buf, size_t count);
ssize_t __wrap_recv(int fd, void *buf, size_t len, int flags);
ssize_t __wrap_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *from, socklen_t *fromlen);
ssize_t __wrap_send(int fd, const void *buf, size_t len, int flags);
ssize_t __wrap_sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to, socklen_t tolen);
int __wrap_accept(int fd, struct sockaddr *addr, socklen_t *addrlen);
int __wrap_connect(int fd, const struct sockaddr *addr, socklen_t addrlen);
int __wrap_select(int nfds, fd_set *readfds, fd_set *writefds, fd_set *exceptfds, struct timeval *timeout);
int __wrap_poll(struct pollfd *fds, nfds_t nfds, int timeout);

#define RETRY_ON_EINTR(call)               \
    do {                                   \
        ssize_t result_;                   \
        do {                               \
            result_ = (call);              \
        } while (result_ < 0 && errno == EINTR); \
        return result_;                    \
    } while (0)

ssize_t __wrap_read(int fd, void *buf, size_t count) { RETRY_ON_EINTR(__real_read(fd, buf, count)); }
ssize_t __wrap_write(int fd, const void *buf, size_t count) { RETRY_ON_EINTR(__real_write(fd, buf, count)); }
ssize_t __wrap_recv(int fd, void *buf, size_t len, int flags) { RETRY_ON_EINTR(__real_recv(fd, buf, len, flags)); }
ssize_t __wrap_send(int fd, const void *buf, size_t len, int flags) { RETRY_ON_EINTR(__real_send(fd, buf, len, flags)); }

ssize_t __wrap_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *from, socklen_t *fromlen)
{
    RETRY_ON_EINTR(__real_recvfrom(fd, buf, len, flags, from, fromlen));
}

ssize_t __wrap_sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to, socklen_t tolen)
{
    RETRY_ON_EINTR(__real_sendto(fd, buf, len, flags, to, tolen));
}

int __wrap_accept(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
    int result;
    do {
        result = __real_accept(fd, addr, addrlen);
    } while (result < 0 && errno == EINTR);
    return result;
}

static int64_t now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* A connect() that a signal interrupts goes on in the background: wait for it as the
 * blocking call would have, and answer its outcome. */
int __wrap_connect(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    if (__real_connect(fd, addr, addrlen) == 0) {
        return 0;
    }
    if (errno != EINTR) {
        return -1;
    }
    struct pollfd writable = {.fd = fd, .events = POLLOUT};
    while (__real_poll(&writable, 1, -1) < 0) {
        if (errno != EINTR) {
            return -1;
        }
    }
    int error = 0;
    socklen_t length = sizeof(error);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) {
        return -1;
    }
    if (error != 0) {
        errno = error;
        return -1;
    }
    return 0;
}

int __wrap_poll(struct pollfd *fds, nfds_t nfds, int timeout)
{
    int64_t deadline = timeout >= 0 ? now_ms() + timeout : 0;
    while (true) {
        int result = __real_poll(fds, nfds, timeout);
        if (result >= 0 || errno != EINTR) {
            return result;
        }
        if (timeout > 0) {
            int64_t left = deadline - now_ms();
            timeout = left > 0 ? (int)left : 0;
        }
    }
}

int __wrap_select(int nfds, fd_set *readfds, fd_set *writefds, fd_set *exceptfds, struct timeval *timeout)
{
    /* select() may have changed the sets when it failed: keep the caller's to retry. */
    fd_set read_copy, write_copy, except_copy;
    if (readfds != NULL) {
        read_copy = *readfds;
    }
    if (writefds != NULL) {
        write_copy = *writefds;
    }
    if (exceptfds != NULL) {
        except_copy = *exceptfds;
    }
    int64_t deadline = timeout != NULL ? now_ms() + timeout->tv_sec * 1000 + timeout->tv_usec / 1000 : 0;
    while (true) {
        int result = __real_select(nfds, readfds, writefds, exceptfds, timeout);
        if (result >= 0 || errno != EINTR) {
            return result;
        }
        if (readfds != NULL) {
            *readfds = read_copy;
        }
        if (writefds != NULL) {
            *writefds = write_copy;
        }
        if (exceptfds != NULL) {
            *exceptfds = except_copy;
        }
        if (timeout != NULL) {
            int64_t left = deadline - now_ms();
            if (left < 0) {
                left = 0;
            }
            timeout->tv_sec = (time_t)(left / 1000);
            timeout->tv_usec = (suseconds_t)((left % 1000) * 1000);
        }
    }
}

/* --- esp_timer on FreeRTOS timers ---------------------------------------------------- */

typedef struct {
    esp_timer_cb_t callback;
    void *arg;
    TimerHandle_t timer;
} olx_timer_t;

esp_err_t __wrap_esp_timer_create(const esp_timer_create_args_t *create_args, esp_timer_handle_t *out_handle);
esp_err_t __wrap_esp_timer_start_periodic(esp_timer_handle_t timer, uint64_t period_us);
esp_err_t __wrap_esp_timer_start_once(esp_timer_handle_t timer, uint64_t timeout_us);
esp_err_t __wrap_esp_timer_stop(esp_timer_handle_t timer);
esp_err_t __wrap_esp_timer_delete(esp_timer_handle_t timer);

static void on_timer(TimerHandle_t timer)
{
    olx_timer_t *emulated = pvTimerGetTimerID(timer);
    emulated->callback(emulated->arg);
}

static TickType_t ticks_of(uint64_t microseconds)
{
    TickType_t ticks = pdMS_TO_TICKS(microseconds / 1000);
    return ticks > 0 ? ticks : 1;
}

esp_err_t __wrap_esp_timer_create(const esp_timer_create_args_t *create_args, esp_timer_handle_t *out_handle)
{
    if (create_args == NULL || create_args->callback == NULL || out_handle == NULL) {
        return ESP_ERR_INVALID_ARG;
    }
    olx_timer_t *emulated = calloc(1, sizeof(*emulated));
    if (emulated == NULL) {
        return ESP_ERR_NO_MEM;
    }
    emulated->callback = create_args->callback;
    emulated->arg = create_args->arg;
    emulated->timer = xTimerCreate(create_args->name != NULL ? create_args->name : "esp_timer",
                                   1, pdFALSE, emulated, on_timer);
    if (emulated->timer == NULL) {
        free(emulated);
        return ESP_ERR_NO_MEM;
    }
    *out_handle = (esp_timer_handle_t)emulated;
    return ESP_OK;
}

static esp_err_t start(esp_timer_handle_t timer, uint64_t period_us, bool periodic)
{
    olx_timer_t *emulated = (olx_timer_t *)timer;
    if (emulated == NULL) {
        return ESP_ERR_INVALID_ARG;
    }
    if (xTimerIsTimerActive(emulated->timer)) {
        return ESP_ERR_INVALID_STATE;  /* as esp_timer: stop it first */
    }
    vTimerSetReloadMode(emulated->timer, periodic ? pdTRUE : pdFALSE);
    return xTimerChangePeriod(emulated->timer, ticks_of(period_us), portMAX_DELAY) == pdPASS
           ? ESP_OK : ESP_FAIL;
}

esp_err_t __wrap_esp_timer_start_periodic(esp_timer_handle_t timer, uint64_t period_us)
{
    return start(timer, period_us, true);
}

esp_err_t __wrap_esp_timer_start_once(esp_timer_handle_t timer, uint64_t timeout_us)
{
    return start(timer, timeout_us, false);
}

esp_err_t __wrap_esp_timer_stop(esp_timer_handle_t timer)
{
    olx_timer_t *emulated = (olx_timer_t *)timer;
    if (emulated == NULL) {
        return ESP_ERR_INVALID_ARG;
    }
    if (!xTimerIsTimerActive(emulated->timer)) {
        return ESP_ERR_INVALID_STATE;
    }
    return xTimerStop(emulated->timer, portMAX_DELAY) == pdPASS ? ESP_OK : ESP_FAIL;
}

esp_err_t __wrap_esp_timer_delete(esp_timer_handle_t timer)
{
    olx_timer_t *emulated = (olx_timer_t *)timer;
    if (emulated == NULL) {
        return ESP_ERR_INVALID_ARG;
    }
    if (xTimerIsTimerActive(emulated->timer)) {
        return ESP_ERR_INVALID_STATE;
    }
    xTimerDelete(emulated->timer, portMAX_DELAY);
    free(emulated);
    return ESP_OK;
}
