/*
 * TEST-ONLY (esp_ota_linux, never part of a firmware): two differences between a chip and
 * ESP-IDF's linux target that the device's code must not see.
 *
 * 1. Socket waits as lwIP's. FreeRTOS' POSIX port switches tasks from a SIGALRM handler
 *    installed without SA_RESTART, so on linux every blocking socket call of every task
 *    can fail with EINTR at each tick. lwIP never returns EINTR: esp-tls, esp_http_client
 *    and esp_http_server treat it as a broken connection (a download then "breaks" every
 *    few hundred milliseconds). And a task waiting on a socket on a chip blocks on a
 *    FreeRTOS semaphore, so lower-priority tasks run meanwhile; a task blocked in a linux
 *    system call is still running for FreeRTOS, and starves every lower-priority task
 *    (the timer task: no software timer fired while a download waited for bytes). Here
 *    select(), poll() and the reads and writes of blocking sockets, called from a FreeRTOS
 *    task, try without waiting and, while nothing is ready, give the CPU up for a tick
 *    (vTaskDelay) until their deadline (the socket's SO_RCVTIMEO / SO_SNDTIMEO for reads
 *    and writes); every other call is retried on EINTR.
 * 2. esp_timer callbacks in a FreeRTOS task. On a chip they run in the esp_timer task;
 *    esp-protocols' linux esp_timer runs them on a std::thread, from which FreeRTOS' API
 *    must not be called (mdns' timer posts to a FreeRTOS queue: the port's scheduler state
 *    gets corrupted and asserts). Here they run in FreeRTOS' timer service task.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "esp_err.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "freertos/timers.h"

/* --- socket waits as lwIP's ------------------------------------------------------------ */

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

static int64_t now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static bool in_a_task(void)
{
    return xTaskGetSchedulerState() == taskSCHEDULER_RUNNING;
}

/* Whether a call on `fd` that may wait must wait as lwIP does: a blocking socket, used
 * from a FreeRTOS task. */
static bool waits_like_lwip(int fd, int flags)
{
    if ((flags & MSG_DONTWAIT) != 0 || !in_a_task()) {
        return false;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) {
        return false;
    }
    int mode = fcntl(fd, F_GETFL);
    return mode >= 0 && (mode & O_NONBLOCK) == 0;
}

/* The socket's SO_RCVTIMEO or SO_SNDTIMEO in ms; -1: none (wait for ever). */
static int64_t socket_timeout_ms(int fd, int option)
{
    struct timeval timeout;
    socklen_t length = sizeof(timeout);
    if (getsockopt(fd, SOL_SOCKET, option, &timeout, &length) != 0
        || (timeout.tv_sec == 0 && timeout.tv_usec == 0)) {
        return -1;
    }
    return (int64_t)timeout.tv_sec * 1000 + timeout.tv_usec / 1000;
}

typedef enum { TRANSFER_RECV, TRANSFER_SEND, TRANSFER_READ, TRANSFER_WRITE } transfer_t;

/* One socket transfer as lwIP's blocking call: try without waiting, and while it would
 * block give the CPU up for a tick, until the socket's own timeout (then EAGAIN, as the
 * blocking call would have answered). Other descriptors and callers: retried on EINTR. */
static ssize_t transfer(transfer_t kind, int fd, void *buf, size_t len, int flags)
{
    bool lwip = waits_like_lwip(fd, flags);
    int timeout_option = kind == TRANSFER_RECV || kind == TRANSFER_READ ? SO_RCVTIMEO : SO_SNDTIMEO;
    int64_t timeout = lwip ? socket_timeout_ms(fd, timeout_option) : -1;
    int64_t deadline = now_ms() + timeout;
    while (true) {
        ssize_t result;
        switch (kind) {
        case TRANSFER_RECV:
        case TRANSFER_READ:
            result = lwip ? __real_recv(fd, buf, len, flags | MSG_DONTWAIT)
                          : kind == TRANSFER_READ ? __real_read(fd, buf, len) : __real_recv(fd, buf, len, flags);
            break;
        default:
            result = lwip ? __real_send(fd, buf, len, flags | MSG_DONTWAIT)
                          : kind == TRANSFER_WRITE ? __real_write(fd, buf, len) : __real_send(fd, buf, len, flags);
            break;
        }
        if (result >= 0 || errno == EINTR) {
            if (result >= 0) {
                return result;
            }
            continue;
        }
        if (!lwip || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            return result;
        }
        if (timeout >= 0 && now_ms() >= deadline) {
            errno = EAGAIN;
            return -1;
        }
        vTaskDelay(1);
    }
}

