/*
 * parking.h - permits parked while every provider is in its cooldown
 * (llmguardd(8), "Parking").
 *
 * The event-loop glue of one FIFO queue and one timer: a timerfd
 * (CLOCK_MONOTONIC, armed for an absolute instant to the nanosecond, as
 * the buckets' timers are), set for the earliest instant a parked request
 * asked to be woken at: the end of the first cooldown.  When it fires, or
 * when parking_wake() is called (a success cleared a cooldown), every
 * parked request is taken out and woken, oldest first; a request that
 * parks again from its callback goes to the back of the new queue, so the
 * order among them stays.  A request whose connection closes leaves the
 * queue at once: parking_drop_conn() is the close hook of the connection
 * slot given to parking_new().
 */
#ifndef LLMGUARD_PARKING_H
#define LLMGUARD_PARKING_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/queue.h>

#include <event2/event.h>

struct conn;
struct parking;
struct parked;

/*
 * Called once per parked request, taken out of the queue: woken at now_s
 * (monotonic), or gone (p->conn is NULL: its connection closed, there is
 * nothing to answer).  The callback owns p from then on (it may park it
 * again, or free it).
 */
typedef void (*parked_fn)(struct parked *p, double now_s);

struct parked {
    TAILQ_ENTRY(parked) entry;          /* in the queue */
    TAILQ_ENTRY(parked) conn_entry;     /* on its connection */
    struct conn *conn;
    double parked_s;                    /* monotonic, when parked */
    double wake_s;                      /* when it asked to be woken */
    parked_fn done;
    void *arg;                          /* the caller's */
};

/* An empty queue on base; parked requests are kept in connection slot
 * conn_slot.  NULL (logged) on failure. */
struct parking *parking_new(struct event_base *base, int conn_slot);
/* After every connection closed (the queue is empty): free pk. */
void parking_free(struct parking *pk);

/* Park p (p->conn, done and arg set) until wake_s (monotonic) or an
 * earlier parking_wake(); 0, or -1 when out of memory (p untouched). */
int parking_add(struct parking *pk, struct parked *p, double now_s,
                double wake_s);
/* Wake every parked request now, oldest first. */
void parking_wake(struct parking *pk);
/* How many are parked. */
size_t parking_count(const struct parking *pk);

/* Close hook: the connection's parked requests leave the queue, and
 * each is called back with p->conn NULL. */
void parking_drop_conn(void *state);

#endif
