/*
 * top.c - llmguardctl top: what llmguardd is doing now, refreshed.
 *
 * Each refresh asks the daemon for ping (uptime), status (the providers)
 * and every page of metrics: llm_requests_total gives the permits per
 * provider and per workflow, whose deltas over the refresh are the rates;
 * workflow_quota_remaining_tokens and llm_quota_exceeded_total name the
 * subjects, and a quota_status for each one shown gives its use.  On a
 * terminal the view is redrawn in place with plain ANSI escapes and q
 * quits; elsewhere it is printed as one block per refresh.
 */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "client_internal.h"
#include "top.h"

#define ID_MAX 257                  /* a quota id and its NUL */
#define PROV_MAX 64
#define LINE_MAX_BYTES 512
#define LINES_MAX 256

struct prov_row {
    char name[ID_MAX];
    char state[16];
    double avail, max, rate, cooldown_s;
    unsigned long long waiters;
    double total, per_s;            /* llm_requests_total, its rate */
    bool has_rate;
};

/* A workflow or a tenant. */
struct subj_row {
    char id[ID_MAX];
    double total, per_s;            /* requests (tenants: over-quota events) */
    bool has_rate, has_quota;
    unsigned long long used, limit;
};

struct subjects {
    struct subj_row *v;
    size_t n, cap;
};

/* One refresh of the view. */
struct sample {
    double mono_s, uptime_s;
    bool enabled;
    char policy[32], enforcement[16];
    struct prov_row prov[PROV_MAX];
    size_t nprov;
    struct subjects wf, tn;
    double total, per_s;            /* all permits, their rate */
    bool has_rate;
    char error[LINE_MAX_BYTES];     /* "" unless this refresh failed */
};

/* The frame being drawn: lines of text. */
struct frame {
    char line[LINES_MAX][LINE_MAX_BYTES];
    int n;
};

static volatile sig_atomic_t stop_signal, resized;

static void
on_signal(int sig)
{
    if (sig == SIGWINCH)
        resized = 1;
    else
        stop_signal = sig;
}

static double
mono_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
copy_str(char *dst, size_t len, struct proto_str s)
{
    snprintf(dst, len, "%.*s", (int)s.len, s.ptr ? s.ptr : "");
}

/* The row of id in subjs, added (zeroed) when missing; NULL on no memory. */
static struct subj_row *
subject_get(struct subjects *subjs, struct proto_str id)
{
    char key[ID_MAX];
    struct subj_row *row;

    copy_str(key, sizeof(key), id);
    for (size_t i = subjs->n; i-- > 0;)     /* series come grouped */
        if (strcmp(subjs->v[i].id, key) == 0)
            return &subjs->v[i];
    if (subjs->n == subjs->cap) {
        size_t cap = subjs->cap ? subjs->cap * 2 : 64;
        struct subj_row *nv = realloc(subjs->v, cap * sizeof(*nv));
        if (nv == NULL)
            return NULL;
        subjs->v = nv;
        subjs->cap = cap;
    }
    row = &subjs->v[subjs->n++];
    memset(row, 0, sizeof(*row));
    memcpy(row->id, key, sizeof(key));
    return row;
}

/* The index of the label named name in family f, or -1. */
static int
label_index(const struct proto_metric_family *f, const char *name)
{
    for (uint32_t i = 0; i < f->label_names.n; i++)
        if (f->label_names.v[i].len == strlen(name) &&
            memcmp(f->label_names.v[i].ptr, name, f->label_names.v[i].len) ==
                0)
            return (int)i;
    return -1;
}

static bool
family_is(const struct proto_metric_family *f, const char *name)
{
    return f->name.len == strlen(name) &&
           memcmp(f->name.ptr, name, f->name.len) == 0;
}