ssize_t __wrap_read(int fd, void *buf, size_t count)
{
    return transfer(TRANSFER_READ, fd, buf, count, 0);
}

ssize_t __wrap_write(int fd, const void *buf, size_t count)
{
    return transfer(TRANSFER_WRITE, fd, (void *)buf, count, 0);
}

ssize_t __wrap_recv(int fd, void *buf, size_t len, int flags)
{
    return transfer(TRANSFER_RECV, fd, buf, len, flags);
}

ssize_t __wrap_send(int fd, const void *buf, size_t len, int flags)
{
    return transfer(TRANSFER_SEND, fd, (void *)buf, len, flags);
}

ssize_t __wrap_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *from, socklen_t *fromlen)
{
    ssize_t result;
    do {
        result = __real_recvfrom(fd, buf, len, flags, from, fromlen);
    } while (result < 0 && errno == EINTR);
    return result;
}

ssize_t __wrap_sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to, socklen_t tolen)
{
    ssize_t result;
    do {
        result = __real_sendto(fd, buf, len, flags, to, tolen);
    } while (result < 0 && errno == EINTR);
    return result;
}

int __wrap_accept(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
    int result;
    do {
        result = __real_accept(fd, addr, addrlen);
    } while (result < 0 && errno == EINTR);
    return result;
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
    while (__wrap_poll(&writable, 1, -1) < 0) {
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
    bool yield = in_a_task();
    int64_t deadline = now_ms() + timeout;
    while (true) {
        int wait = timeout;
        if (yield) {
            wait = 0;
        } else if (timeout > 0) {
            int64_t left = deadline - now_ms();
            wait = left > 0 ? (int)left : 0;
        }
        int result = __real_poll(fds, nfds, wait);
        if (result > 0 || (result < 0 && errno != EINTR) || (result == 0 && !yield)) {
            return result;
        }
        if (timeout >= 0 && now_ms() >= deadline) {
            return 0;
        }
        if (yield) {
            vTaskDelay(1);
        }
    }
}

int __wrap_select(int nfds, fd_set *readfds, fd_set *writefds, fd_set *exceptfds, struct timeval *timeout)
{
    /* select() changes the sets (and may the timeout): keep the caller's to look again. */
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
    bool yield = in_a_task();
    int64_t deadline = timeout != NULL ? now_ms() + timeout->tv_sec * 1000 + timeout->tv_usec / 1000 : 0;
    while (true) {
        struct timeval wait = {0, 0};
        if (!yield && timeout != NULL) {
            int64_t left = deadline - now_ms();
            if (left < 0) {
                left = 0;
            }
            wait.tv_sec = (time_t)(left / 1000);
            wait.tv_usec = (suseconds_t)((left % 1000) * 1000);
        }
        int result = __real_select(nfds, readfds, writefds, exceptfds,
                                   yield || timeout != NULL ? &wait : NULL);
        if (result > 0 || (result < 0 && errno != EINTR) || (result == 0 && !yield)) {
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
        if (timeout != NULL && now_ms() >= deadline) {
            if (readfds != NULL) {
                FD_ZERO(readfds);
            }
            if (writefds != NULL) {
                FD_ZERO(writefds);
            }
            if (exceptfds != NULL) {
                FD_ZERO(exceptfds);
            }
            return 0;
        }
        if (yield) {
            vTaskDelay(1);
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
