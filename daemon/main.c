/* main.c - llmguardd: options, start-up, signals, the event loop. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "buckets.h"
#include "clock.h"
#include "config.h"
#include "daemon.h"
#include "daily.h"
#include "decisions.h"
#include "global.h"
#include "gdaily.h"
#include "gquota.h"
#include "health.h"
#include "http.h"
#include "log.h"
#include "parking.h"
#include "permits.h"
#include "persist.h"
#include "quota.h"
#include "server.h"
#include "telemetry.h"

extern char **environ;

static void
usage(FILE *fp)
{
    fprintf(fp,
        "usage: llmguardd [--socket PATH] [--db PATH] [--env-file PATH]\n"
        "                 [--log-level error|warn|info|debug] [--check-config]\n"
        "                 [--help] [--version]\n"
        "\n"
        "  -s, --socket PATH     Unix socket to listen on (LLMGUARD_SOCKET)\n"
        "  -d, --db PATH         SQLite database, or :memory: (LLMGUARD_DB)\n"
        "  -e, --env-file PATH   env file to read (default: ./.env if it exists)\n"
        "  -l, --log-level LVL   error, warn, info or debug (LLMGUARD_LOG_LEVEL)\n"
        "  -n, --check-config    validate, print the effective configuration, exit\n"
        "  -h, --help            this text\n"
        "  -V, --version         print the version\n"
        "\n"
        "llmguardd runs in the foreground and logs to stderr.  See llmguardd(8)\n"
        "and llmguard.env(5).\n");
}

/* Every client is a descriptor: take the hard limit, not the soft one. */
static void
raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            log_warn("cannot raise the descriptor limit: %s",
                     strerror(errno));
    }
}

static void
on_hup(evutil_socket_t sig, short what, void *arg)
{
    char err[1024];

    log_info("caught SIGHUP, reloading the configuration");
    reload_apply(arg, err, sizeof(err));
}

static void
on_stop(evutil_socket_t sig, short what, void *arg)
{
    struct daemon *d = arg;

    log_info("caught %s, shutting down", sig == SIGTERM ? "SIGTERM" :
             "SIGINT");
    event_base_loopexit(d->base, NULL);
}

/* Parse the command line into args; returns -1 to go on, else the exit
 * status. */
