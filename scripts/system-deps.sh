#!/bin/sh
# The Debian packages `make test` needs, and exactly how each is installed (it touches the system,
# so it says so):
#
# * installed system-wide with `apt-get install` (root, or sudo), only those missing:
#     fuse3            fusermount3 and the /dev/fuse setup, for the FUSE mount tests
#     libfuse3-dev     and pkg-config: pyfuse3 builds against libfuse3
#     iproute2         ip and tc, for the network-namespace lab
#     chromium         and chromium-driver: the dashboard's tests drive a real headless browser
#   None of these installs, enables or starts a service.
# * NOT installed: etcd-server and prometheus. The tests start their own etcd and Prometheus on
#   free ports; installing the packages would create system users and enable services
#   system-wide. Instead each .deb is fetched with `apt-get download` and only unpacked
#   (dpkg-deb -x, no maintainer scripts) into LOCAL_DIR/opt/<package>, with LOCAL_DIR/bin/etcd,
#   prometheus and promtool linked to their binaries, where the tests find them (beside the
#   venv's python).
#
# Usage: sh scripts/system-deps.sh [LOCAL_DIR]   LOCAL_DIR defaults to .venv (make passes it)
#        sh scripts/system-deps.sh --list        print the packages and how they are installed
# Idempotent and quick when everything is present: `dpkg -s` and present LOCAL_DIR/bin links
# first; `apt-get update` only when something must be fetched and apt cannot find it.
set -eu

SYSTEM_PACKAGES="fuse3 libfuse3-dev pkg-config iproute2 chromium chromium-driver"
LOCAL_PACKAGES="etcd-server prometheus"

if [ "${1:-}" = "--list" ]; then
    echo "system-wide, with apt-get install: $SYSTEM_PACKAGES"
    echo "unpacked into the venv, never installed: $LOCAL_PACKAGES"
    exit 0
fi
LOCAL_DIR="${1:-.venv}"

SUDO=""
as_root() {
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            SUDO="sudo"
        else
            echo "system-deps: $1; run as root: $2" >&2
            exit 1
        fi
    fi
}

updated=""
apt_update() {
    if [ -z "$updated" ]; then
        $SUDO apt-get update -qq
        updated=1
    fi
}

# ---- system-wide: only what is missing ------------------------------------------------------
missing=""
for pkg in $SYSTEM_PACKAGES; do
    if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed'; then
        missing="$missing $pkg"
    fi
done
if [ -n "$missing" ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "system-deps: missing:$missing, and apt-get is not available; install them by hand" >&2
        exit 1
    fi
    as_root "missing:$missing" "apt-get install -y$missing"
    echo "system-deps: installing system-wide with apt-get:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt_update
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

# ---- project-local: etcd and prometheus, unpacked, never installed ------------------------
# unpack PACKAGE BINARY...: fetch PACKAGE's .deb and link LOCAL_DIR/bin/BINARY to each binary
unpack() {
    package="$1"
    shift
    present=1
    for binary in "$@"; do
        if ! [ -x "$LOCAL_DIR/bin/$binary" ] || ! "$LOCAL_DIR/bin/$binary" --version >/dev/null 2>&1; then
            present=""
        fi
    done
    if [ -n "$present" ]; then
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "system-deps: put $* into $LOCAL_DIR/bin (apt-get is not available to fetch $package)" >&2
        exit 1
    fi
    work="$(mktemp -d)"
    chmod 755 "$work" # apt's download sandbox user must be able to write there
    if ! (cd "$work" && apt-get download -qq "$package" 2>/dev/null); then
        as_root "cannot fetch $package (apt's package lists may be empty)" "apt-get update"
        apt_update
        (cd "$work" && apt-get download -qq "$package")
    fi
    echo "system-deps: unpacking $(ls "$work") into $LOCAL_DIR (not installed)" >&2
    rm -rf "${LOCAL_DIR:?}/opt/$package"
    mkdir -p "$LOCAL_DIR/opt/$package" "$LOCAL_DIR/bin"
    dpkg-deb -x "$work"/"${package}"_*.deb "$LOCAL_DIR/opt/$package"
    rm -rf "$work"
    for binary in "$@"; do
        ln -sf "../opt/$package/usr/bin/$binary" "$LOCAL_DIR/bin/$binary"
        "$LOCAL_DIR/bin/$binary" --version >/dev/null
    done
}

unpack etcd-server etcd
unpack prometheus prometheus promtool
