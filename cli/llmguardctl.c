/* llmguardctl - the operator's control tool for llmguardd. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "client_internal.h"

#define EXIT_DAEMON_ERROR 1
#define EXIT_USAGE 2
#define EXIT_UNAVAILABLE 69     /* EX_UNAVAILABLE */
#define EXIT_NOPERM 77          /* EX_NOPERM */

struct ctx {
    llmguard_t *g;
    bool json;
};

struct command {
    const char *name;
    const char *args;       /* usage after the name */
    int min_args, max_args;
    int (*exec)(struct ctx *ctx, int argc, char **argv);
    const char *help;
};

/* The exit status for a library error, after saying what went wrong. */
static int
fail_call(struct ctx *ctx, int rc)
{
    const char *msg = llmguard_last_error(ctx->g);

    fprintf(stderr, "llmguardctl: %s\n", msg[0] ? msg : llmguard_strerror(rc));
    switch (rc) {
    case LLMGUARD_EUNAVAIL:
        return EXIT_UNAVAILABLE;
    case LLMGUARD_EPERM:
        return EXIT_NOPERM;
    default:
        return EXIT_DAEMON_ERROR;
    }
}

/* Print obj as one line of JSON and release it. */
static int
print_json(json_t *obj)
{
    int rc = json_dumpf(obj, stdout, JSON_COMPACT | JSON_REAL_PRECISION(15));

    json_decref(obj);
    fputc('\n', stdout);
    return rc == 0 ? 0 : EXIT_DAEMON_ERROR;
}

static int
cmd_ping(struct ctx *ctx, int argc, char **argv)
{
    struct proto_rep rep;
    int rc = client_call(ctx->g, PROTO_OP_PING, NULL, &rep);

    if (rc < 0)
        return fail_call(ctx, rc);
    if (ctx->json)
        return print_json(json_pack("{s:b, s:s, s:f}", "ok", 1, "socket",
                                    llmguard_socket_path(ctx->g), "uptime_s",
                                    rep.u.ping.uptime_s));
    printf("llmguardd on %s is alive (up %.0f s)\n",
           llmguard_socket_path(ctx->g), rep.u.ping.uptime_s);
    return 0;
}

static json_t *
jstr(struct proto_str s)
{
    return json_stringn(s.ptr, s.len);
}

static int
cmd_status(struct ctx *ctx, int argc, char **argv)
{
    struct proto_rep rep;
    const struct proto_status_rep *st = &rep.u.status;
    const struct proto_provider_status *ps;
    int rc = client_call(ctx->g, PROTO_OP_STATUS, NULL, &rep);

    if (rc < 0)
        return fail_call(ctx, rc);
    ps = st->providers.v;
    if (ctx->json) {
        json_t *provs = json_array();
        for (uint32_t i = 0; i < st->providers.n; i++)
            json_array_append_new(provs, json_pack(
                "{s:o, s:f, s:f, s:f, s:o, s:f, s:o, s:I, s:f}",
                "name", jstr(ps[i].name),
                "available_tokens", ps[i].available_tokens,
                "rate_per_sec", ps[i].rate_per_sec,
                "max_tokens", ps[i].max_tokens,
                "state", jstr(ps[i].state),
                "cooldown_remaining_s", ps[i].cooldown_remaining_s,
                "latency_ewma_ms", PROTO_HAS(&ps[i], 8) ?
                    json_real(ps[i].latency_ewma_ms) : json_null(),
                "waiters", (json_int_t)ps[i].waiters,
                "tokens_per_min", ps[i].tokens_per_min));
        return print_json(json_pack("{s:b, s:o, s:o, s:f, s:o}",
                                    "enabled", st->enabled,
                                    "policy", jstr(st->policy),
                                    "enforcement", jstr(st->enforcement),
                                    "window_days", st->window_days,
                                    "providers", provs));
    }
    printf("enabled      %s\n", st->enabled ? "true" : "false");
    printf("policy       %.*s\n", (int)st->policy.len, st->policy.ptr);
    printf("enforcement  %.*s\n", (int)st->enforcement.len,
           st->enforcement.ptr);
    printf("window_days  %g\n", st->window_days);
    if (st->providers.n == 0) {
        printf("\nno providers configured (set PROVIDER_<NAME>_RATE_PER_SEC)\n");
        return 0;
    }
    printf("\n%-16s %10s %8s %8s %-10s %9s %11s %7s %10s\n", "PROVIDER",
           "AVAILABLE", "RATE/S", "MAX", "STATE", "COOLDOWN", "LATENCY_MS",
           "WAITERS", "TOKENS/MIN");
    for (uint32_t i = 0; i < st->providers.n; i++) {
        char tpm[32], cool[32], lat[32];
        if (ps[i].tokens_per_min > 0)
            snprintf(tpm, sizeof(tpm), "%.0f", ps[i].tokens_per_min);
        else
            snprintf(tpm, sizeof(tpm), "-");
        if (ps[i].cooldown_remaining_s > 0)
            snprintf(cool, sizeof(cool), "%.1fs", ps[i].cooldown_remaining_s);
        else
            snprintf(cool, sizeof(cool), "-");
        if (PROTO_HAS(&ps[i], 8))
            snprintf(lat, sizeof(lat), "%.1f", ps[i].latency_ewma_ms);
        else
            snprintf(lat, sizeof(lat), "-");
        printf("%-16.*s %10.2f %8g %8g %-10.*s %9s %11s %7llu %10s\n",
               (int)ps[i].name.len, ps[i].name.ptr, ps[i].available_tokens,
               ps[i].rate_per_sec, ps[i].max_tokens, (int)ps[i].state.len,
               ps[i].state.ptr, cool, lat, (unsigned long long)ps[i].waiters,
               tpm);
    }
    return 0;
}

