"""python3 -m llmguard [-s SOCKET] [--json] status | metrics | quota ID
[--tenant]: llmguardctl's read-only commands (llmguardctl(1)), with the
same output and exit statuses: 0 ok, 1 the daemon answered an error, 2 a
usage error, 69 the daemon is unreachable, 77 permission denied."""
import argparse
import json
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from .client import Client
from .errors import DaemonUnavailable, LlmguardError, PermissionDenied
from .metrics import MetricsPages

EXIT_DAEMON_ERROR, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_NOPERM = 1, 2, 69, 77


def _reals(obj: Any) -> Any:
    """obj with its numbers as llmguardctl prints them in JSON: reals to
    15 significant digits."""
    if isinstance(obj, float):
        return float(f"{obj:.15g}")
    if isinstance(obj, dict):
        return {k: _reals(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_reals(v) for v in obj]
    return obj


def _print_json(obj: Any) -> None:
    print(json.dumps(_reals(obj), separators=(",", ":")))


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(t)))


_PROVIDER_KEYS = ("name", "available_tokens", "rate_per_sec", "max_tokens",
                  "state", "cooldown_remaining_s", "latency_ewma_ms",
                  "waiters", "tokens_per_min")
_PROVIDER_EXTRA = ("cooldown_cause", "cooldown_since", "retry_after_s",
                   "available_llm_tokens", "rate_source",
                   "tokens_per_min_source", "cooldown_host")
_MODEL_KEYS = ("alias", "model", "provider", "group", "rate_per_sec",
               "tokens_per_min", "waiters", "state", "cooldown_remaining_s",
               "latency_ewma_ms")
_MODEL_EXTRA = ("available_tokens", "max_tokens", "available_llm_tokens",
                "cooldown_cause", "cooldown_since", "retry_after_s")
_DAILY_KEYS = ("name", "unit", "limit", "used", "remaining", "frees_at")
_DAEMON_KEYS = ("version", "env_file", "database", "uptime_s", "connections",
                "open_permits", "last_flush", "store")


def _status_json(st: Dict[str, Any]) -> None:
    provs = []
    for p in st["providers"]:
        o = {k: p[k] for k in _PROVIDER_KEYS}
        o.update((k, p[k]) for k in _PROVIDER_EXTRA if k in p)
        provs.append(o)
    doc = {"enabled": st["enabled"], "policy": st["policy"],
           "enforcement": st["enforcement"],
           "window_days": float(st["window_days"]), "providers": provs}
    doc.update((k, st[k]) for k in ("default_quota_tokens", "quota_from")
               if k in st)
    if "models" in st:
        doc["models"] = [
            dict([(k, m[k]) for k in _MODEL_KEYS]
                 + [(k, m[k]) for k in _MODEL_EXTRA if k in m])
            for m in st["models"]]
    if "version" in st:             # a daemon's own fields, when it sent them
        doc.update((k, st[k]) for k in _DAEMON_KEYS)
        if "store_error" in st:
            doc["store_error"] = st["store_error"]
        if "redis" in st:           # multi-host mode
            doc["redis"] = st["redis"]
    if "daily_limits" in st:
        doc["daily_limits"] = [
            dict([(k, d[k]) for k in _DAILY_KEYS]
                 + [(k, d[k]) for k in ("own_used",) if k in d])
            for d in st["daily_limits"]]
    _print_json(doc)


def _daemon_text(st: Dict[str, Any]) -> None:
    if "version" not in st:
        return
    print(f"version      {st['version']}")
    print(f"env_file     {st['env_file'] or 'none'}")
    print(f"database     {st['database']}")
    print(f"uptime       {st['uptime_s']:.0f} s")
    print(f"connections  {st['connections']}")
    print(f"permits      {st['open_permits']} open")
    flush = st["last_flush"]
    print(f"last_flush   {'-' if flush is None else _iso(flush)}")
    err = st.get("store_error")
    print(f"store        {st['store']}{': ' + err if err else ''}")
    r = st.get("redis")
    if isinstance(r, dict):         # multi-host mode
        last = r.get("last_error")
        print(f"redis        {r.get('url')} {r.get('state')}, "
              f"{r.get('hosts')} host(s){': ' + last if last else ''}")
        c = r.get("config")
        if isinstance(c, dict):     # the fleet's configuration, once read
            print(f"fleet_config host {c['host']}'s, loaded "
                  f"{_iso(c['loaded_at'])}, hash {c['hash'][:12]}; this "
                  f"host's file "
                  + (f"differs (hash {c['own_hash'][:12]})" if c["differs"]
                     else "is the same"))


