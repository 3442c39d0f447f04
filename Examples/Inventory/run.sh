#!/usr/bin/env bash
# The inventory example's scripted session, end to end (issue #22): builds the main
# package's `converge-server`, starts it on a free loopback port with the example schema
# (Examples/schema.json) and a fresh secret, signs a token for each device, runs the
# example's two-device session against it, and always stops the server.
#
#   bash Examples/Inventory/run.sh [--keep]     (--keep: leave the devices' databases)
#
# Exits non-zero when the session's checks fail (CI runs it). The server's debug build is
# the one `swift test` leaves, so in CI only the example itself is compiled.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
started=$SECONDS

# The example's server is configured by the flags below alone: CONVERGE_* variables of the
# environment would change its store or its limits (CI exports CONVERGE_POSTGRES_URL for the
# tests, and a PostgreSQL database is not empty at every run), so they are dropped.
for name in $(compgen -e); do
    case "$name" in CONVERGE_*) unset "$name" ;; esac
done

work=$(mktemp -d "${TMPDIR:-/tmp}/converge-inventory-server.XXXXXX")
server_pid=
stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=
}
trap 'stop_server; rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The getting-started article walks through this example: each of its Swift and JSON
# excerpts (in the section on it) must be a run of lines of the example's files, indentation
# aside, so that the article cannot drift from the code it quotes.
article="$root/Sources/ConvergeSQLite/ConvergeSQLite.docc/GettingStarted.md"
if ! awk -v article="$article" '
    function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t\r]+$/, "", s); return s }
    FILENAME != article { text[FILENAME] = text[FILENAME] "\n" trim($0); next }
    /^### / { section = ($0 ~ /inventory example/) }
    !section { next }
    !inblock && /^```(swift|json)$/ { inblock = 1; block = ""; start = FNR; blocks++; next }
    inblock && /^```$/ {
        inblock = 0
        found = 0
        for (file in text) if (index(text[file] "\n", block "\n")) found = 1
        if (!found) { printf "%s:%d: this excerpt is not in the example\n", article, start; bad = 1 }
        next
    }
    inblock { block = block "\n" trim($0) }
    END {
        if (blocks == 0) { print article ": no excerpt of the inventory example found"; bad = 1 }
        if (!bad) printf "==> the %d excerpts of the getting-started article match the example\n", blocks
        exit bad
    }' "$here"/Sources/inventory/*.swift "$root/Examples/schema.json" "$article"; then
    echo "inventory: the article's excerpts differ from the example (update one or the other)"
    exit 1
fi

build_log="$work/build.log"
echo "==> swift build --product converge-server (the main package)"
if ! (cd "$root" && swift build --product converge-server >"$build_log" 2>&1); then
    grep -E "error:" "$build_log" || tail -40 "$build_log"
    echo "inventory: building converge-server failed"
    exit 1
fi
server="$(cd "$root" && swift build --show-bin-path)/converge-server"
echo "==> converge-server built in $((SECONDS - started)) s"
example_started=$SECONDS

echo "==> swift build --package-path Examples/Inventory (client products only)"
if ! swift build --package-path "$here" --product inventory >"$build_log" 2>&1; then
    grep -E "error:" "$build_log" || tail -40 "$build_log"
    echo "inventory: building the example failed"
    exit 1
fi
# Warnings in Swift code of this repository (the example, the client modules); SwiftPM's
# notes about dependencies' packages are not ours.
if grep -E "\.swift:[0-9]+:[0-9]+: warning:" "$build_log" | grep -v "/\.build/"; then
    echo "inventory: the example builds with warnings"
    exit 1
fi
# The example's build must compile no server stack: an app's would not.
if grep -qE "Compiling (Hummingbird|NIO|Postgres|ConvergeServer|ConvergePostgres)" "$build_log"; then
    echo "inventory: the example's build compiled the server stack"
    exit 1
fi
inventory="$(swift build --package-path "$here" --show-bin-path)/inventory"
echo "==> the example built in $((SECONDS - example_started)) s"

secret=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
"$server" --host 127.0.0.1 --port 0 --data "$work/data" --jwt-secret "$secret" \
    --schema "$root/Examples/schema.json" >"$work/server.log" 2>&1 &
server_pid=$!

# It prints its address once it listens (port 0: a free port chosen by the system).
url=
for _ in $(seq 1 200); do
    url=$(sed -n 's|^Converge server listening on \(http://[^ ]*\).*|\1|p' "$work/server.log" | head -1)
    [ -n "$url" ] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        cat "$work/server.log"
        echo "inventory: the server exited before listening"
        exit 1
    fi
    sleep 0.1
done
[ -n "$url" ] || { cat "$work/server.log"; echo "inventory: the server did not listen within 20 s"; exit 1; }
echo "==> converge-server listening on $url (data in $work/data)"

# A token per device, signed with the server's secret, for namespace "shop".
token() { "$server" --jwt-secret "$secret" --print-token "$1" 2>/dev/null; }
phone_token=$(token shop:phone)
laptop_token=$(token shop:laptop)
status=0
"$inventory" --server "$url" --phone-token "$phone_token" --laptop-token "$laptop_token" "$@" || status=$?
stop_server
if [ "$status" -ne 0 ]; then
    echo "==> the server's log:"
    tail -40 "$work/server.log"
    echo "inventory: the session failed (exit $status)"
    exit "$status"
fi
echo "==> the session passed in $((SECONDS - started)) s"