/* ISO-8601 UTC for a unix time, into buf. */
static const char *
iso8601(double t, char *buf, size_t len)
{
    time_t s = (time_t)t;
    struct tm tm;

    gmtime_r(&s, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

static int
quota_show(struct ctx *ctx, const char *id, bool tenant)
{
    struct proto_quota_subject_req req = { 0 };
    struct proto_rep rep;
    const struct proto_quota_status_rep *st = &rep.u.quota_status;
    char b1[32], b2[32], b3[32];
    int rc;

    if (tenant) {
        req.tenant_id = (struct proto_str){ id, (uint32_t)strlen(id) };
        PROTO_SET(&req, 1);
    } else {
        req.workflow_id = (struct proto_str){ id, (uint32_t)strlen(id) };
        PROTO_SET(&req, 0);
    }
    if ((rc = client_call(ctx->g, PROTO_OP_QUOTA_STATUS, &req, &rep)) < 0)
        return fail_call(ctx, rc);
    if (ctx->json)
        return print_json(json_pack("{s:o, s:I, s:I, s:I, s:f, s:f, s:o}",
            "subject", jstr(st->subject),
            "tokens_used", (json_int_t)st->tokens_used,
            "tokens_remaining", (json_int_t)st->tokens_remaining,
            "tokens_limit", (json_int_t)st->tokens_limit,
            "window_start", st->window_start,
            "window_end", st->window_end,
            "reset_at", PROTO_HAS(st, 6) ? json_real(st->reset_at) :
                                           json_null()));
    printf("subject           %.*s\n", (int)st->subject.len, st->subject.ptr);
    printf("tokens_used       %llu\n", (unsigned long long)st->tokens_used);
    printf("tokens_remaining  %llu\n",
           (unsigned long long)st->tokens_remaining);
    printf("tokens_limit      %llu\n", (unsigned long long)st->tokens_limit);
    printf("window_start      %s\n", iso8601(st->window_start, b1, sizeof(b1)));
    printf("window_end        %s\n", iso8601(st->window_end, b2, sizeof(b2)));
    printf("reset_at          %s\n", PROTO_HAS(st, 6) ?
           iso8601(st->reset_at, b3, sizeof(b3)) : "-");
    return 0;
}

/* quota set ID TOKENS, quota reset ID: the admin ops. */
static int
quota_change(struct ctx *ctx, enum proto_op op, const char *id, bool tenant,
             uint64_t limit)
{
    struct proto_quota_subject_req req = { 0 };
    struct proto_rep rep;
    int rc;

    if (tenant) {
        req.tenant_id = (struct proto_str){ id, (uint32_t)strlen(id) };
        PROTO_SET(&req, 1);
    } else {
        req.workflow_id = (struct proto_str){ id, (uint32_t)strlen(id) };
        PROTO_SET(&req, 0);
    }
    req.limit = limit;
    if ((rc = client_call(ctx->g, op, &req, &rep)) < 0)
        return fail_call(ctx, rc);
    if (op == PROTO_OP_QUOTA_SET) {
        const struct proto_quota_set_rep *r = &rep.u.quota_set;
        if (ctx->json)
            return print_json(json_pack("{s:o, s:I}", "subject",
                                        jstr(r->subject), "tokens_limit",
                                        (json_int_t)r->tokens_limit));
        printf("%.*s: limit set to %llu tokens\n", (int)r->subject.len,
               r->subject.ptr, (unsigned long long)r->tokens_limit);
    } else {
        const struct proto_quota_reset_rep *r = &rep.u.quota_reset;
        if (ctx->json)
            return print_json(json_pack("{s:o, s:b}", "subject",
                                        jstr(r->subject), "reset", 1));
        printf("%.*s: usage reset\n", (int)r->subject.len, r->subject.ptr);
    }
    return 0;
}

/*
 * quota [show] ID | quota set ID TOKENS | quota reset ID, each with
 * --tenant (-t) anywhere after "quota".
 */
static int
cmd_quota(struct ctx *ctx, int argc, char **argv)
{
    const char *words[3];
    int n = 0;
    bool tenant = false;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--tenant") == 0 || strcmp(argv[i], "-t") == 0)
            tenant = true;
        else if (n < 3)
            words[n++] = argv[i];
        else
            goto usage;
    }
    if (n == 1)
        return quota_show(ctx, words[0], tenant);
    if (n == 2 && strcmp(words[0], "show") == 0)
        return quota_show(ctx, words[1], tenant);
    if (n == 2 && strcmp(words[0], "reset") == 0)
        return quota_change(ctx, PROTO_OP_QUOTA_RESET, words[1], tenant, 0);
    if (n == 3 && strcmp(words[0], "set") == 0) {
        char *end;
        errno = 0;
        unsigned long long limit = strtoull(words[2], &end, 10);
        if (errno != 0 || *end != '\0' || words[2][0] == '-' ||
            limit > INT64_MAX) {
            fprintf(stderr, "llmguardctl: quota set: TOKENS must be a whole "
                    "number, not '%s'\n", words[2]);
            return EXIT_USAGE;
        }
        return quota_change(ctx, PROTO_OP_QUOTA_SET, words[1], tenant, limit);
    }
usage:
    fprintf(stderr, "usage: llmguardctl quota [show] ID [--tenant]\n"
                    "       llmguardctl quota set ID TOKENS [--tenant]\n"
                    "       llmguardctl quota reset ID [--tenant]\n");
    return EXIT_USAGE;
}

static const struct command commands[] = {
    { "ping", "", 0, 0, cmd_ping, "check that llmguardd answers" },
    { "status", "", 0, 0, cmd_status,
      "rate limiting state and every provider's bucket" },
    { "quota", "[show|set|reset] ID [TOKENS] [--tenant]", 1, 4, cmd_quota,
      "a workflow's (or --tenant's) quota; set or reset it (admin)" },
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void
usage(FILE *fp)
{
    fprintf(fp, "usage: llmguardctl [-s SOCKET] [--json] COMMAND [ARGS]\n"
                "\noptions:\n"
                "  -s, --socket PATH  llmguardd's socket (default: "
                "$LLMGUARD_SOCKET, else the per-user path)\n"
                "  -j, --json         print one JSON object\n"
                "  -h, --help         this text\n"
                "  -V, --version      print the version\n"
                "\ncommands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++) {
        char left[64];
        snprintf(left, sizeof(left), "%s%s%s", commands[i].name,
                 commands[i].args[0] ? " " : "", commands[i].args);
        fprintf(fp, "  %-30s %s\n", left, commands[i].help);
    }
}

/* The command named by an exact name or a unique prefix, as tmux does. */
static const struct command *
find_command(const char *name)
{
    const struct command *found = NULL;
    size_t len = strlen(name);
    int matches = 0;

    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
        if (strncmp(commands[i].name, name, len) == 0) {
            found = &commands[i];
            matches++;
        }
    }
    if (matches == 1)
        return found;
    if (matches == 0) {
        fprintf(stderr, "llmguardctl: unknown command: %s; valid commands:",
                name);
    } else {
        fprintf(stderr, "llmguardctl: ambiguous command: %s, could be:",
                name);
    }
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (matches == 0 || strncmp(commands[i].name, name, len) == 0)
            fprintf(stderr, " %s", commands[i].name);
    fputc('\n', stderr);
    return NULL;
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "socket", required_argument, NULL, 's' },
        { "json", no_argument, NULL, 'j' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    const char *socket_path = NULL;
    const struct command *cmd;
    struct ctx ctx = { 0 };
    int ch, rc, nargs;

    /* "+": options stop at the command, whose own flags come after it. */
    while ((ch = getopt_long(argc, argv, "+s:jhV", longopts, NULL)) != -1) {
        switch (ch) {
        case 's':
            socket_path = optarg;
            break;
        case 'j':
            ctx.json = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("llmguardctl %s (protocol %d)\n", PACKAGE_VERSION,
                   PROTO_VERSION);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if ((cmd = find_command(argv[optind])) == NULL)
        return EXIT_USAGE;
    nargs = argc - optind - 1;
    if (nargs < cmd->min_args || nargs > cmd->max_args) {
        fprintf(stderr, "usage: llmguardctl %s%s%s\n", cmd->name,
                cmd->args[0] ? " " : "", cmd->args);
        return EXIT_USAGE;
    }
    if ((ctx.g = llmguard_open(socket_path)) == NULL) {
        fprintf(stderr, "llmguardctl: socket path too long or out of "
                "memory\n");
        return EXIT_USAGE;
    }
    rc = cmd->exec(&ctx, nargs, argv + optind + 1);
    llmguard_close(ctx.g);
    return rc;
}
