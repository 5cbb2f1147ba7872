#!/usr/bin/python3
"""calls.py SOCKET CASE [ARGS...]: two attempts of one call_id on one
connection, one waiting while the other is refused, for t_callid.sh.

Each case prints one JSON map, the replies by request id.  The attempt
that waits carries a traceparent whose trace id ends in the case's two
hex digits, so that the test finds the call's span among the others.
"""
import json
import socket
import subprocess
import sys
import time

from wire import recv, send

TRACE = "0af7651916cd43dd8448eb211c8031"


def tp(tag):
    return "00-%s%s-b7ad6b7169203331-01" % (TRACE, tag)


def conn(path):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(20)
    s.connect(path)
    return s


def ask(s, req):
    send(s, req)
    return recv(s)


def replies(s, n):
    """The next n replies, in whatever order they come, by id."""
    got = {}
    while len(got) < n:
        r = recv(s)
        got[str(r["id"])] = r
    return got


def take_token(s, model=None):
    """An anonymous call takes the one token (of groq, or of the model
    deployment and groq), waiting for it if it is not back yet."""
    req = {"op": "permit", "id": 1, "timeout_ms": 5000}
    if model:
        req["model"] = model
    r = ask(s, req)
    assert r["ok"], r
    return r


def cool(s, secs):
    """groq is in its cooldown for secs from now (an attempt's 429)."""
    r = take_token(s)
    ask(s, {"op": "report", "id": 2, "permit_id": r["permit_id"],
            "outcome": "rate_limited", "retry_after_s": secs})


def finish(s, got, wid, rid):
    """Report the waiting attempt wid, granted, as the call's last."""
    p = got[wid]
    if p.get("ok"):
        got[rid] = ask(s, {"op": "report", "id": int(rid),
                           "permit_id": p["permit_id"], "outcome": "ok",
                           "final": True})
    return got


def bucket(path, tag, leave):
    """The first attempt waits for groq's token, the second (timeout 0)
    is refused while it waits."""
    s = conn(path)
    r = take_token(s)
    ask(s, {"op": "report", "id": 2, "permit_id": r["permit_id"],
            "outcome": "ok"})
    wait = {"op": "permit", "id": 3, "call_id": "c" + tag,
            "traceparent": tp(tag), "timeout_ms": 5000}
    if leave:
        wait.update(workflow_id="w" + tag, tokens_estimate=100)
    send(s, wait)
    send(s, {"op": "permit", "id": 4, "call_id": "c" + tag, "timeout_ms": 0})
    if leave:
        got = replies(s, 1)
        s.close()
        return got
    return finish(s, replies(s, 2), "3", "5")


def parked(path, tag, leave):
    """groq in its cooldown: the first attempt parks, the second is
    refused (its quota, or every provider excluded) while it is parked."""
    s = conn(path)
    cool(s, 2)
    wait = {"op": "permit", "id": 3, "call_id": "c" + tag,
            "traceparent": tp(tag), "timeout_ms": 6000}
    if leave:
        wait.update(workflow_id="w" + tag, tokens_estimate=100)
        refused = {"exclude": ["groq"]}
    else:
        refused = {"workflow_id": "over", "tokens_estimate": 5000}
    send(s, wait)
    send(s, dict({"op": "permit", "id": 4, "call_id": "c" + tag}, **refused))
    if leave:
        got = replies(s, 1)
        s.close()
        return got
    return finish(s, replies(s, 2), "3", "5")


def model(path, tag, leave):
    """The first attempt waits for deployment m1's token (one a minute)
    and times out; the second is refused while it waits.  (Its one token
    is taken first; once taken it stays gone for the leave case.)"""
    s = conn(path)
    if not leave:
        r = take_token(s, "m1")
        ask(s, {"op": "report", "id": 2, "permit_id": r["permit_id"],
                "outcome": "ok"})
    send(s, {"op": "permit", "id": 3, "call_id": "c" + tag, "model": "m1",
             "traceparent": tp(tag), "timeout_ms": 1500})
    send(s, {"op": "permit", "id": 4, "call_id": "c" + tag, "model": "m1",
             "timeout_ms": 0})
    if leave:
        got = replies(s, 1)
        s.close()
        return got
    return replies(s, 2)


