/* parking.c - a FIFO of parked requests and the timer that wakes them. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "parking.h"
#include "server.h"

TAILQ_HEAD(parked_list, parked);

struct parking {
    struct parked_list queue;           /* oldest first */
    size_t n;
    int timer_fd;
    struct event *timer;
    double armed_s;                     /* NAN: not armed */
    int slot;                           /* connection slot: conn_parked */
};

/* A connection's parked requests, in its slot. */
struct conn_parked {
    struct parked_list list;
    struct parking *owner;
};

/* Arm the timer for the monotonic instant at_s (INFINITY: disarm), with a
 * system call only when that changes. */
static void
arm(struct parking *pk, double at_s)
{
    /* Rounded up: never woken before the cooldown has ended. */
    if (clock_arm_timerfd(pk->timer_fd, &pk->armed_s, at_s) < 0)
        log_error("%s: %s", __func__, strerror(errno));
}

/* The timer for the earliest wake_s of the queue. */
static void
rearm(struct parking *pk)
{
    double at = INFINITY;
    struct parked *p;

    TAILQ_FOREACH(p, &pk->queue, entry)
        at = fmin(at, p->wake_s);
    arm(pk, at);
}

/* Out of the queue and off its connection. */
static void
take_out(struct parking *pk, struct parked *p)
{
    struct conn_parked *cp = *conn_slot(p->conn, pk->slot);

    TAILQ_REMOVE(&pk->queue, p, entry);
    TAILQ_REMOVE(&cp->list, p, conn_entry);
    pk->n--;
}

void
parking_wake(struct parking *pk)
{
    struct parked_list woken = TAILQ_HEAD_INITIALIZER(woken);
    double now = clock_mono();
    struct parked *p;

    /* The whole queue at once: those that park again go to a new one. */
    while ((p = TAILQ_FIRST(&pk->queue)) != NULL) {
        take_out(pk, p);
        TAILQ_INSERT_TAIL(&woken, p, entry);
    }
    while ((p = TAILQ_FIRST(&woken)) != NULL) {
        TAILQ_REMOVE(&woken, p, entry);
        p->done(p, now);
    }
    rearm(pk);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct parking *pk = arg;
    uint64_t expirations;

    /* Read the expiry count, or the descriptor stays readable. */
    if (read(fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
        log_error("%s: %s", __func__, strerror(errno));
    pk->armed_s = NAN;
    parking_wake(pk);
}

int
parking_add(struct parking *pk, struct parked *p, double now_s, double wake_s)
{
    void **slot = conn_slot(p->conn, pk->slot);
    struct conn_parked *cp = *slot;

    if (cp == NULL) {
        if ((cp = malloc(sizeof(*cp))) == NULL)
            return -1;
        TAILQ_INIT(&cp->list);
        cp->owner = pk;
        *slot = cp;
    }
    p->parked_s = now_s;
    p->wake_s = wake_s;
    TAILQ_INSERT_TAIL(&pk->queue, p, entry);
    TAILQ_INSERT_TAIL(&cp->list, p, conn_entry);
    pk->n++;
    if (isnan(pk->armed_s) || wake_s < pk->armed_s)
        arm(pk, wake_s);
    return 0;
}

size_t
parking_count(const struct parking *pk)
{
    return pk->n;
}

void
parking_drop_conn(void *state)
{
    struct conn_parked *cp = state;
    struct parking *pk = cp->owner;
    double now = clock_mono();
    struct parked *p;

    while ((p = TAILQ_FIRST(&cp->list)) != NULL) {
        TAILQ_REMOVE(&cp->list, p, conn_entry);
        TAILQ_REMOVE(&pk->queue, p, entry);
        pk->n--;
        p->conn = NULL;
        p->done(p, now);
    }
    free(cp);
    rearm(pk);
}

struct parking *
parking_new(struct event_base *base, int conn_slot)
{
    struct parking *pk = calloc(1, sizeof(*pk));

    if (pk == NULL)
        goto fail;
    TAILQ_INIT(&pk->queue);
    pk->timer_fd = -1;
    pk->slot = conn_slot;
    pk->armed_s = NAN;
    pk->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (pk->timer_fd < 0)
        goto fail;
    pk->timer = event_new(base, pk->timer_fd, EV_READ | EV_PERSIST, timer_cb,
                          pk);
    if (pk->timer == NULL || event_add(pk->timer, NULL) < 0)
        goto fail;
    return pk;
fail:
    log_error("%s: %s", __func__, errno ? strerror(errno) : "out of memory");
    if (pk != NULL && pk->timer != NULL)
        event_free(pk->timer);
    if (pk != NULL && pk->timer_fd >= 0)
        close(pk->timer_fd);
    free(pk);
    return NULL;
}

void
parking_free(struct parking *pk)
{
    if (pk == NULL)
        return;
    event_free(pk->timer);
    close(pk->timer_fd);
    free(pk);
}
