#!/usr/bin/env bash
# The engine benchmark: wgmesh, wireguard-go and boringtun-cli, side by side,
# on the same two-namespace topology, in the same run. Run by hand as root
# (not in CI):
#
#   sudo bench/engines.sh            # all three engines
#   ENGINES="wgmesh wireguard-go" sudo -E bench/engines.sh
#
# For each engine it prints: single-stream and 4-stream TCP (Gbit/s, iperf3,
# 10 s), UDP loss at saturation (iperf3 -u at 10 Gbit/s offered), ping RTT
# (median of 200), CPU seconds per GB moved (both engine processes, over the
# 4-stream run), the engine's RSS after the runs, and its RSS with 1,000
# peers configured, and the CPU it burns idle (5 s with no traffic, both
# processes, % of one core). Also the raw veth as the ceiling.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ENGINES=${ENGINES:-"wgmesh wireguard-go boringtun"}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
WORK=$(mktemp -d /tmp/wgmesh-bench.XXXXXX)
A=wgb-a-$$
B=wgb-b-$$
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
    rm -rf "$WORK"
}
# Only the main shell cleans up (subshells of $(…) and <(…) run EXIT traps too).
trap '[[ $BASHPID == "$$" ]] && cleanup' EXIT

need() { command -v "$1" >/dev/null || { echo "bench: needs $1" >&2; exit 1; }; }
need iperf3; need wg; need wireguard-go; need python3

cargo build --release -q -p wgmesh
WGMESH=$PWD/target/release/wgmesh
if [[ " $ENGINES " == *" boringtun "* ]]; then
    if [[ ! -x $PWD/target/bench-tools/bin/boringtun-cli ]]; then
        echo "installing boringtun-cli into target/bench-tools (once)" >&2
        cargo install -q --locked boringtun-cli --root "$PWD/target/bench-tools"
    fi
    BORINGTUN=$PWD/target/bench-tools/bin/boringtun-cli
fi

# Two hosts joined by one veth: 192.0.2.1 and 192.0.2.2 underneath, the
# tunnel on 10.99.0.1 and 10.99.0.2.
ip netns add "$A"
ip netns add "$B"
ip -n "$A" link add eth0 type veth peer name eth0 netns "$B"
ip -n "$A" addr add 192.0.2.1/24 dev eth0
ip -n "$B" addr add 192.0.2.2/24 dev eth0
for ns in "$A" "$B"; do
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
done

in_a() { ip netns exec "$A" "$@"; }
in_b() { ip netns exec "$B" "$@"; }

KEY_A=$("$WGMESH" genkey); KEY_B=$("$WGMESH" genkey)
PUB_A=$(echo "$KEY_A" | "$WGMESH" pubkey); PUB_B=$(echo "$KEY_B" | "$WGMESH" pubkey)