/* Add a series of llm_requests_total to its provider and workflow. */
static int
add_requests(struct sample *s, const struct proto_metric_family *f,
             const struct proto_metric_series *ser)
{
    int pi = label_index(f, "provider"), wi = label_index(f, "workflow_id");
    struct subj_row *row;

    s->total += ser->value;
    if (pi >= 0 && (uint32_t)pi < ser->labels.n) {
        char name[ID_MAX];
        copy_str(name, sizeof(name), ser->labels.v[pi]);
        for (size_t i = 0; i < s->nprov; i++)
            if (strcmp(s->prov[i].name, name) == 0)
                s->prov[i].total += ser->value;
    }
    if (wi < 0 || (uint32_t)wi >= ser->labels.n ||
        ser->labels.v[wi].len == 0)
        return 0;
    if ((row = subject_get(&s->wf, ser->labels.v[wi])) == NULL)
        return -1;
    row->total += ser->value;
    return 0;
}

/* Take what the view needs from one page of metrics. */
static int
take_page(struct sample *s, const struct proto_metrics_rep *r)
{
    const struct proto_metric_family *fam = r->families.v;

    for (uint32_t i = 0; i < r->families.n; i++) {
        const struct proto_metric_family *f = &fam[i];
        const struct proto_metric_series *ser = f->series.v;
        int wi = label_index(f, "workflow_id"), ti = label_index(f,
                                                                 "tenant_id");
        for (uint32_t k = 0; k < f->series.n; k++) {
            struct subj_row *row = NULL;
            if (family_is(f, "llm_requests_total")) {
                if (add_requests(s, f, &ser[k]) < 0)
                    return -1;
            } else if (family_is(f, "workflow_quota_remaining_tokens") &&
                       wi >= 0 && (uint32_t)wi < ser[k].labels.n) {
                if ((row = subject_get(&s->wf, ser[k].labels.v[wi])) == NULL)
                    return -1;
            } else if (family_is(f, "llm_quota_exceeded_total") && ti >= 0 &&
                       (uint32_t)ti < ser[k].labels.n &&
                       ser[k].labels.v[ti].len > 0) {
                if ((row = subject_get(&s->tn, ser[k].labels.v[ti])) == NULL)
                    return -1;
                row->total += ser[k].value;
            }
        }
    }
    return 0;
}

/* The providers, from the status op. */
static int
take_status(llmguard_t *g, struct sample *s)
{
    struct proto_rep rep;
    const struct proto_status_rep *st = &rep.u.status;
    int rc = client_call(g, PROTO_OP_STATUS, NULL, &rep);

    if (rc < 0)
        return rc;
    s->enabled = st->enabled;
    copy_str(s->policy, sizeof(s->policy), st->policy);
    copy_str(s->enforcement, sizeof(s->enforcement), st->enforcement);
    s->nprov = st->providers.n < PROV_MAX ? st->providers.n : PROV_MAX;
    for (size_t i = 0; i < s->nprov; i++) {
        const struct proto_provider_status *ps =
            (const struct proto_provider_status *)st->providers.v + i;
        struct prov_row *p = &s->prov[i];
        memset(p, 0, sizeof(*p));
        copy_str(p->name, sizeof(p->name), ps->name);
        copy_str(p->state, sizeof(p->state), ps->state);
        p->avail = ps->available_tokens;
        p->max = ps->max_tokens;
        p->rate = ps->rate_per_sec;
        p->cooldown_s = ps->cooldown_remaining_s;
        p->waiters = (unsigned long long)ps->waiters;
    }
    return 0;
}

/* Every page of the metrics into s. */
static int
take_metrics(llmguard_t *g, struct sample *s)
{
    struct proto_metrics_req req = { 0 };
    struct proto_rep rep;
    int rc;

    for (;;) {
        if ((rc = client_call(g, PROTO_OP_METRICS, &req, &rep)) < 0)
            return rc;
        if (take_page(s, &rep.u.metrics) < 0)
            return LLMGUARD_ENOMEM;
        if (!PROTO_HAS(&rep.u.metrics, PROTO_METRICS_REP_NEXT_CURSOR))
            return 0;
        req.cursor = rep.u.metrics.next_cursor;
        PROTO_SET(&req, PROTO_METRICS_REQ_CURSOR);
    }
}

/* Busiest first: by rate, then by total, then by id. */
static int
subj_cmp(const void *a, const void *b)
{
    const struct subj_row *x = a, *y = b;

    if (x->per_s != y->per_s)
        return x->per_s > y->per_s ? -1 : 1;
    if (x->total != y->total)
        return x->total > y->total ? -1 : 1;
    return strcmp(x->id, y->id);
}