static int
parse_args(int argc, char **argv, struct config_args *args, bool *check_only)
{
    static const struct option longopts[] = {
        { "socket", required_argument, NULL, 's' },
        { "db", required_argument, NULL, 'd' },
        { "env-file", required_argument, NULL, 'e' },
        { "log-level", required_argument, NULL, 'l' },
        { "check-config", no_argument, NULL, 'n' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    int ch;

    while ((ch = getopt_long(argc, argv, "s:d:e:l:nhV", longopts, NULL)) != -1) {
        switch (ch) {
        case 's':
            args->socket = optarg;
            break;
        case 'd':
            args->db = optarg;
            break;
        case 'e':
            args->env_file = optarg;
            break;
        case 'l':
            args->log_level = optarg;
            break;
        case 'n':
            *check_only = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("llmguardd %s (protocol %d)\n", PACKAGE_VERSION,
                   PROTO_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "llmguardd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    return -1;
}

/*
 * The listening socket the service manager passed (socket activation:
 * llmguardd.socket), or -1 when there is none.  Exits 78 when what was
 * passed is not one listening Unix stream socket.
 */
static int
passed_socket(void)
{
#ifdef HAVE_LIBSYSTEMD
    int n = sd_listen_fds(1);

    if (n == 0)
        return -1;
    if (n < 0)
        fatalx(CONFIG_EXIT, "sd_listen_fds: %s", strerror(-n));
    if (n > 1 || sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_STREAM, 1, NULL,
                                   0) <= 0)
        fatalx(CONFIG_EXIT, "the service manager passed %d descriptor(s): "
               "expected one listening Unix stream socket", n);
    return SD_LISTEN_FDS_START;
#else
    return -1;
#endif
}

/* Tell the service manager (Type=notify), when there is one. */
static void
notify(const char *state)
{
#ifdef HAVE_LIBSYSTEMD
    sd_notify(0, state);
#else
    (void)state;
#endif
}

/* Multi-host mode: the fleet's health goes to the router in force, the
 * providers' or the deployments'. */
static struct router *
health_router(void *arg, bool models)
{
    struct daemon *d = arg;

    if (d->permits == NULL)
        return NULL;
    return models ? permits_model_router_rw(d->permits)
                  : permits_router_rw(d->permits);
}

/*
 * The subsystems, each handed what it depends on.  When a connection ends
 * its state is dropped slot by slot, in this order: waiters first (a
 * cancelled waiting permit returns its reservation and may end its call,
 * so the permits' calls must still be there), then permits (unreported
 * ones stay charged; their calls end and send their spans; one waiting
 * for the fleet's quota check is freed), then held replies (nothing after
 * them can queue one), then the requests waiting for Redis (last: each
 * one's answer, when it comes, tells nobody and gives a reservation back).
 */
static void
start(struct daemon *d)
{
    const struct config *cfg = &d->cfg;
    struct server_socket sock = { cfg->socket_path, cfg->socket_is_default,
                                  (unsigned)cfg->socket_mode,
                                  cfg->socket_group };
    int waiters_slot, parking_slot, permits_slot, held_slot, gquota_slot;
    int rc, fd;

    if ((d->server = server_new(d->base, ops_dispatch, d)) == NULL)
        fatalx(1, "out of memory");
    waiters_slot = server_add_slot(d->server, buckets_drop_conn);
    /* Before the permits': a parked permit's call is still there. */
    parking_slot = server_add_slot(d->server, parking_drop_conn);
    permits_slot = server_add_slot(d->server, permits_drop_conn);
    held_slot = server_add_slot(d->server, persist_drop_conn);
    gquota_slot = server_add_slot(d->server, gquota_drop_conn);

    if ((d->buckets = buckets_new(d->base, cfg, waiters_slot)) == NULL ||
        (d->models = buckets_new_models(d->base, cfg, waiters_slot)) == NULL)
        fatalx(1, "cannot set up the token buckets");
    /* Before the socket listens: the host id is claimed first. */
    d->global = global_start(d->base, cfg, d->buckets, d->models);
    d->telemetry = telemetry_new(d->base, cfg);
    if ((fd = passed_socket()) >= 0)
        rc = server_listen_fd(d->server, fd);
    else
        rc = server_listen(d->server, &sock);
    if (rc != 0)
        exit(rc);
    d->quota = quota_new(cfg->quota_window_days * 86400.0,
                         cfg->default_quota_tokens,
                         cfg->quota_enforcement == ENFORCE_HARD);
    if (d->quota == NULL)
        fatalx(1, "cannot create the quota table");
    if ((d->daily = daily_new(DAILY_WINDOW_S)) == NULL ||
        permits_set_daily(d->daily, cfg) < 0)
        fatalx(1, "cannot create the daily limits");
    d->persist = persist_open(d->base, cfg, d->quota, d->daily, d->telemetry,
                              held_slot);
    if ((d->decisions = decisions_new((size_t)cfg->decisions)) == NULL)
        fatalx(1, "cannot keep %lld decisions: out of memory",
               (long long)cfg->decisions);
    if ((d->parking = parking_new(d->base, parking_slot)) == NULL)
        fatalx(1, "cannot set up parking");
    d->health = health_start(d->base, cfg, d->global, health_router, d);
    d->gquota = gquota_start(d->base, cfg, d->global, d->quota, d->persist,
                             gquota_slot, ops_quota_done, d);
    if (d->gquota != NULL)
        persist_watch(d->persist, gquota_changed, d->gquota);
    d->gdaily = gdaily_start(d->base, cfg, d->global, d->daily);
    struct permits_deps deps = { cfg, d->buckets, d->quota, d->persist,
                                 d->telemetry, d->decisions, d->models,
                                 d->daily, d->parking, d->health,
                                 d->gquota };
    if ((d->permits = permits_new(&deps, permits_slot)) == NULL)
        fatalx(1, "cannot set up routing");
    telemetry_on_refresh(d->telemetry, ops_refresh_gauges, d);
    d->http = http_start(d->base, cfg->metrics_listen, d->telemetry,
                         d->persist);
    telemetry_start_tracing(d->telemetry);
}

/* Every connection closes (its state dropped), then the subsystems go in
 * the reverse order of their start; the last flush writes the quotas. */
static void
stop(struct daemon *d)
{
    http_stop(d->http);
    server_free(d->server);
    persist_watch(d->persist, NULL, NULL);
    gquota_free(d->gquota);
    gdaily_free(d->gdaily);
    health_free(d->health);
    permits_free(d->permits);
    d->permits = NULL;          /* health_router may be asked no more */
    parking_free(d->parking);
    decisions_free(d->decisions);
    global_free(d->global);     /* it unhooks both kinds of bucket */
    buckets_free(d->models);
    buckets_free(d->buckets);
    persist_close(d->persist);
    quota_free(d->quota);
    daily_free(d->daily);
    telemetry_free(d->telemetry);
}

int
main(int argc, char **argv)
{
    struct daemon d;
    struct event *sig_term, *sig_int, *sig_hup;
    bool check_only = false;
    char err[1024];
    int rc;

    memset(&d, 0, sizeof(d));
    d.args.envp = environ;
    if ((rc = parse_args(argc, argv, &d.args, &check_only)) >= 0)
        return rc;
    /* Until the loop handles SIGHUP, a reload request is not a reason to
     * die (its default action). */
    signal(SIGHUP, SIG_IGN);
    if (d.args.log_level != NULL && log_level_parse(d.args.log_level) >= 0)
        log_set_level((enum log_level)log_level_parse(d.args.log_level));
    if (config_load(&d.cfg, &d.args, err, sizeof(err)) < 0) {
        fprintf(stderr, "llmguardd: %s\n", err);
        return CONFIG_EXIT;
    }
    log_set_level((enum log_level)d.cfg.log_level);
    if (check_only) {
        config_print(&d.cfg, stdout);
        return 0;
    }

    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    umask(077);     /* the database and its WAL are ours alone */
    d.uid = geteuid();
    /* Not EVENT_BASE_FLAG_PRECISE_TIMER: it costs a timerfd_settime on
     * every turn of the loop (bench/README.md: at 1 process, 3 system calls
     * per acquire become 4), and the loop's own timers (flush, prune, write
     * timeouts) may fire a few milliseconds late.  The buckets' timers,
     * which must not, have timerfds of their own (buckets.h). */
    if ((d.base = event_base_new()) == NULL)
        fatalx(1, "cannot create the event loop");
    d.started_mono_s = clock_mono();
    start(&d);

    sig_term = evsignal_new(d.base, SIGTERM, on_stop, &d);
    sig_int = evsignal_new(d.base, SIGINT, on_stop, &d);
    sig_hup = evsignal_new(d.base, SIGHUP, on_hup, &d);
    evsignal_add(sig_term, NULL);
    evsignal_add(sig_int, NULL);
    evsignal_add(sig_hup, NULL);
    log_info("llmguardd %s started: %zu provider(s), policy %s, "
             "enforcement %s, rate limits %s", PACKAGE_VERSION,
             d.cfg.nproviders, config_policy_name(d.cfg.routing_policy),
             config_enforcement_name(d.cfg.quota_enforcement),
             d.cfg.rate_limit_enabled ? "on" : "off");

    notify("READY=1");

    event_base_dispatch(d.base);

    notify("STOPPING=1");
    stop(&d);
    event_free(sig_term);
    event_free(sig_int);
    event_free(sig_hup);
    event_base_free(d.base);
    log_info("stopped");
    return 0;
}
