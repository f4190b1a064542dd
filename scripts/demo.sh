#!/usr/bin/env bash
# The main job: `wgmesh demo`, the seed mesh live in network namespaces.
# Installs what it needs on Debian (as root), builds, and runs the demo;
# arguments go to `wgmesh demo` (e.g. --check).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/deps.sh
source scripts/deps.sh
install_missing nftables iproute2 iputils-ping procps
cargo build --release --locked -p wgmesh
exec target/release/wgmesh demo "$@"