/* The rates of cur's subjects against prev's (NULL: none yet), sorted. */
static void
subject_rates(struct subjects *cur, const struct subjects *prev, double dt)
{
    for (size_t i = 0; i < cur->n && prev != NULL && dt > 0; i++)
        for (size_t k = 0; k < prev->n; k++)
            if (strcmp(prev->v[k].id, cur->v[i].id) == 0) {
                cur->v[i].per_s = fmax(0, cur->v[i].total -
                                       prev->v[k].total) / dt;
                cur->v[i].has_rate = true;
                break;
            }
    if (cur->n > 0)
        qsort(cur->v, cur->n, sizeof(cur->v[0]), subj_cmp);
}

/* The rates of s against prev (NULL for the first refresh). */
static void
rates(struct sample *s, const struct sample *prev)
{
    double dt = prev != NULL ? s->mono_s - prev->mono_s : 0;

    if (prev != NULL && prev->error[0] == '\0' && dt > 0) {
        s->per_s = fmax(0, s->total - prev->total) / dt;
        s->has_rate = true;
        for (size_t i = 0; i < s->nprov; i++)
            for (size_t k = 0; k < prev->nprov; k++)
                if (strcmp(s->prov[i].name, prev->prov[k].name) == 0) {
                    s->prov[i].per_s = fmax(0, s->prov[i].total -
                                            prev->prov[k].total) / dt;
                    s->prov[i].has_rate = true;
                }
    }
    if (prev != NULL && prev->error[0] != '\0')
        prev = NULL;
    subject_rates(&s->wf, prev ? &prev->wf : NULL, dt);
    subject_rates(&s->tn, prev ? &prev->tn : NULL, dt);
}

/*
 * The tenants using the most quota (the quota_list op), beside those that
 * went over it: with their use and limit.  A daemon without the op (an
 * older one) leaves just the latter.
 */
static int
take_tenants(llmguard_t *g, struct sample *s, size_t n)
{
    struct proto_quota_list_req req = { 0 };
    struct proto_rep rep;
    const struct proto_quota_entry *v;
    static const char prefix[] = "tenant:";

    req.tenant = true;
    req.top = n > 0 ? n : 1;
    req.has = PROTO_BIT(PROTO_QUOTA_LIST_REQ_TENANT) |
              PROTO_BIT(PROTO_QUOTA_LIST_REQ_TOP);
    if (client_call(g, PROTO_OP_QUOTA_LIST, &req, &rep) < 0)
        return 0;
    v = rep.u.quota_list.subjects.v;
    for (uint32_t i = 0; i < rep.u.quota_list.subjects.n; i++) {
        struct proto_str id = v[i].subject;
        struct subj_row *row;
        if (id.len > sizeof(prefix) - 1 &&
            memcmp(id.ptr, prefix, sizeof(prefix) - 1) == 0) {
            id.ptr += sizeof(prefix) - 1;
            id.len -= (uint32_t)(sizeof(prefix) - 1);
        }
        if ((row = subject_get(&s->tn, id)) == NULL)
            return -1;
        row->used = (unsigned long long)v[i].tokens_used;
        row->limit = (unsigned long long)v[i].tokens_limit;
        row->has_quota = true;
    }
    return 0;
}

/* The quota use of the first n subjects of subjs (of kind tenant or not). */
static void
take_quotas(llmguard_t *g, struct subjects *subjs, size_t n, bool tenant)
{
    for (size_t i = 0; i < subjs->n && i < n; i++) {
        struct proto_quota_subject_req req = { 0 };
        struct proto_rep rep;
        struct proto_str id = { subjs->v[i].id,
                                (uint32_t)strlen(subjs->v[i].id) };
        if (subjs->v[i].has_quota)
            continue;           /* quota_list gave it */
        if (tenant) {
            req.tenant_id = id;
            PROTO_SET(&req, PROTO_QUOTA_SUBJECT_REQ_TENANT_ID);
        } else {
            req.workflow_id = id;
            PROTO_SET(&req, PROTO_QUOTA_SUBJECT_REQ_WORKFLOW_ID);
        }
        if (client_call(g, PROTO_OP_QUOTA_STATUS, &req, &rep) < 0)
            continue;   /* an id such as __other__ may not be one */
        subjs->v[i].used = (unsigned long long)rep.u.quota_status.tokens_used;
        subjs->v[i].limit =
            (unsigned long long)rep.u.quota_status.tokens_limit;
        subjs->v[i].has_quota = true;
    }
}

