#!/bin/sh
# check_install.sh ROOT PREFIX SYSCONFDIR UNITDIR - what make install put
# under ROOT (DESTDIR, may be empty) for llmguardd as a service: the units
# (checked with systemd-analyze verify when it exists), the sample env
# file, PROTOCOL.md, and a man page link per function of llmguard.h.
# Run by `make installcheck` (and so by distcheck).
set -u
root=$1 prefix=$2 sysconfdir=$3 unitdir=$4 header=$5
fails=0
no() { echo "not ok - $*"; fails=$((fails + 1)); }
has() { if [ -f "$root$1" ]; then echo "ok - $1"; else no "$1 is missing"; fi; }

has "$unitdir/llmguardd.service"
has "$unitdir/llmguardd.socket"
has "$sysconfdir/llmguard/llmguard.env"
has "$sysconfdir/llmguard/llmguard.env.sample"
has "$prefix/share/doc/llmguard/PROTOCOL.md"
for f in $(sed -n 's/^[a-z].*[ *]\(llmguard_[a-z0-9_]*\)(.*/\1/p' "$header"); do
    page="$prefix/share/man/man3/$f.3"
    has "$page"
    [ -f "$root$page" ] && ! grep -qx '.so man3/libllmguard.3' "$root$page" &&
        no "$page does not point at libllmguard.3"
done
grep -q "^ExecStart=$prefix/sbin/llmguardd " "$root$unitdir/llmguardd.service" ||
    no "llmguardd.service does not run $prefix/sbin/llmguardd"
if command -v systemd-analyze >/dev/null && [ -z "$root" ]; then
    out=$(systemd-analyze verify --man=no "$unitdir/llmguardd.socket" \
          "$unitdir/llmguardd.service" 2>&1)
    if [ $? -eq 0 ] && [ -z "$out" ]; then
        echo "ok - systemd-analyze verify"
    else
        no "systemd-analyze verify: $out"
    fi
fi
[ "$fails" -eq 0 ] || { echo "check_install: $fails check(s) failed"; exit 1; }
echo "check_install: the service, its socket, the sample env, the docs and" \
    "the man links are in place"
