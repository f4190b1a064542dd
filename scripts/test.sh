#!/usr/bin/env bash
# The project's test command: installs what the tests need (Debian, as root),
# then runs rustfmt, clippy and the whole test suite, and then checks that
# the tests left nothing behind (crates/wgmesh/tests/zz_no_leaks.rs).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

section() {
    printf '\n==== %s ====\n' "$*"
}

# Debian packages the tests need (the lab tests drive wireguard-go and wg in
# network namespaces).
# PostgreSQL: the server's tests run on SQLite and on a local PostgreSQL.
PACKAGES=(wireguard-go wireguard-tools nftables iptables conntrack iproute2 iputils-ping procps iperf3 postgresql openssl curl)
# The durability tests: an ext4 on a loop device forced read-only (mkfs.ext4, e2fsck, losetup).
PACKAGES+=(e2fsprogs mount)

# Python for the API test tools (Schemathesis, openapi-spec-validator), in a
# venv of their own (section "API test tools" below).
PACKAGES+=(python3 python3-venv)

# Third-party checkers (wgmesh_lab::third_party): promtool (package
# prometheus) checks every role's metrics; stun (package stun-client) is
# an RFC 3489 STUN client, run against the server's and the relay's STUN.
PACKAGES+=(prometheus stun-client)

section "Dependencies"
# shellcheck source=scripts/deps.sh
source scripts/deps.sh
install_missing "${PACKAGES[@]}"
cargo --version
cargo fmt --version

# boringtun-cli: the other userspace WireGuard that wg-quick drives through
# WG_QUICK_USERSPACE_IMPLEMENTATION. crates/wgmesh/tests/engine_lifecycle.rs
# runs the same wg-quick scenario on it as on wgmesh-go, as the bar. From
# crates.io, pinned, built once (about a minute on 2 cores).
BORINGTUN_VERSION=0.7.1
if ! boringtun-cli --version 2>/dev/null | grep -qx "boringtun $BORINGTUN_VERSION"; then
    echo "installing boringtun-cli $BORINGTUN_VERSION"
    cargo install --locked --version "$BORINGTUN_VERSION" boringtun-cli --root /usr/local
fi
boringtun-cli --version
cargo clippy --version

section "PostgreSQL"
# A local cluster (Debian's postgresql-common makes one on install), started
# without systemd, and a superuser role for root, which the tests connect as
# over the Unix socket (peer authentication). Each test creates and drops
# its own database.
if ! pg_lsclusters -h | awk '$4 == "online"' | grep -q .; then
    read -r pg_version pg_cluster _ < <(pg_lsclusters -h | head -n1) || true
    if [[ -z ${pg_version:-} ]]; then
        pg_version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
        pg_cluster=main
        pg_createcluster "$pg_version" "$pg_cluster"
    fi
    pg_ctlcluster "$pg_version" "$pg_cluster" start
fi
pg_lsclusters
for _ in $(seq 1 50); do
    pg_isready -q -h /var/run/postgresql && break
    sleep 0.2
done
su postgres -c 'psql -q -v ON_ERROR_STOP=1 -h /var/run/postgresql' <<'SQL'
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'root') THEN
        CREATE ROLE root SUPERUSER LOGIN;
    END IF;
END $$;
SQL
export WGMESH_TEST_POSTGRES="postgres://root@localhost/postgres?host=/var/run/postgresql"
echo "WGMESH_TEST_POSTGRES=$WGMESH_TEST_POSTGRES"

section "API test tools"
# Pinned in tests/api/requirements.txt; the tests find them through
# WGMESH_API_VENV and fail (never skip) without them.
api_venv="$PWD/target/venv-api"
if [[ ! -x $api_venv/bin/pip ]]; then
    python3 -m venv "$api_venv"
fi
if ! cmp -s tests/api/requirements.txt "$api_venv/requirements.txt"; then
    "$api_venv/bin/pip" install --quiet --disable-pip-version-check -r tests/api/requirements.txt
    cp tests/api/requirements.txt "$api_venv/requirements.txt"
fi
"$api_venv/bin/schemathesis" --version
"$api_venv/bin/openapi-spec-validator" --version
export WGMESH_API_VENV="$api_venv"

section "Existing lab namespaces"
stale=$(ip netns list | awk '{print $1}' | grep -E '^wg[ml]-' || true)
if [[ -n $stale ]]; then
    echo "warning: already present before the tests (left by an earlier run?):"
    echo "$stale"
else
    echo "none"
fi

section "cargo fmt --all -- --check"
cargo fmt --all -- --check

section "cargo clippy --workspace --all-targets --locked -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

section "cargo test --workspace --locked"
status=0
cargo test --workspace --locked || status=$?

section "Nothing left behind (namespaces, TAPs, sockets, processes)"
cargo test --locked -p wgmesh --test zz_no_leaks -- --ignored || status=$?

section "Result"
if ((status == 0)); then
    echo "all checks passed"
else
    echo "FAILED (exit status $status)" >&2
fi
exit "$status"