def _provider_notes(st: Dict[str, Any]) -> None:
    """Why each degraded provider is, the LLM tokens of each bucket that
    has a TOKENS_PER_MIN, and where its limits come from."""
    for p in st["providers"]:
        if "cooldown_cause" in p:
            line = (f"{p['name']}: degraded by {p['cooldown_cause']} since "
                    f"{_iso(p['cooldown_since'])}")
            if "retry_after_s" in p:
                line += f", Retry-After {p['retry_after_s']:g} s"
            if "cooldown_host" in p:
                line += f", from host {p['cooldown_host']}"
            print(line)
        if "available_llm_tokens" in p:
            print(f"{p['name']}: {p['available_llm_tokens']:.0f} of "
                  f"{p['tokens_per_min']:.0f} LLM tokens available")
        if "rate_source" in p and "tokens_per_min_source" in p:
            print(f"{p['name']}: rate {p['rate_source']}, tokens_per_min "
                  f"{p['tokens_per_min_source']}")


def _model_table(st: Dict[str, Any]) -> None:
    """Each model deployment's bucket (a dash where it has no RPM or TPM
    of its own) and health, as llmguardctl prints them."""
    models = st.get("models") or []
    if not models:
        return
    print("\n%-16s %-24s %-12s %-16s %10s %8s %-10s %9s %7s %10s" % (
        "MODEL", "MODEL_ID", "PROVIDER", "GROUP", "AVAILABLE", "RATE/S",
        "STATE", "COOLDOWN", "WAITERS", "TOKENS/MIN"))
    for m in models:
        avail = rate = "-"
        if "available_tokens" in m:
            avail = f"{m['available_tokens']:.2f}"
            rate = f"{m['rate_per_sec']:g}"
        cool = f"{m['cooldown_remaining_s']:.1f}s" \
            if m["cooldown_remaining_s"] > 0 else "-"
        tpm = (f"{m['available_llm_tokens']:.0f}/{m['tokens_per_min']:.0f}"
               if "available_llm_tokens" in m else "-")
        print("%-16s %-24s %-12s %-16s %10s %8s %-10s %9s %7d %10s" % (
            m["alias"], m["model"], m["provider"], m["group"], avail, rate,
            m["state"], cool, m["waiters"], tpm))


def _daily_text(st: Dict[str, Any]) -> None:
    """Each daily limit, what it used (multi-host mode: the fleet, and
    this host's part) and when it frees, as llmguardctl prints them."""
    for d in st.get("daily_limits") or []:
        own = (f" by the fleet (this host {d['own_used']})"
               if "own_used" in d else "")
        frees = "-" if d.get("frees_at") is None else _iso(d["frees_at"])
        print(f"{d['name']}: {d['used']} of {d['limit']} {d['unit']} a day "
              f"used{own}, frees {frees}")


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    st = client.call("status")
    if args.json:
        _status_json(st)
        return 0
    print(f"enabled      {'true' if st['enabled'] else 'false'}")
    print(f"policy       {st['policy']}")
    print(f"enforcement  {st['enforcement']}")
    print(f"window_days  {st['window_days']:g}")
    if "default_quota_tokens" in st:
        print(f"quota_limit  {st['default_quota_tokens']} by default")
    if "quota_from" in st:          # multi-host mode: whose settings
        print(f"quota_from   host {st['quota_from']}'s configuration")
    _daemon_text(st)
    if not st["providers"]:
        print("\nno providers configured (set PROVIDER_<NAME>_RATE_PER_SEC)")
        return 0
    print("\n%-16s %10s %8s %8s %-10s %9s %11s %7s %10s" % (
        "PROVIDER", "AVAILABLE", "RATE/S", "MAX", "STATE", "COOLDOWN",
        "LATENCY_MS", "WAITERS", "TOKENS/MIN"))
    for p in st["providers"]:
        tpm = f"{p['tokens_per_min']:.0f}" if p["tokens_per_min"] > 0 else "-"
        cool = f"{p['cooldown_remaining_s']:.1f}s" \
            if p["cooldown_remaining_s"] > 0 else "-"
        lat = "-" if p["latency_ewma_ms"] is None \
            else f"{p['latency_ewma_ms']:.1f}"
        # "-" while the rate is neither configured nor learned: the bucket
        # standing in for it holds 1e15, not a limit.
        avail = "-" if p.get("rate_source") == "none" \
            else f"{p['available_tokens']:.2f}"
        print("%-16s %10s %8g %8g %-10s %9s %11s %7d %10s" % (
            p["name"], avail, p["rate_per_sec"],
            p["max_tokens"], p["state"], cool, lat, p["waiters"], tpm))
    _provider_notes(st)
    _model_table(st)
    _daily_text(st)
    return 0


