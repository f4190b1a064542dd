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
        apt-get update
        apt-get install -y --no-install-recommends "${missing[@]}"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo is not on PATH (install Rust, e.g. with rustup)" >&2
        exit 1
    fi
}
