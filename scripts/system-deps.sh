#!/bin/sh
# Debian packages the test suite needs: fuse3 (fusermount3, /dev/fuse setup), etcd-server (pool
# membership tests), iproute2 (network-namespace lab: ip, tc),
# libfuse3-dev and pkg-config (pyfuse3 builds against libfuse3), chromium and chromium-driver (the
# dashboard's browser tests drive a real headless Chromium), prometheus (promtool checks the metrics
# and the alert rules; a real Prometheus scrapes a worker in the tests; no service is started).
# Idempotent and quick when everything is present: `dpkg -s` first, apt only for what is missing
# (and `apt-get update` only then). Needs root (or sudo) to install anything.
set -eu

PACKAGES="fuse3 libfuse3-dev pkg-config etcd-server iproute2 chromium chromium-driver prometheus"

missing=""
for pkg in $PACKAGES; do
    if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed'; then
        missing="$missing $pkg"
    fi
done

if [ -z "$missing" ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: missing:$missing, and apt-get is not available; install them by hand" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "system-deps: missing:$missing; run as root: apt-get install -y$missing" >&2
        exit 1
    fi
fi

echo "system-deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086 # word splitting of the package list is intended
$SUDO apt-get install -y -qq --no-install-recommends $missing
