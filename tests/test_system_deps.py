"""``scripts/system-deps.sh``: what ``make test`` installs, said in the README, and etcd only
unpacked into the venv — never installed as a package, so no etcd service is enabled or started.

``apt-get`` and ``dpkg -s`` are stand-ins here (a test must not install packages on the machine
it runs on): the stand-in ``apt-get download`` builds a real ``.deb`` with the real ``dpkg-deb``,
and the script unpacks it with the real ``dpkg-deb -x``. Every call to apt is recorded, so the
test sees that nothing is ever ``apt-get install``-ed for etcd and that a second run is a no-op.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "system-deps.sh"

pytestmark = pytest.mark.skipif(
    shutil.which("dpkg-deb") is None, reason="dpkg-deb is Debian's; the script is for Debian"
)


def _tool(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


STAND_INS = {"etcd-server": ["etcd"], "prometheus": ["prometheus", "promtool"]}
"""The packages the script unpacks, and their binaries (each a stand-in here)."""


@pytest.fixture
def fake_apt(tmp_path: Path) -> tuple[dict[str, str], Path]:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    calls = tmp_path / "apt-calls.log"
    for package, binaries in STAND_INS.items():
        pkg = tmp_path / "pkgroot" / package
        (pkg / "DEBIAN").mkdir(parents=True)
        (pkg / "usr" / "bin").mkdir(parents=True)
        (pkg / "DEBIAN" / "control").write_text(
            f"Package: {package}\nVersion: 0.0\nArchitecture: all\nMaintainer: t <t@t>\n"
            "Description: stand-in\n"
        )
        # a maintainer script that must never run: it would enable a service
        _tool(pkg / "DEBIAN" / "postinst", f"touch {tmp_path}/postinst-ran\n")
        for binary in binaries:
            _tool(pkg / "usr" / "bin" / binary, f'echo "{binary} Version: 0.0-test"\n')
    _tool(
        bin_dir / "apt-get",
        f'echo "$*" >> {calls}\n'
        'if [ "$1" = download ]; then\n'
        f'  dpkg-deb --build --root-owner-group {tmp_path}/pkgroot/"$3" "$3"_0.0_all.deb'
        " >/dev/null\n"
        "fi\n",
    )
    _tool(bin_dir / "dpkg", 'echo "Status: install ok installed"\n')  # dpkg -s: all present
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return env, calls


def test_etcd_is_unpacked_into_the_venv_never_installed(
    tmp_path: Path, fake_apt: tuple[dict[str, str], Path]
) -> None:
    env, calls = fake_apt
    venv = tmp_path / "venv"
    first = subprocess.run(
        ["sh", str(SCRIPT), str(venv)], env=env, capture_output=True, text=True, timeout=120
    )
    assert first.returncode == 0, first.stderr
    assert "(not installed)" in first.stderr
    etcd = venv / "bin" / "etcd"
    version = subprocess.run([str(etcd), "--version"], capture_output=True, text=True)
    assert version.stdout.strip() == "etcd Version: 0.0-test"
    assert etcd.resolve() == (venv / "opt" / "etcd-server" / "usr" / "bin" / "etcd").resolve()
    for binary in ("prometheus", "promtool"):
        out = subprocess.run([str(venv / "bin" / binary), "--version"], capture_output=True)
        assert out.stdout.decode().startswith(binary)
    apt = calls.read_text().splitlines()
    assert apt == ["download -qq etcd-server", "download -qq prometheus"], apt
    assert not any("install" in line for line in apt)
    assert not (tmp_path / "postinst-ran").exists()  # maintainer scripts never run

    calls.unlink()
    again = subprocess.run(
        ["sh", str(SCRIPT), str(venv)], env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0 and not calls.exists(), "a second run must touch nothing"


def test_the_readme_says_what_make_test_installs() -> None:
    listed = subprocess.run(
        ["sh", str(SCRIPT), "--list"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    system = re.search(r"apt-get install: (.*)", listed)
    local = re.search(r"never installed: (.*)", listed)
    assert system and local
    readme = " ".join((ROOT / "README.md").read_text().split())
    section = readme[readme.index("## Two commands") : readme.index("## What it looks like")]
    for package in system.group(1).split():
        assert f"`{package}`" in section, package
    assert "system-wide with `apt-get`" in section
    assert "`etcd-server`" in local.group(1).replace("etcd-server", "`etcd-server`")
    assert "`etcd-server` is not installed" in section
    assert "`prometheus`" in local.group(1).replace("prometheus", "`prometheus`")
    assert "`prometheus`" in section
    assert "installs what it needs into .venv" not in readme  # the old, untrue claim
