"""The aws CLI (awscli from PyPI) against the gateway: ls, cp to stdout, ranged get-object."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ACCESS_KEY, ODD_KEYS, SECRET_KEY, Stack

pytestmark = pytest.mark.integration

AWS = Path(sys.executable).parent / "aws"


@pytest.fixture(scope="module")
def aws(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> object:
    exe = str(AWS) if AWS.exists() else shutil.which("aws")
    if exe is None:
        pytest.skip("the aws CLI is not installed: pip install awscli")
    home = tmp_path_factory.mktemp("awshome")
    config = home / "config"
    config.write_text(
        "[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n"
        "request_checksum_calculation = when_required\n"
        "response_checksum_validation = when_required\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_CONFIG_FILE=str(config),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )

    def run(
        *args: str, check: bool = True, secret: str = SECRET_KEY
    ) -> subprocess.CompletedProcess[bytes]:
        cmd = [exe, "--endpoint-url", stack.url, *args]
        child_env = {**env, "AWS_SECRET_ACCESS_KEY": secret}
        done = subprocess.run(cmd, env=child_env, capture_output=True, timeout=120, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"{args} failed: {done.stderr.decode(errors='replace')}")
        return done

    return run


def test_ls(stack: Stack, aws: object) -> None:
    out = aws("s3", "ls").stdout.decode()  # type: ignore[operator]
    assert [line.split()[-1] for line in out.splitlines()] == ["ds", "offline"]
    out = aws("s3", "ls", "s3://ds/").stdout.decode()  # type: ignore[operator]
    assert "PRE many/" in out and "small.txt" in out
    out = aws("s3", "ls", "--recursive", "s3://ds/many/").stdout.decode()  # type: ignore[operator]
    listed = sorted(line.split(maxsplit=3)[3] for line in out.splitlines())
    assert listed == stack.origin_keys("many/")


@pytest.mark.parametrize("key", ["small.txt", "big/five.bin", ODD_KEYS[0], ODD_KEYS[1]])
def test_cp_to_stdout(stack: Stack, aws: object, key: str) -> None:
    out = aws("s3", "cp", f"s3://ds/{key}", "-").stdout  # type: ignore[operator]
    assert out == stack.origin_bytes(key)


def test_get_object_range(stack: Stack, aws: object, tmp_path: Path) -> None:
    target = tmp_path / "part"
    aws(  # type: ignore[operator]
        "s3api", "get-object", "--bucket", "ds", "--key", "big/five.bin",
        "--range", "bytes=1000-2999999", str(target),
    )  # fmt: skip
    assert target.read_bytes() == stack.origin_bytes("big/five.bin")[1000:3000000]


def test_wrong_secret_and_missing_key(stack: Stack, aws: object) -> None:
    done = aws("s3", "ls", "s3://ds/", check=False, secret="wrong-secret")  # type: ignore[operator]
    assert done.returncode != 0 and b"SignatureDoesNotMatch" in done.stderr
    done = aws("s3api", "head-object", "--bucket", "ds", "--key", "nope", check=False)  # type: ignore[operator]
    assert done.returncode != 0 and b"404" in done.stderr