conf() { # SELF_KEY PEER_PUB PEER_ADDR SELF_ADDR
    cat <<EOF
[Interface]
PrivateKey = $1
ListenPort = 51820
Address = $4/24
MTU = 1420

[Peer]
PublicKey = $2
AllowedIPs = ${4%.*}.0/24
Endpoint = $3:51820
EOF
}
conf "$KEY_A" "$PUB_B" 192.0.2.2 10.99.0.1 > "$WORK/a.conf"
conf "$KEY_B" "$PUB_A" 192.0.2.1 10.99.0.2 > "$WORK/b.conf"
chmod 600 "$WORK"/*.conf

# Starts ENGINE for side (a|b) with interface IFACE; echoes the engine PID.
start_engine() {
    local engine=$1 side=$2 iface=$3 ns
    ns=$([[ $side == a ]] && echo "$A" || echo "$B")
    case $engine in
        wgmesh)
            ip netns exec "$ns" "$WGMESH" wg up "$WORK/$side.conf" --name "$iface" --foreground \
                >"$WORK/$iface.log" 2>&1 &
            echo $!
            ;;
        wireguard-go|boringtun)
            if [[ $engine == wireguard-go ]]; then
                ip netns exec "$ns" wireguard-go -f "$iface" >"$WORK/$iface.log" 2>&1 &
            else
                WG_SUDO=1 ip netns exec "$ns" "$BORINGTUN" -f --disable-drop-privileges "$iface" \
                    >"$WORK/$iface.log" 2>&1 &
            fi
            local pid=$!
            for _ in $(seq 100); do
                ip netns exec "$ns" wg show "$iface" >/dev/null 2>&1 && break
                sleep 0.05
            done
            "$WGMESH" conf strip "$WORK/$side.conf" >"$WORK/$side.stripped"
            ip netns exec "$ns" wg setconf "$iface" "$WORK/$side.stripped"
            local addr
            addr=$([[ $side == a ]] && echo 10.99.0.1 || echo 10.99.0.2)
            ip -n "$ns" addr add "$addr/24" dev "$iface"
            ip -n "$ns" link set mtu 1420 up dev "$iface"
            echo $pid
            ;;
    esac
}

wait_ping() {
    for _ in $(seq 200); do
        in_a ping -c 1 -W 1 -q 10.99.0.2 >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "bench: no ping through the tunnel" >&2
    return 1
}

cpu_ticks() { # PID...: utime+stime in clock ticks
    local total=0
    for pid in "$@"; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo $total
}

rss_mib() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# Starts a one-off iperf3 server in B on PORT and waits until it listens.
iperf_server() {
    in_b iperf3 -s -1 -p "$1" >/dev/null 2>&1 &
    local srv=$!
    for _ in $(seq 200); do
        in_b ss -Hltn "sport = :$1" | grep -q . && break
        sleep 0.02
    done
    echo $srv
}

iperf_tcp() { # PARALLEL TARGET -> Gbit/s and bytes
    local srv
    srv=$(iperf_server 5201)
    in_a iperf3 -c "$2" -p 5201 -P "$1" -t "$SECONDS_PER_RUN" -J >"$WORK/iperf.json"
    while kill -0 "$srv" 2>/dev/null; do sleep 0.05; done
    python3 - "$WORK/iperf.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["end"]["sum_received"]
print(f'{r["bits_per_second"] / 1e9:.2f} {int(r["bytes"])}')
PY
}

udp_loss() { # TARGET -> loss %
    local srv
    srv=$(iperf_server 5202)
    in_a iperf3 -c "$1" -p 5202 -u -b 10G -l 1340 -t 5 -J >"$WORK/udp.json" || true
    while kill -0 "$srv" 2>/dev/null; do sleep 0.05; done
    python3 - "$WORK/udp.json" <<'PY'
import json, sys
try:
    e = json.load(open(sys.argv[1]))["end"]
    s = e.get("sum_received") or e["sum"]
    print(f'{s.get("lost_percent", 0):.1f}% of {s["bits_per_second"] / 1e9:.2f} Gbit/s')
except Exception as err:
    print(f"n/a ({err})")
PY
}

rtt_ms() { # TARGET -> median RTT
    in_a ping -c 200 -i 0.01 -q "$1" >/dev/null 2>&1 || true
    in_a ping -c 200 -i 0.01 "$1" | python3 -c '
import re, statistics, sys
t = [float(m) for m in re.findall(r"time=([0-9.]+)", sys.stdin.read())]
print(f"{statistics.median(t):.3f}" if t else "n/a")'
}

add_1000_peers() { # NS IFACE
    python3 - >"$WORK/peers.conf" <<'PY'
import base64, os
for i in range(1000):
    key = base64.b64encode(os.urandom(32)).decode()
    print(f"[Peer]\nPublicKey = {key}\nAllowedIPs = 10.{100 + i // 250}.{i % 250}.1/32\n")
PY
    ip netns exec "$1" wg addconf "$2" "$WORK/peers.conf"
}

printf '%-13s %9s %9s %22s %9s %10s %9s %14s %9s\n' engine "TCP x1" "TCP x4" "UDP loss @10G" "RTT ms" "CPU s/GB" "RSS MiB" "RSS 1k peers" "idle CPU"

# The ceiling: the raw veth, no tunnel.
read -r raw1 _ < <(iperf_tcp 1 192.0.2.2)
read -r raw4 _ < <(iperf_tcp 4 192.0.2.2)
printf '%-13s %9s %9s %22s %9s %10s %9s %14s %9s\n' "raw veth" "$raw1" "$raw4" "-" "$(rtt_ms 192.0.2.2)" - - - -

n=0
for engine in $ENGINES; do
    n=$((n + 1))
    ia=wgb${n}a$$; ib=wgb${n}b$$
    ia=${ia:0:15}; ib=${ib:0:15}
    pa=$(start_engine "$engine" a "$ia"); PIDS+=("$pa")
    pb=$(start_engine "$engine" b "$ib"); PIDS+=("$pb")
    wait_ping
    hz=$(getconf CLK_TCK)
    idle_before=$(cpu_ticks "$pa" "$pb")
    sleep 5
    idle=$(python3 -c "print(f'{($(cpu_ticks "$pa" "$pb") - $idle_before) / $hz / 5 * 100:.1f}%')")
    read -r g1 _ < <(iperf_tcp 1 10.99.0.2)
    before=$(cpu_ticks "$pa" "$pb")
    read -r g4 bytes4 < <(iperf_tcp 4 10.99.0.2)
    after=$(cpu_ticks "$pa" "$pb")
    cpu_per_gb=$(python3 -c "print(f'{($after - $before) / $hz / ($bytes4 / 1e9):.2f}')")
    loss=$(udp_loss 10.99.0.2)
    rtt=$(rtt_ms 10.99.0.2)
    rss=$(rss_mib "$pa")
    ns_a=$A
    add_1000_peers "$ns_a" "$ia"
    rss1k=$(rss_mib "$pa")
    printf '%-13s %9s %9s %22s %9s %10s %9s %14s %9s\n' "$engine" "$g1" "$g4" "$loss" "$rtt" "$cpu_per_gb" "$rss" "$rss1k" "$idle"
    kill "$pa" "$pb" 2>/dev/null || true
    wait "$pa" "$pb" 2>/dev/null || true
    ip -n "$A" link del "$ia" 2>/dev/null || true
    ip -n "$B" link del "$ib" 2>/dev/null || true
done
echo "(TCP in Gbit/s, iperf3 ${SECONDS_PER_RUN} s; $(nproc) cores; $(uname -r))"