def over(path, tag, tag2):
    """A report marked final while another attempt of the call waits: the
    call ends with that one's report, and a permit after it begins a new
    call (its own trace context, tag2)."""
    s = conn(path)
    first = ask(s, {"op": "permit", "id": 1, "call_id": "c" + tag,
                    "traceparent": tp(tag), "timeout_ms": 5000})
    send(s, {"op": "permit", "id": 3, "call_id": "c" + tag,
             "timeout_ms": 5000})
    send(s, {"op": "report", "id": 2, "permit_id": first["permit_id"],
             "outcome": "client_error", "final": True})
    got = replies(s, 2)
    got["1"] = first
    got["4"] = ask(s, {"op": "report", "id": 4,
                       "permit_id": got["3"]["permit_id"], "outcome": "ok"})
    got["5"] = ask(s, {"op": "permit", "id": 5, "call_id": "c" + tag,
                       "traceparent": tp(tag2), "timeout_ms": 5000})
    got["6"] = ask(s, {"op": "report", "id": 6,
                       "permit_id": got["5"]["permit_id"], "outcome": "ok",
                       "final": True})
    return got


def quota(path, tag, leave, rcli):
    """Redis paused: the first attempt waits for the fleet's quota
    script, the second (every provider excluded) is refused meanwhile."""
    s = conn(path)
    subprocess.run(rcli + ["client", "pause", "800", "all"], check=True,
                   stdout=subprocess.DEVNULL)
    send(s, {"op": "permit", "id": 3, "call_id": "c" + tag,
             "traceparent": tp(tag), "workflow_id": "w" + tag,
             "tokens_estimate": 10, "timeout_ms": 4000})
    send(s, {"op": "permit", "id": 4, "call_id": "c" + tag,
             "exclude": ["groq"]})
    if leave:
        got = replies(s, 1)
        s.close()
        return got
    return finish(s, replies(s, 2), "3", "5")


def reload(path, envfile, ctl):
    """Both providers cooling; a permit that excludes groq parks; a reload
    moves groq after openai (priority 3); woken, it must still not go to
    groq."""
    s = conn(path)
    for name in ("groq", "openai"):
        r = ask(s, {"op": "permit", "id": 1, "preferred": name})
        assert r["ok"] and r["provider"] == name, r
        ask(s, {"op": "report", "id": 2, "permit_id": r["permit_id"],
                "outcome": "rate_limited", "retry_after_s": 1.5})
    send(s, {"op": "permit", "id": 3, "call_id": "reload",
             "exclude": ["groq"], "timeout_ms": 6000})
    time.sleep(0.3)
    with open(envfile) as f:
        env = f.read()
    with open(envfile, "w") as f:
        f.write(env.replace("PROVIDER_GROQ_PRIORITY=1",
                            "PROVIDER_GROQ_PRIORITY=3"))
    subprocess.run([ctl, "-s", path, "reload"], check=True,
                   stdout=subprocess.DEVNULL)
    return replies(s, 1)


def marker(path, tag):
    """A call of its own, reported: its span comes after every earlier
    one (the exporter sends them in order)."""
    s = conn(path)
    r = ask(s, {"op": "permit", "id": 1, "call_id": "marker",
                "traceparent": tp(tag), "timeout_ms": 5000})
    ask(s, {"op": "report", "id": 2, "permit_id": r["permit_id"],
            "outcome": "ok", "final": True})
    return {"1": r}


def main():
    path, case = sys.argv[1], sys.argv[2]
    args = sys.argv[3:]
    if case == "bucket":
        out = bucket(path, args[0], args[1] == "leave")
    elif case == "parked":
        out = parked(path, args[0], args[1] == "leave")
    elif case == "model":
        out = model(path, args[0], args[1] == "leave")
    elif case == "over":
        out = over(path, args[0], args[1])
    elif case == "quota":
        out = quota(path, args[0], args[1] == "leave", args[2].split())
    elif case == "reload":
        out = reload(path, args[0], args[1])
    else:
        out = marker(path, args[0])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
