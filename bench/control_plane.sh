#!/usr/bin/env bash
# The control-plane benchmark (issue 5): N light clients (no data plane)
# enrol with one coordination server and hold their map streams open; then
# the admin changes the policy and every client records when its map
# reflects it. Run by hand (not in CI), as root (for the fd limit), on
# SQLite and then on PostgreSQL:
#
#   bench/control_plane.sh                      # 10,000 agents, both backends
#   NODES=2000 BACKENDS=sqlite bench/control_plane.sh
#
# Settings (environment): NODES (10000), GROUP_SIZE (25), CONCURRENCY (64),
# BACKENDS ("sqlite postgres"), PGSOCK (/var/run/postgresql), TIMEOUT (s,
# 900), WGMESH_BIN (a wgmesh binary to run as the server instead of this
# tree's, e.g. an older commit's, to compare). The load generator is crates/wgmesh-agent/examples/control_load.rs
# (see its header for the policy and the change); it samples the server's
# /proc/PID/{status,stat} at the phase boundaries. One table at the end.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
NODES=${NODES:-10000}
GROUP_SIZE=${GROUP_SIZE:-25}
CONCURRENCY=${CONCURRENCY:-64}
BACKENDS=${BACKENDS:-"sqlite postgres"}
PGSOCK=${PGSOCK:-/var/run/postgresql}
TIMEOUT=${TIMEOUT:-900}
WORK=$(mktemp -d /tmp/wgmesh-cpbench.XXXXXX)
PGDB=wgmesh_bench_$$
SERVER_PID=
PG_CREATED=

cleanup() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n $PG_CREATED ]]; then
        psql -q -h "$PGSOCK" -d postgres -c "DROP DATABASE IF EXISTS $PGDB" >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
# Only the main shell cleans up (subshells of $(…) run EXIT traps too).
trap '[[ $BASHPID == "$$" ]] && cleanup' EXIT

# The load generator holds one socket per client, the server one per
# client too: each needs NODES fds plus slack. Raise the soft limit as far
# as the hard one goes (and the hard one too where we may).
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
if (( $(ulimit -n) < NODES + 1000 )); then
    echo "bench: the fd limit $(ulimit -n) is below NODES + 1000 = $((NODES + 1000))" >&2
    exit 1
fi

# Two commands: with `--example`, cargo builds only the named targets.
cargo build --release -q -p wgmesh --bin wgmesh
cargo build --release -q -p wgmesh-agent --example control_load
WGMESH=${WGMESH_BIN:-$PWD/target/release/wgmesh}
LOAD=$PWD/target/release/examples/control_load
CLK_TCK=$(getconf CLK_TCK)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

declare -A RESULTS
run_backend() {
    local backend=$1 url
    case $backend in
        sqlite) url="sqlite://$WORK/bench.db" ;;
        postgres)
            psql -q -h "$PGSOCK" -d postgres -c "CREATE DATABASE $PGDB" >/dev/null
            PG_CREATED=1
            url="postgres://root@localhost/$PGDB?host=$PGSOCK"
            ;;
        *) echo "bench: unknown backend $backend" >&2; exit 1 ;;
    esac
    local token port
    token=$("$WGMESH" server init --database "$url" | tail -n 1)
    port=$(free_port)
    "$WGMESH" server --listen "127.0.0.1:$port" --database "$url" --insecure-http \
        --stun-listen off >"$WORK/server-$backend.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null || {
        echo "bench: the server did not come up:" >&2; cat "$WORK/server-$backend.log" >&2; exit 1; }
    echo "== $backend: $NODES agents (server pid $SERVER_PID)" >&2
    local line
    line=$("$LOAD" --server "http://127.0.0.1:$port" --admin-token "$token" \
        --nodes "$NODES" --group-size "$GROUP_SIZE" --concurrency "$CONCURRENCY" \
        --server-pid "$SERVER_PID" --clk-tck "$CLK_TCK" --timeout "$TIMEOUT" | grep '^RESULT ')
    echo "$line" >&2
    RESULTS[$backend]=$line
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
    if [[ $backend == postgres ]]; then
        psql -q -h "$PGSOCK" -d postgres -c "DROP DATABASE $PGDB" >/dev/null
        PG_CREATED=
    fi
}

for b in $BACKENDS; do run_backend "$b"; done

field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" ${RESULTS[$1]}"; }
printf '\n%-9s %6s %9s %8s %10s %7s %7s %7s %7s %7s %9s %9s %9s %8s %7s %6s\n' \
    backend nodes enrol/s enrol_s connected put_ms p50_ms p99_ms max_ms all_ms \
    RSS_MiB HWM_MiB cpu_enrol cpu_chg errors load1
for b in $BACKENDS; do
    printf '%-9s %6s %9s %8s %10s %7s %7s %7s %7s %7s %9s %9s %9s %8s %7s %6s\n' "$b" \
        "$(field "$b" nodes)" "$(field "$b" enrol_per_s)" "$(field "$b" enrol_s)" \
        "$(field "$b" connected_s)" "$(field "$b" put_ms)" "$(field "$b" p50_ms)" \
        "$(field "$b" p99_ms)" "$(field "$b" max_ms)" "$(field "$b" all_ms)" \
        "$(field "$b" rss_after_mib)" "$(field "$b" hwm_mib)" "$(field "$b" cpu_enrol_s)" \
        "$(field "$b" cpu_change_s)" "$(field "$b" errors)" "$(field "$b" load1)"
done
echo "(groups of $GROUP_SIZE, default deny, one allow rule per group; change: a tcp/22 deny per group;" \
    "times from just before the PUT; RSS after the change, HWM = peak; CPU in server seconds;" \
    "load1 = load average when the change was made;" \
    "$(nproc) cores, $(uname -r))"