/* One refresh into s (its subjects' arrays reused); 0 or LLMGUARD_E*. */
static int
refresh(llmguard_t *g, struct sample *s, const struct sample *prev,
        size_t nquota)
{
    struct proto_rep rep;
    int rc;

    s->wf.n = s->tn.n = s->nprov = 0;
    s->total = s->per_s = 0;
    s->has_rate = false;
    s->error[0] = '\0';
    s->mono_s = mono_now();
    if ((rc = client_call(g, PROTO_OP_PING, NULL, &rep)) == 0) {
        s->uptime_s = rep.u.ping.uptime_s;
        if ((rc = take_status(g, s)) == 0 &&
            (rc = take_metrics(g, s)) == 0 &&
            take_tenants(g, s, nquota) < 0)
            rc = LLMGUARD_ENOMEM;
    }
    if (rc < 0) {
        const char *msg = llmguard_last_error(g);
        snprintf(s->error, sizeof(s->error), "%s",
                 msg[0] ? msg : llmguard_strerror(rc));
        return rc;
    }
    rates(s, prev);
    take_quotas(g, &s->wf, nquota, false);
    take_quotas(g, &s->tn, nquota, true);
    return 0;
}

/* ---- drawing ------------------------------------------------------------ */

static void
add_line(struct frame *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
add_line(struct frame *f, const char *fmt, ...)
{
    va_list ap;

    if (f->n >= LINES_MAX)
        return;
    va_start(ap, fmt);
    vsnprintf(f->line[f->n++], LINE_MAX_BYTES, fmt, ap);
    va_end(ap);
}

static void
add_blank(struct frame *f)
{
    if (f->n < LINES_MAX)
        f->line[f->n++][0] = '\0';
}

/* "1h02m", "3m05s", "42s" */
static const char *
duration(double s, char *buf, size_t len)
{
    long t = (long)s;

    if (t >= 3600)
        snprintf(buf, len, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60)
        snprintf(buf, len, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(buf, len, "%lds", t);
    return buf;
}

static const char *
rate_text(bool has, double v, char *buf, size_t len)
{
    if (!has)
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, "%.1f", v);
    return buf;
}

/* The header: the daemon, its settings and the permits per second. */
static void
draw_header(struct frame *f, llmguard_t *g, const struct sample *s)
{
    char up[32], ps[32], when[32];
    time_t now = time(NULL);
    struct tm tm;

    gmtime_r(&now, &tm);
    strftime(when, sizeof(when), "%H:%M:%SZ", &tm);
    add_line(f, "llmguardd on %s  up %s  %s", llmguard_socket_path(g),
             duration(s->uptime_s, up, sizeof(up)), when);
    add_line(f, "policy %s  enforcement %s  rate limiting %s  permits/s %s",
             s->policy, s->enforcement, s->enabled ? "on" : "off",
             rate_text(s->has_rate, s->per_s, ps, sizeof(ps)));
}

/* The providers, at most max of them. */
static void
draw_providers(struct frame *f, const struct sample *s, size_t max)
{
    add_line(f, "%-15s %-9s %-17s %8s %9s %7s %8s", "PROVIDER", "STATE",
             "FILL", "RATE/S", "PERMITS/S", "WAITERS", "COOLDOWN");
    if (s->nprov == 0)
        add_line(f, "(no providers configured)");
    for (size_t i = 0; i < s->nprov && i < max; i++) {
        const struct prov_row *p = &s->prov[i];
        double fill = p->max > 0 ? fmin(1, fmax(0, p->avail / p->max)) : 0;
        int bars = (int)lround(fill * 10);
        char bar[32], ps[32], cool[32];
        snprintf(bar, sizeof(bar), "[%.*s%.*s] %3.0f%%", bars, "##########",
                 10 - bars, "..........", fill * 100);
        if (p->cooldown_s > 0)
            snprintf(cool, sizeof(cool), "%.1fs", p->cooldown_s);
        else
            snprintf(cool, sizeof(cool), "-");
        add_line(f, "%-15.15s %-9.9s %-17s %8g %9s %7llu %8s", p->name,
                 p->state, bar, p->rate,
                 rate_text(p->has_rate, p->per_s, ps, sizeof(ps)), p->waiters,
                 cool);
    }
    if (s->nprov > max)
        add_line(f, "... and %zu more", s->nprov - max);
}

/* The busiest subjects of one kind, at most max of them. */
static void
draw_subjects(struct frame *f, const struct subjects *subjs, const char *kind,
              const char *rate_name, const char *count_name, size_t max)
{
    add_line(f, "%-28s %9s %11s %12s %12s", kind, rate_name, count_name,
             "QUOTA USED", "LIMIT");
    for (size_t i = 0; i < subjs->n && i < max; i++) {
        const struct subj_row *r = &subjs->v[i];
        char ps[32], used[32] = "-", limit[32] = "-";
        if (r->has_quota) {
            snprintf(used, sizeof(used), "%llu", r->used);
            snprintf(limit, sizeof(limit), "%llu", r->limit);
        }
        add_line(f, "%-28.28s %9s %11.0f %12s %12s", r->id,
                 rate_text(r->has_rate, r->per_s, ps, sizeof(ps)), r->total,
                 used, limit);
    }
    if (subjs->n > max)
        add_line(f, "... and %zu more", subjs->n - max);
}

/* How many providers, workflows and tenants fit in rows lines (0: no
 * limit), with or without the keys line. */
static void
budget(const struct sample *s, int rows, bool keys, size_t *nprov,
       size_t *nwf, size_t *ntn)
{
    int avail, pmax;

    *nprov = s->nprov;
    *nwf = 10;
    *ntn = s->tn.n < 5 ? s->tn.n : 5;
    if (rows <= 0)
        return;
    /* 2 header lines, 2 empty ones, 2 table heads; the tenants' 2. */
    avail = rows - 6 - (s->tn.n > 0 ? 2 : 0) - (keys ? 1 : 0);
    *ntn = s->tn.n < 3 ? s->tn.n : 3;
    avail -= (int)*ntn + (s->tn.n > *ntn);
    pmax = avail - 3 > 1 ? avail - 3 : 1;   /* leave room for workflows */
    if ((int)*nprov > pmax)
        *nprov = pmax > 1 ? (size_t)pmax - 1 : 1;
    avail -= (int)(*nprov > 0 ? *nprov : 1) + (s->nprov > *nprov);
    *nwf = avail > 1 ? (size_t)avail : 1;
    if (s->wf.n > *nwf && *nwf > 1)
        (*nwf)--;                           /* for "... and N more" */
}

/*
 * The whole view for a screen of rows lines (0: no limit): the header,
 * the providers, the busiest workflows, the tenants using the most quota,
 * and with keys the line that says how to quit.
 */
static void
draw(struct frame *f, llmguard_t *g, const struct sample *s, int rows,
     bool keys)
{
    size_t nprov, nwf, ntn;

    f->n = 0;
    draw_header(f, g, s);
    if (s->error[0] != '\0') {
        add_blank(f);
        add_line(f, "llmguardd is not answering: %s", s->error);
    } else {
        budget(s, rows, keys, &nprov, &nwf, &ntn);
        add_blank(f);
        draw_providers(f, s, nprov);
        add_blank(f);
        draw_subjects(f, &s->wf, "WORKFLOW", "PERMITS/S", "PERMITS", nwf);
        if (s->wf.n == 0)
            add_line(f, "(no permits reported yet)");
        if (s->tn.n > 0) {
            add_blank(f);
            draw_subjects(f, &s->tn, "TENANT", "OVER/S", "OVER QUOTA",
                          ntn);
        }
    }
    if (keys)
        add_line(f, "q: quit");
}

/* ---- the terminal ------------------------------------------------------- */

struct term {
    bool live;              /* standard output is a terminal */
    bool keys;              /* standard input is one, in cbreak mode */
    struct termios saved;
    int rows, cols;
};

static void
term_size(struct term *t)
{
    struct winsize ws;

    t->rows = 24;
    t->cols = 80;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 &&
        ws.ws_col > 0) {
        t->rows = ws.ws_row;
        t->cols = ws.ws_col;
    }
}