def cmd_quota(client: Client, args: argparse.Namespace) -> int:
    key = "tenant_id" if args.tenant else "workflow_id"
    fields = {key: args.id}
    st = client.call("quota_status", fields)
    known = st.get("known", True)   # a daemon before `known` says nothing
    if args.json:
        doc = {k: st[k] for k in (
            "subject", "tokens_used", "tokens_remaining", "tokens_limit",
            "window_start", "window_end", "reset_at")}
        doc["known"] = known
        _print_json(doc)
        return 0
    if not known:
        print(f"llmguard: {st['subject']}: never seen (no usage in the "
              "window, no override): the default applies", file=sys.stderr)
    print(f"subject           {st['subject']}")
    print(f"tokens_used       {st['tokens_used']}")
    print(f"tokens_remaining  {st['tokens_remaining']}")
    print(f"tokens_limit      {st['tokens_limit']}")
    print(f"window_start      {_iso(st['window_start'])}")
    print(f"window_end        {_iso(st['window_end'])}")
    print(f"reset_at          "
          f"{'-' if st['reset_at'] is None else _iso(st['reset_at'])}")
    return 0


def cmd_metrics(client: Client, args: argparse.Namespace) -> int:
    pages = MetricsPages()
    while (fields := pages.next_fields()) is not None:
        pages.add(client.call("metrics", fields))
    if args.json:
        _print_json(pages.series)
        return 0
    header = False
    for kind, name, rows in pages.order:    # the daemon's order
        for r in rows:
            if not header:
                print("%-34s %-58s %s" % ("METRIC", "LABELS", "VALUE"))
                header = True
            lab = ",".join(f"{k}={v}" for k, v in r["labels"].items()) or "-"
            if kind == "histograms":
                print("%-34s %-58s count=%d sum=%g" % (name, lab, r["count"],
                                                      r["sum"]))
            else:
                print("%-34s %-58s %g" % (name, lab, r["value"]))
    return 0


COMMANDS: Dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "status": cmd_status, "metrics": cmd_metrics, "quota": cmd_quota}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python3 -m llmguard",
        description="llmguardd's status, metrics and quotas "
                    "(the read-only commands of llmguardctl).")
    ap.add_argument("-s", "--socket", metavar="PATH",
                    help="llmguardd's socket (default: $LLMGUARD_SOCKET, "
                         "else the per-user path)")
    ap.add_argument("-T", "--timeout", metavar="SECONDS", type=float,
                    help="how long an exchange may take (0: no bound; "
                         "default $LLMGUARD_CLIENT_TIMEOUT_MS, else 2)")
    ap.add_argument("-j", "--json", action="store_true",
                    help="print one JSON object")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)
    cmds = [sub.add_parser("status", help="rate limiting state and every "
                                          "provider's bucket"),
            sub.add_parser("metrics", help="counters, gauges and histograms"),
            sub.add_parser("quota", help="a workflow's (or --tenant's) "
                                         "quota")]
    cmds[2].add_argument("id", metavar="ID")
    cmds[2].add_argument("-t", "--tenant", action="store_true",
                         help="ID is a tenant id")
    for c in cmds:          # --json may also follow the command
        c.add_argument("-j", "--json", action="store_true",
                       default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    """The command line; its exit status."""
    args = parser().parse_args(argv)
    try:
        client = Client(args.socket, None if args.timeout is None
                        else args.timeout * 1e3)
    except (LlmguardError, TypeError) as e:
        print(f"llmguard: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](client, args)
    except LlmguardError as e:
        print(f"llmguard: {e}", file=sys.stderr)
        if isinstance(e, DaemonUnavailable):
            return EXIT_UNAVAILABLE
        if isinstance(e, PermissionDenied):
            return EXIT_NOPERM
        return EXIT_DAEMON_ERROR


if __name__ == "__main__":
    sys.exit(main())
