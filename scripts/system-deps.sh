#!/bin/sh
# The Debian packages `make test` needs, and exactly how each is installed (it touches the system,
# so it says so):
#
# * installed system-wide with `apt-get install` (root, or sudo), only those missing:
#     fuse3         fusermount3 and the /dev/fuse setup, for the FUSE mount tests
#     libfuse3-dev  and pkg-config: pyfuse3 builds against libfuse3
#     iproute2      ip and tc, for the network-namespace lab
#   None of these installs, enables or starts a service.
# * NOT installed: etcd-server. The tests start their own etcd on free ports; installing the
#   package would create an `etcd` system user and enable etcd.service system-wide. Instead its
#   .deb is fetched with `apt-get download` and only unpacked (dpkg-deb -x, no maintainer
#   scripts) into LOCAL_DIR/opt/etcd-server, with LOCAL_DIR/bin/etcd linked to its binary, where
#   tidepool_lab.testbed.etcd finds it (beside the venv's python).
#
# Usage: sh scripts/system-deps.sh [LOCAL_DIR]   LOCAL_DIR defaults to .venv (make passes it)
#        sh scripts/system-deps.sh --list        print the packages and how they are installed
# Idempotent and quick when everything is present: `dpkg -s` and a present LOCAL_DIR/bin/etcd
# first; `apt-get update` only when something must be fetched and apt cannot find it.
set -eu

SYSTEM_PACKAGES="fuse3 libfuse3-dev pkg-config iproute2"
LOCAL_PACKAGES="etcd-server"

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

# ---- project-local: etcd, unpacked, never installed ----------------------------------------
etcd="$LOCAL_DIR/bin/etcd"
if [ -x "$etcd" ] && "$etcd" --version >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: put an etcd binary at $etcd (apt-get is not available to fetch it)" >&2
    exit 1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
chmod 755 "$work" # apt's download sandbox user must be able to write there
fetch() { (cd "$work" && apt-get download -qq "$LOCAL_PACKAGES" 2>/dev/null); }
if ! fetch; then
    as_root "cannot fetch $LOCAL_PACKAGES (apt's package lists may be empty)" "apt-get update"
    apt_update
    fetch
fi
echo "system-deps: unpacking etcd from $(ls "$work") into $LOCAL_DIR (not installed)" >&2
rm -rf "$LOCAL_DIR/opt/etcd-server"
mkdir -p "$LOCAL_DIR/opt/etcd-server" "$LOCAL_DIR/bin"
dpkg-deb -x "$work"/etcd-server_*.deb "$LOCAL_DIR/opt/etcd-server"
ln -sf ../opt/etcd-server/usr/bin/etcd "$etcd"
"$etcd" --version >/dev/null