/* On a terminal: the alternate screen, no cursor, keys one by one. */
static void
term_open(struct term *t)
{
    struct termios raw;

    memset(t, 0, sizeof(*t));
    t->live = isatty(STDOUT_FILENO);
    if (!t->live)
        return;
    term_size(t);
    if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &t->saved) == 0) {
        raw = t->saved;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        raw.c_cc[VMIN] = 1;
        raw.c_cc[VTIME] = 0;
        t->keys = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    }
    fputs("\033[?1049h\033[?25l", stdout);
}

static void
term_close(struct term *t)
{
    if (!t->live)
        return;
    fputs("\033[?25h\033[?1049l", stdout);
    fflush(stdout);
    if (t->keys)
        tcsetattr(STDIN_FILENO, TCSANOW, &t->saved);
}

/* Put the frame out: in place on a terminal (cut to its size), else as a
 * plain block followed by an empty line. */
static void
term_show(struct term *t, const struct frame *f)
{
    if (!t->live) {
        for (int i = 0; i < f->n; i++)
            printf("%s\n", f->line[i]);
        putchar('\n');
        fflush(stdout);
        return;
    }
    fputs("\033[H", stdout);
    for (int i = 0; i < f->n && i < t->rows; i++)
        printf("%s%.*s\033[K", i ? "\r\n" : "", t->cols, f->line[i]);
    fputs("\033[J", stdout);
    fflush(stdout);
}

