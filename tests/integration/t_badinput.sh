#!/bin/sh
# Ids and provider names on the wire must be UTF-8 without control
# characters: anything else is bad_request naming the field, and the request
# changes nothing (proto/PROTOCOL.md, "Names and ids").
. "${top_srcdir:-.}/tests/integration/lib.sh"

# One provider whose bucket does not refill during the test: a token taken
# shows in its level.
cat > "$TMP/b.env" <<'ENV'
PROVIDER_GROQ_RATE_PER_SEC=0.0001
PROVIDER_GROQ_BURST=5
ENV
ENVFILE="$TMP/b.env" start_daemon

# raw ITEM: one request through the raw client, its reply.
raw() { "$RAWCLIENT" -n 1 "$SOCK" "$1"; }
level() { "$LLMGUARDCTL" -s "$SOCK" --json status | jq '.providers[0].available_tokens | floor'; }

expect_eq "workflow_id with a byte that is not UTF-8" \
    "err 1 bad_request workflow_id is not valid UTF-8 (at byte 1)" \
    "$(raw req:quota_reserve:1:workflow_id=hex:61ff62,tokens=5)"
expect_eq "tenant_id with an overlong form of /" \
    "err 2 bad_request tenant_id is not valid UTF-8 (at byte 0)" \
    "$(raw req:quota_reserve:2:tenant_id=hex:c0af,tokens=5)"
expect_eq "workflow_id with a UTF-16 surrogate" \
    "err 3 bad_request workflow_id is not valid UTF-8 (at byte 0)" \
    "$(raw req:quota_status:3:workflow_id=hex:eda080)"
expect_eq "workflow_id cut in the middle of a character" \
    "err 4 bad_request workflow_id is not valid UTF-8 (at byte 2)" \
    "$(raw req:quota_status:4:workflow_id=hex:6161e282)"
expect_eq "workflow_id with a C1 control (U+0085)" \
    "err 5 bad_request workflow_id holds a control character (at byte 1)" \
    "$(raw req:quota_status:5:workflow_id=hex:61c285)"
expect_eq "tenant_id with DEL" \
    "err 6 bad_request tenant_id holds a control character (at byte 0)" \
    "$(raw req:quota_status:6:tenant_id=hex:7f)"
expect_eq "workflow_id with a NUL" \
    "err 7 bad_request workflow_id holds a NUL byte (at byte 1)" \
    "$(raw req:quota_status:7:workflow_id=hex:6100)"
expect_eq "quota_set on an id that is not UTF-8 (admin op, same checks)" \
    "err 8 bad_request workflow_id is not valid UTF-8 (at byte 0)" \
    "$(raw req:quota_set:8:workflow_id=hex:fe,limit=5)"
expect_eq "quota_commit on a tenant with a C1 control" \
    "err 9 bad_request tenant_id holds a control character (at byte 0)" \
    "$(raw req:quota_commit:9:tenant_id=hex:c29f,reservation=0,estimate=1,actual=1)"
# Characters beyond ASCII are ids like any other: café, 日本, an emoji.
expect_eq "UTF-8 ids of 2, 3 and 4 bytes per character are accepted" \
    "ok 10" "$(raw req:quota_status:10:workflow_id=hex:636166c3a9e697a5e69cacf09f9880)"

# Provider names: acquire, release, limiter_status.
expect_eq "acquire: provider not UTF-8" \
    "err 11 bad_request provider is not valid UTF-8 (at byte 4)" \
    "$(raw req:acquire:11:provider=hex:67726f71ff)"
expect_eq "release: provider with a control character" \
    "err 12 bad_request provider holds a control character (at byte 4)" \
    "$(raw req:release:12:provider=hex:67726f7109)"
expect_eq "limiter_status: provider with a C1 control" \
    "err 13 bad_request provider holds a control character (at byte 0)" \
    "$(raw req:limiter_status:13:provider=hex:c280)"
expect_eq "a clean unknown name is still unknown_provider" \
    "err 14 unknown_provider unknown provider 'grok' (configured: groq)" \
    "$(raw req:limiter_status:14:provider=grok)"
expect_eq "the bucket is untouched by all that" 5 "$(level)"

# select_provider and permit: preferred, exclude, call_id; nothing reserved
# and no token taken.
expect_eq "select_provider: preferred not UTF-8" \
    "err 15 bad_request preferred is not valid UTF-8 (at byte 0)" \
    "$(raw req:select_provider:15:preferred=hex:80)"
expect_eq "select_provider: exclude with a control character" \
    "err 16 bad_request exclude holds a control character (at byte 1)" \
    "$(raw 'req:select_provider:16:exclude=[groq|hex:611b]')"
expect_eq "permit: call_id not UTF-8" \
    "err 17 bad_request call_id is not valid UTF-8 (at byte 2)" \
    "$(raw req:permit:17:workflow_id=wf,tokens_estimate=100,call_id=hex:6363f5)"
expect_eq "permit: exclude not UTF-8" \
    "err 18 bad_request exclude is not valid UTF-8 (at byte 0)" \
    "$(raw 'req:permit:18:workflow_id=wf,tokens_estimate=100,exclude=[hex:ff]')"
expect_eq "permit: preferred with a C1 control" \
    "err 19 bad_request preferred holds a control character (at byte 0)" \
    "$(raw req:permit:19:workflow_id=wf,tokens_estimate=100,preferred=hex:c29b)"
expect_eq "permit: tenant_id not UTF-8 after a good workflow_id" \
    "err 20 bad_request tenant_id is not valid UTF-8 (at byte 0)" \
    "$(raw req:permit:20:workflow_id=wf,tenant_id=hex:ff,tokens_estimate=100)"
expect_eq "the refused permits reserved nothing" 0 "$(used wf)"
expect_eq "and took no token" 5 "$(level)"

# The control: the same permit with clean fields reserves and takes a token
# (so the two checks above can fail).
expect_eq "a clean permit is granted" "ok 21" \
    "$(raw 'req:permit:21:workflow_id=wf,tokens_estimate=100,call_id=c1,exclude=[],preferred=groq')"
expect_eq "and reserved its estimate" 100 "$(used wf)"
expect_eq "and took a token" 4 "$(level)"
finish
