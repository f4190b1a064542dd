# Sourced by scripts/test.sh and scripts/demo.sh: installs the Debian
# packages given as arguments that are missing (as root), and checks that
# cargo is there.
install_missing() {
    local missing=() pkg
    for pkg in "$@"; do
        if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            echo "ok: $pkg"
        else
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]} > 0)); then
        echo "installing: ${missing[*]}"
        if [[ $(id -u) -ne 0 ]]; then
            echo "error: need root to install ${missing[*]} (run as root, or install them first)" >&2
            exit 1
        fi
        export DEBIAN_FRONTEND=noninteractive
        # Install, but start no daemon (prometheus would take 127.0.0.1:9090,
        # the server's metrics port): policy-rc.d answering 101 is Debian's
        # way to say so (invoke-rc.d(8)). Left alone if the host has one.
        local policy=/usr/sbin/policy-rc.d made_policy=0
        if [[ ! -e $policy ]]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy"
            chmod 755 "$policy"
            made_policy=1
        fi
        apt-get update
        apt-get install -y --no-install-recommends "${missing[@]}" || { ((made_policy)) && rm -f "$policy"; exit 1; }
        if ((made_policy)); then rm -f "$policy"; fi
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo is not on PATH (install Rust, e.g. with rustup)" >&2
        exit 1
    fi
}