/* Wait until deadline (monotonic seconds) for a key: true when q (or a
 * signal) says to stop. */
static bool
term_wait(struct term *t, double deadline)
{
    for (;;) {
        double left = deadline - mono_now();
        struct pollfd pfd = { .fd = STDIN_FILENO, .events = POLLIN };
        char buf[64];
        ssize_t n;
        int r;

        if (stop_signal)
            return true;
        if (left <= 0 || resized)
            return false;
        r = poll(&pfd, t->keys ? 1 : 0, (int)ceil(left * 1e3));
        if (r <= 0 || !(pfd.revents & (POLLIN | POLLHUP)))
            continue;   /* timeout, EINTR: the loop decides */
        if ((n = read(STDIN_FILENO, buf, sizeof(buf))) <= 0) {
            t->keys = false;        /* end of input: no more keys */
            continue;
        }
        if (memchr(buf, 'q', (size_t)n) || memchr(buf, 'Q', (size_t)n))
            return true;
    }
}

static void
catch_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;     /* no SA_RESTART: poll returns */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGWINCH, &sa, NULL);
}

int
top_run(llmguard_t *g, const struct top_options *o)
{
    struct sample *s = calloc(2, sizeof(*s));
    struct frame *f = malloc(sizeof(*f));
    struct term t;
    double next;
    int rc = 0;

    if (s == NULL || f == NULL) {
        free(s);
        free(f);
        return LLMGUARD_ENOMEM;
    }
    if ((rc = refresh(g, &s[0], NULL, 8)) < 0)
        goto out;
    catch_signals();
    term_open(&t);
    next = s[0].mono_s;
    for (long i = 0;; i++) {
        struct sample *cur = &s[i % 2], *prev = &s[(i + 1) % 2];
        if (i > 0)
            refresh(g, cur, prev, 8);
        if (resized) {
            resized = 0;
            term_size(&t);
        }
        draw(f, g, cur, t.live ? t.rows : 0, t.keys);
        term_show(&t, f);
        if (o->count > 0 && i + 1 >= o->count)
            break;
        next += o->interval_s;
        if (next < mono_now())      /* a slow daemon: no burst to catch up */
            next = mono_now() + o->interval_s;
        if (term_wait(&t, next))
            break;
    }
    term_close(&t);
out:
    free(s[0].wf.v);
    free(s[0].tn.v);
    free(s[1].wf.v);
    free(s[1].tn.v);
    free(s);
    free(f);
    return rc;
}
