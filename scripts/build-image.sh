#!/usr/bin/env bash
# Build deploy/Containerfile with podman and smoke-test the image, on a Debian 12 host as root.
#
#   scripts/build-image.sh            # build localhost/tidepool:test from the working tree
#   IMAGE=localhost/tidepool:dev CONTEXT=head scripts/build-image.sh   # from a clean `git archive HEAD`
#
# What it does, in order (each step is skipped when already done, so re-running is cheap):
#   1. apt-get installs podman, mmdebstrap and runc when missing.
#   2. Makes sure the base image named in the Containerfile's FROM lines
#      (docker.io/library/python:3.11-slim-bookworm) is in local storage. When it is absent it tries
#      `podman pull`; where registries are unreachable it builds a local stand-in instead: a Debian
#      bookworm rootfs made with mmdebstrap (python3 3.11, venv, pip, python3-dev headers,
#      ca-certificates), imported and tagged with that exact name. Differences from the official
#      image: python lives in /usr/bin (not /usr/local/bin) and the image is larger (~250 MB). The
#      host's extra CA certificates (/usr/local/share/ca-certificates/*.crt) are copied into the
#      stand-in's trust store, so pip inside the build works behind a TLS-inspecting proxy the host
#      trusts. REBUILD_BASE=1 rebuilds the stand-in; BASE_PULL=0 skips the pull attempt.
#   3. Finds `podman run` flags that work on this host: plain defaults first, then the runc runtime
#      (crun refuses hybrid cgroup v1/v2 hosts) and/or explicit ulimits (without CAP_SYS_RESOURCE
#      podman's default nofile/nproc limits cannot be set). The same flags go to `podman build`.
#   4. podman build --pull=never --network=host -f deploy/Containerfile -t "$IMAGE" and prints the
#      build's wall time and the image size. The Containerfile is used as it is.
#   5. Smoke tests, each must succeed and print what is expected: tidepool --help (and the default
#      CMD), operator --help, mount --help, render -f of tests/spec/fixtures/seed-demo.yaml,
#      python -m tidepool.operator.reporter --help, imports of pyfuse3/kopf/aiohttp/trio/uvloop,
#      operator --help and render as uid 65532 on a read-only root (as the chart runs it), a worker
#      (`tidepool up`, local:// origin, 127.0.0.1 on a free port) read through `ls`/`cat` from a
#      second container and stopped with SIGTERM through tini, and, when /dev/fuse exists, a real
#      read-only FUSE mount in a privileged container (SMOKE_FUSE=0 skips it).
#
# Needs root, network access to the Debian mirror and PyPI. Temporary files live in one mktemp
# directory that is removed on exit; the base and the built image stay in podman's storage
# (`podman rmi "$IMAGE"`, `podman image prune` reclaim the space). Not part of `make test` or CI.
# Exits non-zero on the first failure.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
CONTAINERFILE=deploy/Containerfile
IMAGE=${IMAGE:-localhost/tidepool:test}
CONTEXT=${CONTEXT:-worktree}     # worktree | head
SMOKE_FUSE=${SMOKE_FUSE:-auto}   # auto | 0 | 1
BASE=$(awk 'toupper($1) == "FROM" { print $2; exit }' "$CONTAINERFILE")
unset AWS_CA_BUNDLE

say() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'build-image: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (podman storage, mmdebstrap, apt-get)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tidepool-image.XXXXXX")
WORKER=""
REPORTER=""
cleanup() {
    if [ -n "$WORKER" ]; then podman rm -f -t 0 "$WORKER" >/dev/null 2>&1 || true; fi
    if [ -n "$REPORTER" ]; then podman rm -f -t 0 "$REPORTER" >/dev/null 2>&1 || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT

# ---------------------------------------------------------------- 1. host packages
need=""
for pkg in podman mmdebstrap runc; do
    [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || need="$need $pkg"
done
if [ -n "$need" ]; then
    say "apt-get install$need"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    apt-get install -y -q $need || { apt-get update -q && apt-get install -y -q $need; }
fi

# ---------------------------------------------------------------- 2. base image
build_standin() {
    say "building a local stand-in for $BASE with mmdebstrap"
    local hooks=()
    local extra_cas=(/usr/local/share/ca-certificates/*.crt)
    if [ -e "${extra_cas[0]}" ]; then
        # shellcheck disable=SC2016 # "$1" is the hook's argument (the rootfs), expanded by mmdebstrap
        hooks+=(--customize-hook="copy-in ${extra_cas[*]} /usr/local/share/ca-certificates/"
                --customize-hook='chroot "$1" update-ca-certificates')
    fi
    # shellcheck disable=SC2016 # as above
    mmdebstrap --variant=apt \
        --include=python3,python3-venv,python-is-python3,python3-pip,python3-dev,ca-certificates \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        "${hooks[@]}" \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
        bookworm "$TMP/rootfs.tar" \
        "deb http://deb.debian.org/debian bookworm main" \
        "deb http://deb.debian.org/debian bookworm-updates main" \
        "deb http://deb.debian.org/debian-security bookworm-security main" \
        >"$TMP/mmdebstrap.log" 2>&1 || { tail -30 "$TMP/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
    podman rmi -f "$BASE" >/dev/null 2>&1 || true
    podman import --quiet \
        --change 'ENV LANG=C.UTF-8' \
        --change 'LABEL io.tidepool.standin=mmdebstrap-bookworm' \
        --change 'CMD ["python3"]' \
        "$TMP/rootfs.tar" "$BASE" >/dev/null
    rm -f "$TMP/rootfs.tar"
}

if [ "${REBUILD_BASE:-0}" = 1 ]; then
    build_standin
elif podman image exists "$BASE"; then
    say "base image $BASE is present ($(podman image inspect -f '{{.Id}}' "$BASE" | cut -c1-12))"
elif [ "${BASE_PULL:-1}" = 1 ] && timeout 90 podman pull --quiet "$BASE" >/dev/null 2>&1; then
    say "pulled $BASE"
else
    build_standin
fi

# ---------------------------------------------------------------- 3. podman flags for this host
nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
pid_max=$(cat /proc/sys/kernel/pid_max)
[ "$nproc" = unlimited ] && nproc=$pid_max
[ "$nproc" -gt "$pid_max" ] && nproc=$pid_max
[ "$nofile" = unlimited ] && nofile=1048576
ULIMITS="--ulimit nofile=$nofile:$nofile --ulimit nproc=$nproc:$nproc"
FLAGS=""
found=""
for candidate in "" "--runtime runc" "$ULIMITS" "--runtime runc $ULIMITS"; do
    # shellcheck disable=SC2086 # flags are words
    if podman run --rm --network=host $candidate "$BASE" python -c 'import venv' >"$TMP/probe.log" 2>&1; then
        FLAGS=$candidate
        found=1
        break
    fi
done
[ -n "$found" ] || { cat "$TMP/probe.log" >&2; die "no podman run configuration works on this host"; }
say "podman flags for this host: ${FLAGS:-(defaults)}"

# ---------------------------------------------------------------- 4. build
case "$CONTEXT" in
    worktree) CTX=$REPO ;;
    head)
        CTX=$TMP/context
        mkdir -p "$CTX"
        git archive HEAD | tar -x -C "$CTX"
        ;;
    *) die "CONTEXT must be worktree or head" ;;
esac
say "podman build -f $CONTAINERFILE -t $IMAGE ($CONTEXT at $(git rev-parse --short HEAD))"
start=$(date +%s)
# shellcheck disable=SC2086
podman build --pull=never --network=host $FLAGS -f "$REPO/$CONTAINERFILE" -t "$IMAGE" "$CTX" \
    >"$TMP/build.log" 2>&1 || { tail -40 "$TMP/build.log" >&2; die "podman build failed"; }
elapsed=$(( $(date +%s) - start ))
grep -E '^\[[0-9]+/[0-9]+\] STEP|^Successfully' "$TMP/build.log" >&2 || true
say "built $IMAGE in ${elapsed}s; size $(podman image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
podman images --filter reference="$IMAGE" --filter reference="$BASE" >&2

# ---------------------------------------------------------------- 5. smoke tests
# shellcheck disable=SC2206
RUN=(podman run --rm --network=host $FLAGS)

# smoke NAME PATTERN ARGS...: run "${RUN[@]}" ARGS, show the first lines, need exit 0 and PATTERN
smoke() {
    local name=$1 pattern=$2
    shift 2
    say "smoke: $name"
    if ! "${RUN[@]}" "$@" >"$TMP/out" 2>&1; then
        tail -20 "$TMP/out" >&2
        die "smoke test '$name' exited non-zero"
    fi
    head -8 "$TMP/out" >&2
    grep -qE -- "$pattern" "$TMP/out" || die "smoke test '$name': output lacks /$pattern/"
}

FIXTURE=$REPO/tests/spec/fixtures/seed-demo.yaml
SECRETS=(-e TIDEPOOL_SECRET_MYSECRET_FS_OSS_ACCESSKEYID=x -e TIDEPOOL_SECRET_MYSECRET_FS_OSS_ACCESSKEYSECRET=y)

smoke "tidepool --help" '^usage: tidepool ' "$IMAGE" --help
smoke "default CMD" '^usage: tidepool ' "$IMAGE"
smoke "tidepool operator --help" '^usage: tidepool operator' "$IMAGE" operator --help
smoke "tidepool mount --help" '^usage: tidepool mount' "$IMAGE" mount --help
smoke "tidepool render -f seed-demo.yaml" '^kind: StatefulSet' \
    -v "$FIXTURE:/spec/seed-demo.yaml:ro" "${SECRETS[@]}" "$IMAGE" render -f /spec/seed-demo.yaml
grep -E '^kind: ' "$TMP/out" | sort | uniq -c >&2
smoke "python -m tidepool.operator.reporter --help" '^usage: python -m tidepool.operator.reporter' \
    --entrypoint python "$IMAGE" -m tidepool.operator.reporter --help
smoke "imports" '^imports ok' --entrypoint python "$IMAGE" -c \
    'import pyfuse3, kopf, aiohttp, trio, uvloop, s3fs; print("imports ok: pyfuse3", pyfuse3.__version__, "kopf", kopf.__version__, "aiohttp", aiohttp.__version__)'
smoke "operator --help as uid 65532, read-only root" '^usage: tidepool operator' \
    --user 65532:65532 --read-only --tmpfs /tmp "$IMAGE" operator --help
smoke "render as uid 65532, read-only root" '^kind: DaemonSet' \
    --user 65532:65532 --read-only --tmpfs /tmp -v "$FIXTURE:/spec/seed-demo.yaml:ro" "${SECRETS[@]}" \
    "$IMAGE" render -f /spec/seed-demo.yaml

# a worker on loopback serving a local:// origin, read from a second container
mkdir -p "$TMP/smoke/data"
echo "hello from the origin" >"$TMP/smoke/data/hello.txt"
cat >"$TMP/smoke/spec.yaml" <<'EOF'
apiVersion: tidepool.io/v1alpha1
kind: Dataset
metadata:
  name: smoke
spec:
  mounts:
    - mountPoint: local:///data
      name: d
EOF
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo 18433)
ENDPOINT=http://127.0.0.1:$port
WORKER=tidepool-smoke-worker-$$
say "smoke: worker (tidepool up) on $ENDPOINT"
# shellcheck disable=SC2086
podman run -d --name "$WORKER" --network=host $FLAGS \
    -v "$TMP/smoke:/smoke:ro" -v "$TMP/smoke/data:/data:ro" \
    "$IMAGE" up -f /smoke/spec.yaml --host 127.0.0.1 --port "$port" \
    --cache-dir /tmp/cache --state-dir /tmp/state >/dev/null
healthy=""
for _ in $(seq 60); do
    if "${RUN[@]}" --entrypoint python "$IMAGE" -c \
        "import urllib.request; print(urllib.request.urlopen('$ENDPOINT/healthz', timeout=2).read().decode())" \
        >"$TMP/out" 2>/dev/null; then
        healthy=1
        break
    fi
    sleep 1
done
[ -n "$healthy" ] || { podman logs "$WORKER" >&2; die "worker never answered /healthz"; }
cat "$TMP/out" >&2
smoke "tidepool ls (worker)" '^smoke/d/' "$IMAGE" ls --endpoint "$ENDPOINT" smoke/
smoke "tidepool cat (worker)" '^hello from the origin$' "$IMAGE" cat --endpoint "$ENDPOINT" smoke/d/hello.txt

if [ "$SMOKE_FUSE" = 1 ] || { [ "$SMOKE_FUSE" = auto ] && [ -e /dev/fuse ]; }; then
    smoke "FUSE mount (privileged, /dev/fuse)" '^hello from the origin$' \
        --privileged --device /dev/fuse --entrypoint sh "$IMAGE" -c "
            set -e
            mkdir -p /mnt/x
            tidepool mount smoke /mnt/x --endpoint $ENDPOINT --foreground &
            for i in \$(seq 20); do grep -q ' /mnt/x ' /proc/mounts && break; sleep 0.5; done
            grep ' /mnt/x ' /proc/mounts
            cat /mnt/x/d/hello.txt
            fusermount3 -u /mnt/x
            wait"
else
    say "smoke: FUSE mount skipped (no /dev/fuse or SMOKE_FUSE=0)"
fi

say "smoke: worker stops on SIGTERM (tini -> tidepool)"
t0=$(date +%s)
podman stop -t 20 "$WORKER" >/dev/null
code=$(podman inspect -f '{{.State.ExitCode}}' "$WORKER")
podman logs "$WORKER" 2>&1 | tail -3 >&2
echo "exit code $code after $(( $(date +%s) - t0 ))s" >&2
podman rm "$WORKER" >/dev/null
WORKER=""
[ "$code" = 0 ] || die "worker exited $code on SIGTERM"

say "smoke: reporter sidecar stops on SIGTERM as PID 1 (its command bypasses tini, as rendered)"
REPORTER=tidepool-smoke-reporter-$$
podman run -d --name "$REPORTER" --network=host $FLAGS \
    -e TIDEPOOL_KUBE_SERVER=http://127.0.0.1:9 --entrypoint python "$IMAGE" \
    -m tidepool.operator.reporter --dataset smoke --endpoint http://127.0.0.1:9 --interval 1 >/dev/null
sleep 2
t0=$(date +%s)
podman stop -t 20 "$REPORTER" >/dev/null
code=$(podman inspect -f '{{.State.ExitCode}}' "$REPORTER")
echo "exit code $code after $(( $(date +%s) - t0 ))s" >&2
podman rm "$REPORTER" >/dev/null
REPORTER=""
[ "$code" = 0 ] || die "reporter exited $code on SIGTERM (137: it ignored SIGTERM as PID 1)"

say "all smoke tests passed: $IMAGE (built in ${elapsed}s)"
