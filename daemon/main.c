/* main.c - llmguardd: options, signals, the event loop. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "http.h"
#include "log.h"
#include "permits.h"
#include "persist.h"
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
    server_reload(arg, err, sizeof(err));
}

static void
on_stop(evutil_socket_t sig, short what, void *arg)
{
    struct server *srv = arg;

    log_info("caught %s, shutting down", sig == SIGTERM ? "SIGTERM" :
             "SIGINT");
    event_base_loopexit(srv->base, NULL);
}

int
main(int argc, char **argv)
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
    struct config_args args = { .envp = environ };
    struct server srv;
    bool check_only = false;
    char err[1024];
    int ch;

    while ((ch = getopt_long(argc, argv, "s:d:e:l:nhV", longopts, NULL)) != -1) {
        switch (ch) {
        case 's':
            args.socket = optarg;
            break;
        case 'd':
            args.db = optarg;
            break;
        case 'e':
            args.env_file = optarg;
            break;
        case 'l':
            args.log_level = optarg;
            break;
        case 'n':
            check_only = true;
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

    /* Until the loop handles SIGHUP, a reload request is not a reason to
     * die (its default action). */
    signal(SIGHUP, SIG_IGN);
    memset(&srv, 0, sizeof(srv));
    srv.args = args;
    if (args.log_level != NULL && log_level_parse(args.log_level) >= 0)
        log_set_level((enum log_level)log_level_parse(args.log_level));
    if (config_load(&srv.cfg, &args, err, sizeof(err)) < 0) {
        fprintf(stderr, "llmguardd: %s\n", err);
        return CONFIG_EXIT;
    }
    log_set_level((enum log_level)srv.cfg.log_level);
    if (check_only) {
        config_print(&srv.cfg, stdout);
        return 0;
    }

    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    umask(077);     /* the database and its WAL are ours alone */
    srv.uid = geteuid();
    TAILQ_INIT(&srv.conns);
    /* Not EVENT_BASE_FLAG_PRECISE_TIMER: it costs a timerfd_settime on
     * every turn of the loop, i.e. on every request.  Without it a bucket
     * timer fires up to a millisecond late: a waiter is never served early,
     * so the limit stays exact. */
    srv.base = event_base_new();
    if (srv.base == NULL)
        fatalx(1, "cannot create the event loop");
    srv.started_mono_s = server_now_mono();
    telemetry_init(&srv);
    if (buckets_init(&srv) < 0)
        fatalx(1, "cannot set up the token buckets");
    server_listen(&srv);
    persist_open(&srv);
    http_start(&srv);
    telemetry_start_tracing(&srv);

    srv.sig_term = evsignal_new(srv.base, SIGTERM, on_stop, &srv);
    srv.sig_int = evsignal_new(srv.base, SIGINT, on_stop, &srv);
    srv.sig_hup = evsignal_new(srv.base, SIGHUP, on_hup, &srv);
    evsignal_add(srv.sig_term, NULL);
    evsignal_add(srv.sig_int, NULL);
    evsignal_add(srv.sig_hup, NULL);
    log_info("llmguardd %s started: %zu provider(s), policy %s, "
             "enforcement %s, rate limits %s", PACKAGE_VERSION,
             srv.cfg.nproviders, config_policy_name(srv.cfg.routing_policy),
             config_enforcement_name(srv.cfg.quota_enforcement),
             srv.cfg.rate_limit_enabled ? "on" : "off");

    event_base_dispatch(srv.base);

    http_stop(&srv);
    permits_free(&srv);
    server_shutdown(&srv);
    buckets_free(&srv);
    persist_close(&srv);
    telemetry_free(&srv);
    event_free(srv.sig_term);
    event_free(srv.sig_int);
    event_free(srv.sig_hup);
    event_base_free(srv.base);
    log_info("stopped");
    return 0;
}
