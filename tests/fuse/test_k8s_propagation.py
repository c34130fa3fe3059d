"""The operator's fuse DaemonSet and PersistentVolume, run the way a kubelet would run them.

No kubelet runs here, so this does its part with the same kernel mechanisms: the fuse container is
the rendered command in a mount namespace of its own, whose ``mount-root`` hostPath is a shared
mount (``mountPropagation: Bidirectional``); the inference Pod is another mount namespace that
bind-mounts the PersistentVolume's hostPath at its ``/data``. What the Pod reads there must be the
origin's bytes: this checks that the rendered paths line up and that the FUSE mount made inside the
fuse container propagates to the host and into the Pod.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tidepool.operator.render import RenderOptions, render_dataset
from tidepool.spec.loader import load_text

from .conftest import fuse_mounted

pytestmark = pytest.mark.integration

SEED = Path(__file__).parents[1] / "spec" / "fixtures" / "seed-demo.yaml"
POOL = "np763275de88194dabbb34b86ffaa2615e"
ENV = {
    "TIDEPOOL_SECRET_MYSECRET_FS_OSS_ACCESSKEYID": "x",
    "TIDEPOOL_SECRET_MYSECRET_FS_OSS_ACCESSKEYSECRET": "y",
}


def _kind(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == kind)


@pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces and shared mounts need root")
def test_fuse_daemonset_mount_reaches_the_inference_pod(
    make_dataset: Any, start_worker: Any, tmp_path: Path
) -> None:
    files = {f"train/{c}/{i:03d}.jpg": os.urandom(20_000 + i) for c in "ab" for i in range(5)}
    worker = start_worker([make_dataset(files, name="images")], nodepool=POOL)

    dataset = load_text(SEED.read_text(), environ=ENV).dataset_models["images"]
    objs = render_dataset(dataset, None, RenderOptions(mount_root=str(tmp_path / "mnt")))
    fuse, pv = _kind(objs, "DaemonSet"), _kind(objs, "PersistentVolume")
    pod = fuse["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (root_mount,) = [m for m in container["volumeMounts"] if m["name"] == "mount-root"]
    assert root_mount["mountPropagation"] == "Bidirectional"
    (root_volume,) = [v for v in pod["volumes"] if v["name"] == "mount-root"]
    host_root = Path(root_volume["hostPath"]["path"])
    assert root_mount["mountPath"] == str(host_root)  # the same path inside and outside
    pv_path = Path(pv["spec"]["hostPath"]["path"])

    args = list(container["args"])
    at = next(i for i, a in enumerate(args) if a.startswith("--endpoint="))
    args[at] = f"--endpoint={worker.endpoint}"  # the Service, as resolved in the pool
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEPOOL_")}
    env.update({"TIDEPOOL_NODEPOOL": POOL, "NODE_NAME": "edge-1"})

    host_root.mkdir(parents=True)
    # the kubelet's precondition for Bidirectional: the hostPath is a shared mount on the host
    subprocess.run(["mount", "--bind", str(host_root), str(host_root)], check=True)
    proc = None
    log = tmp_path / "fuse.log"
    try:
        subprocess.run(["mount", "--make-rshared", str(host_root)], check=True)
        with log.open("wb") as out:
            # the fuse container: a mount namespace of its own, host_root still a shared peer
            container_ns = ["unshare", "--mount", "--propagation", "unchanged", "--"]
            proc = subprocess.Popen(
                [*container_ns, sys.executable, "-m", "tidepool.cli", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while not fuse_mounted(pv_path):  # seen from the host's own mount namespace
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"mount never reached the host:\n{log.read_text()}"
            time.sleep(0.05)

        # the inference Pod: the kubelet bind-mounts the PV's hostPath at /data
        data = tmp_path / "pod-data"
        data.mkdir()
        script = f'mount --bind "{pv_path}" "{data}" && cd "{data}" && find . -type f | sort'
        script += " | xargs sha256sum"
        seen = subprocess.run(
            ["unshare", "--mount", "--", "sh", "-c", script],
            check=True,
            capture_output=True,
            timeout=60,
        )
        got = {
            line.split(maxsplit=1)[1].removeprefix("./"): line.split()[0]
            for line in seen.stdout.decode().splitlines()
        }
        want = {name: hashlib.sha256(data_).hexdigest() for name, data_ in files.items()}
        assert got == want
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if fuse_mounted(pv_path):
            subprocess.run(["fusermount3", "-uz", str(pv_path)], check=False, timeout=30)
        subprocess.run(["umount", "-l", str(host_root)], check=False, timeout=30)
    assert proc.returncode == 0, log.read_text()  # SIGTERM unmounts cleanly
    assert not fuse_mounted(pv_path)
